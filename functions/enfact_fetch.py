"""Queue: fetch one pushed enFact invoice and put its PDF in the inbox (then the upload path runs).

Failures raise so the queue retries the message (host.json ``maxDequeueCount``), after which the
host moves it to ``<ENFACT_QUEUE>-poison``; invoices enFact does not know are recorded, not retried.
"""

import azure.functions as func

from shared.config import STORAGE_CONNECTION
from shared.enfact.fetch import fetch_invoice
from shared.observability import log_context
from shared.services import get_services

bp = func.Blueprint()


@bp.function_name("enfact_fetch")
@bp.queue_trigger(arg_name="msg", queue_name="%ENFACT_QUEUE%", connection=STORAGE_CONNECTION)
def enfact_fetch(msg: func.QueueMessage, context: func.Context) -> None:
    with log_context(invocation_id=context.invocation_id):
        fetch_invoice(get_services(), msg.get_json(), delivery_id=msg.id)
