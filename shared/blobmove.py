"""Moving a blob between containers without ever losing it: copy, verify, then delete the source.

    dest = move_blob(stores, "inbox", "11287/supplier/a.pdf", "quarantine", extra_metadata={"reason": "..."})

The copy is server-side (same account) and never overwrites: a name already taken gets the
version's ETag appended. The source is deleted only if it still has the ETag it had when the copy
started, so a file re-dropped meanwhile stays in the inbox for its own trigger.
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


class BlobReplaced(BlobMoveError):
    """The blob is no longer the version the caller meant: it was left where it is."""


def _free_name(stores: StorageClients, container: str, name: str, etag: str, metadata: dict[str, str]) -> str:
    """``name``, or ``stem~<etag>.ext`` when another file already has that name (never overwrite).

    A blob there with exactly the metadata this move writes is this same move, done by a
    concurrent delivery: its name is reused.
    """
    try:
        existing = stores.container(container).get_blob_client(name).get_blob_properties()
    except ResourceNotFoundError:
        return name
    if existing.metadata == metadata:
        return name
    stem, dot, extension = name.rpartition(".")
    tag = etag.strip('"')[-10:]
    return f"{stem}~{tag}.{extension}" if dot and "/" not in extension else f"{name}~{tag}"


def move_blob(stores: StorageClients, source_container: str, blob_name: str, dest_container: str,
              dest_name: str | None = None, extra_metadata: dict[str, str] | None = None,
              drop_metadata: Iterable[str] = (), expected_etag: str | None = None) -> str:
    """Copy ``blob_name`` to ``dest_container`` and delete the source; returns the name it got there.

    The destination name is ``dest_name`` (default: the same name) unless a file already has it,
    then ``name~<etag>.ext``: nothing is overwritten. With ``expected_etag`` only that version is
    moved (``BlobReplaced`` otherwise). The copy is created with its final metadata (the source's,
    minus ``drop_metadata``, plus ``extra_metadata``): a BlobCreated event may start work on it at once.
    """
    source = stores.container(source_container).get_blob_client(blob_name)
    props = source.get_blob_properties()
    if expected_etag is not None and props.etag.strip('"') != expected_etag.strip('"'):
        raise BlobReplaced(f"{source_container}/{blob_name} was replaced by a newer version; left in place")
    dropped = {name.lower() for name in drop_metadata}
    metadata = {k: v for k, v in props.metadata.items() if k.lower() not in dropped}
    metadata.update({k: metadata_text(v) for k, v in (extra_metadata or {}).items()})
    dest_name = _free_name(stores, dest_container, dest_name or blob_name, props.etag, metadata)
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

