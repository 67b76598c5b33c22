"""Moving a blob between containers without ever losing it: copy, verify, then delete the source.

    dest = move_blob(stores, "inbox", "11287/supplier/a.pdf", "quarantine", extra_metadata={"reason": "..."})

The copy is server-side (same account). The source is deleted only if it still has the ETag it
had when the copy started, so a file re-dropped meanwhile stays in the inbox for its own trigger.
Blob metadata is ASCII-only: free text is stored percent-encoded (``metadata_text``).
"""

from __future__ import annotations

import time
from typing import Iterable
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from .storage import StorageClients

_SAFE = " !#$&'()*+,-./:;=?@[]^_`{|}~"
_MAX_METADATA_VALUE = 2000
_COPY_TIMEOUT = 300.0


def metadata_text(text: str) -> str:
    return quote(text, safe=_SAFE)[:_MAX_METADATA_VALUE]


class BlobMoveError(RuntimeError):
    pass


def move_blob(stores: StorageClients, source_container: str, blob_name: str, dest_container: str,
              dest_name: str | None = None, extra_metadata: dict[str, str] | None = None,
              drop_metadata: Iterable[str] = ()) -> str:
    """Copy ``blob_name`` to ``dest_container`` (same name unless ``dest_name``) and delete the source.

    The copy is created with its final metadata (the source's, minus ``drop_metadata``, plus
    ``extra_metadata``): a BlobCreated event may start work on it at once.
    """
    dest_name = dest_name or blob_name
    source = stores.container(source_container).get_blob_client(blob_name)
    props = source.get_blob_properties()
    dropped = {name.lower() for name in drop_metadata}
    metadata = {k: v for k, v in props.metadata.items() if k.lower() not in dropped}
    metadata.update({k: metadata_text(v) for k, v in (extra_metadata or {}).items()})
    dest = stores.container(dest_container).get_blob_client(dest_name)
    # Same-account copy: the service authorises the source with this request's own credential.
    copy = dest.start_copy_from_url(source.url, metadata=metadata, source_etag=props.etag,
                                    source_match_condition=MatchConditions.IfNotModified)
    deadline = time.monotonic() + _COPY_TIMEOUT
    status = copy.get("copy_status")
    while status == "pending":
        if time.monotonic() > deadline:
            dest.abort_copy(copy["copy_id"])
            raise BlobMoveError(f"copy of {blob_name} to {dest_container} did not finish in {_COPY_TIMEOUT:.0f}s")
        time.sleep(0.5)
        status = dest.get_blob_properties().copy.status
    if status != "success":
        raise BlobMoveError(f"copy of {blob_name} to {dest_container} ended {status}")
    if dest.get_blob_properties().size != props.size:
        raise BlobMoveError(f"copy of {blob_name} to {dest_container} has the wrong size")
    try:
        source.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        pass  # replaced meanwhile: the new version is a new document with its own trigger
    except ResourceNotFoundError:
        pass
    return dest_name

