"""Timer (daily by default): export every ledger row to today's create-only backup blob.

Schedule from the ``LEDGER_BACKUP_SCHEDULE`` app setting (NCRONTAB, default 03:15 UTC); the blob goes
to ``LEDGER_BACKUP_CONTAINER``. A second run the same day leaves the day's blob as it is.
"""

import logging

import azure.functions as func

from shared.ledger.backup import export_ledger
from shared.observability import log_context
from shared.services import get_services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("backup_ledger")
@bp.timer_trigger(arg_name="timer", schedule="%LEDGER_BACKUP_SCHEDULE%", use_monitor=True, run_on_startup=False)
def backup_ledger(timer: func.TimerRequest, context: func.Context) -> None:
    with log_context(invocation_id=context.invocation_id):
        services = get_services()
        report = export_ledger(services.stores.table(services.settings.ledger_table),
                               services.stores.container(services.settings.ledger_backup_container))
        log.info("ledger backup: %s", report)
