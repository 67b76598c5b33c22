"""HTTP: enFact pushes a new invoice; verified, validated and queued, answered in milliseconds.

Function-key auth (``AuthLevel.FUNCTION``) on top of the Standard Webhooks signature; the
contract is in the README ("enFact push contract").
"""

import json

import azure.functions as func

from shared.enfact.push import accept_push
from shared.observability import log_context
from shared.services import get_services

bp = func.Blueprint()


@bp.function_name("enfact_webhook")
@bp.route(route="enfact/invoices", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def enfact_webhook(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with log_context(invocation_id=context.invocation_id):
        result = accept_push(get_services(), req.headers, req.get_body())
    return func.HttpResponse(json.dumps(result.body), status_code=result.status, mimetype="application/json")
