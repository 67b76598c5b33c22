"""Timer (daily by default): queue recent enFact invoices that never arrived by push."""

import logging

import azure.functions as func

from shared.enfact.fetch import reconcile
from shared.observability import log_context
from shared.services import get_services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("enfact_reconcile")
@bp.timer_trigger(arg_name="timer", schedule="%ENFACT_RECONCILE_SCHEDULE%", use_monitor=True, run_on_startup=False)
def enfact_reconcile(timer: func.TimerRequest, context: func.Context) -> None:
    with log_context(invocation_id=context.invocation_id):
        queued = reconcile(get_services())
        log.info("enFact reconcile queued %d missed invoice(s)", queued)
