"""Timer: follow documents Inqom has not finished and archive the originals of those it has.

Schedule from the ``POLL_SCHEDULE`` app setting (NCRONTAB, default every 5 minutes).
``use_monitor`` keeps schedule state in storage so a missed tick is noticed; there is no
``run_on_startup`` because in production every scale-out instance start would fire a tick.
"""

import logging

import azure.functions as func

from shared.archive.poll import poll_tick
from shared.observability import log_context
from shared.services import get_services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("poll_documents")
@bp.timer_trigger(arg_name="timer", schedule="%POLL_SCHEDULE%", use_monitor=True, run_on_startup=False)
def poll_documents(timer: func.TimerRequest, context: func.Context) -> None:
    with log_context(invocation_id=context.invocation_id):
        if timer.past_due:
            log.warning("poll tick is running late (past due)")
        report = poll_tick(get_services())
        log.log(logging.INFO if report.examined else logging.DEBUG, "poll tick: %s", report)
