"""Blob trigger: a file dropped into the inbox container is sent to Inqom.

Flex Consumption supports only the Event Grid source for blob triggers: Storage raises
BlobCreated, an Event Grid subscription (infra/) delivers it to the blob extension webhook.
The SDK-type binding hands over a ``BlobClient``, so the file streams from storage to Inqom.
"""

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared.config import STORAGE_CONNECTION
from shared.observability import log_context
from shared.services import get_services
from shared.drop.upload import upload_inbox_blob

bp = func.Blueprint()


@bp.function_name("upload_document")
@bp.blob_trigger(arg_name="client", path="%INBOX_CONTAINER%/{name}", connection=STORAGE_CONNECTION,
                 source=func.BlobSource.EVENT_GRID)
def upload_document(client: blob.BlobClient, context: func.Context) -> None:
    with log_context(invocation_id=context.invocation_id):
        upload_inbox_blob(get_services(), client)
