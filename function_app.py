"""Azure Functions entry point (Python v2 programming model): registers one blueprint per trigger."""

import azure.functions as func

from functions.backup_ledger import bp as backup_ledger_bp
from functions.enfact_fetch import bp as enfact_fetch_bp
from functions.enfact_reconcile import bp as enfact_reconcile_bp
from functions.enfact_webhook import bp as enfact_webhook_bp
from functions.poll import bp as poll_bp
from functions.upload import bp as upload_bp
from shared.observability import configure_telemetry, install_filter
from shared.services import get_services

get_services().validate()  # every setting and the secret source, at start-up: a missing one names itself
if not configure_telemetry():  # OpenTelemetry → Application Insights only when its connection string is set
    install_filter()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (upload_bp, poll_bp, enfact_webhook_bp, enfact_fetch_bp, enfact_reconcile_bp,
                  backup_ledger_bp):
    app.register_functions(blueprint)
