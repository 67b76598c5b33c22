"""Azure Functions entry point (Python v2 programming model): registers one blueprint per trigger."""

import azure.functions as func

from functions.poll import bp as poll_bp
from functions.upload import bp as upload_bp
from shared.config import get_settings

get_settings()  # validate every setting at start-up: a missing one names itself in the host log

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(upload_bp)
app.register_functions(poll_bp)
