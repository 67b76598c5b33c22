"""Moving a blob between containers without ever losing or overwriting one: copy, verify, then delete the source.

    dest = move_blob(stores, "inbox", "11287/supplier/a.pdf", "quarantine", owner=ledger_key,
                     extra_metadata={"reason": "..."})

The copy is server-side (same account) and create-only (``If-None-Match: *``): nothing already in
the destination is ever replaced. Its name is the source's (or ``dest_name``), or, when another
document holds that name, ``stem~<owner>.ext`` — unique per document. The copy carries ``owner``
in its metadata (``moveid``), so a move repeated after a crash recognises its own copy instead of
making a second one, even when the source is already gone. The source is deleted only if it still
has the ETag it had when the copy started, so a file re-dropped meanwhile stays for its own trigger.
Blob metadata is ASCII-only: free text is stored percent-encoded (``metadata_text``).
"""

from __future__ import annotations

import time
from typing import Iterable
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from shared.storage import StorageClients

_SAFE = " !#$&'()*+,-./:;=?@[]^_`{|}~"
_MAX_METADATA_VALUE = 2000
_COPY_TIMEOUT = 300.0
MOVE_ID = "moveid"
DROPPED = "droppedmetadata"
METADATA_LIMIT = 8 * 1024  # all names and values of one blob's metadata


def metadata_text(text: str) -> str:
    return quote(text, safe=_SAFE)[:_MAX_METADATA_VALUE]


def within_metadata_limit(theirs: dict[str, str], ours: dict[str, str]) -> dict[str, str]:
    """``ours`` and as much of ``theirs`` (e.g. the source blob's metadata) as fits the service's 8 KiB (names
    and values): the largest values of ``theirs`` go first, and ``droppedmetadata`` names them."""
    def size(items: dict[str, str]) -> int:
        return sum(len(k.encode()) + len(v.encode()) for k, v in items.items())

    kept = dict(theirs)
    dropped: list[str] = []
    while kept and size(kept) + size(ours) + len(DROPPED) + sum(len(d) + 1 for d in dropped) > METADATA_LIMIT:
        largest = max(kept, key=lambda k: len(k) + len(kept[k]))
        dropped.append(largest)
        del kept[largest]
    if dropped:
        kept[DROPPED] = ",".join(dropped)
    return {**kept, **ours}


class BlobMoveError(RuntimeError):
    pass


class BlobReplaced(BlobMoveError):
    """The blob is no longer the version the caller meant: it was left where it is."""


class BlobGone(BlobMoveError):
    """The source is gone and no copy of this move exists: someone else removed it."""


def candidate_names(name: str, owner: str) -> tuple[str, str]:
    """The destination name, then the one unique to ``owner`` (used when the first is taken)."""
    stem, dot, extension = name.rpartition(".")
    tag = owner[:16]
    return name, (f"{stem}~{tag}.{extension}" if dot and "/" not in extension else f"{name}~{tag}")


def _copy_of(dest: BlobClient, owner: str) -> bool | None:
    """True: this move's copy is there; False: another blob holds the name; None: the name is free."""
    try:
        props = dest.get_blob_properties()
    except ResourceNotFoundError:
        return None
    return props.metadata.get(MOVE_ID) == owner and (props.copy.status in (None, "success"))


def _wait_for_copy(dest: BlobClient, copy: dict, blob_name: str, dest_container: str) -> None:
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


def find_moved(stores: StorageClients, dest_container: str, name: str, owner: str) -> str | None:
    """The name this move's copy has in ``dest_container``, if it was made."""
    for candidate in candidate_names(name, owner):
        if _copy_of(stores.container(dest_container).get_blob_client(candidate), owner):
            return candidate
    return None


def move_blob(stores: StorageClients, source_container: str, blob_name: str, dest_container: str, *,
              owner: str, dest_name: str | None = None, extra_metadata: dict[str, str] | None = None,
              drop_metadata: Iterable[str] = (), expected_etag: str | None = None) -> str:
    """Copy ``blob_name`` to ``dest_container`` (create-only) and delete the source; returns the name it got.

    With ``expected_etag`` only that version is moved (``BlobReplaced`` otherwise). The copy is
    created with its final metadata (the source's, minus ``drop_metadata``, plus ``extra_metadata``
    and ``moveid=owner``): a BlobCreated event may start work on it at once. A source already gone
    whose copy exists (a crash after the copy) returns that copy's name; ``BlobGone`` otherwise.
    """
    wanted = dest_name or blob_name
    source = stores.container(source_container).get_blob_client(blob_name)
    try:
        props = source.get_blob_properties()
    except ResourceNotFoundError:
        moved = find_moved(stores, dest_container, wanted, owner)
        if moved is None:
            raise BlobGone(f"{source_container}/{blob_name} is gone and was not moved by this document") from None
        return moved
    if expected_etag is not None and props.etag.strip('"') != expected_etag.strip('"'):
        raise BlobReplaced(f"{source_container}/{blob_name} was replaced by a newer version; left in place")
    dropped = {name.lower() for name in drop_metadata}
    metadata = {k: v for k, v in props.metadata.items() if k.lower() not in dropped and k.lower() != MOVE_ID}
    ours = {k: metadata_text(v) for k, v in (extra_metadata or {}).items()}
    ours[MOVE_ID] = owner
    metadata = within_metadata_limit({k: v for k, v in metadata.items() if k not in ours}, ours)
    chosen = None
    for candidate in candidate_names(wanted, owner):
        dest = stores.container(dest_container).get_blob_client(candidate)
        state = _copy_of(dest, owner)
        if state is None:
            try:  # same-account copy: the service authorises the source with this request's own credential
                copy = dest.start_copy_from_url(source.url, metadata=metadata, source_etag=props.etag,
                                                source_match_condition=MatchConditions.IfNotModified,
                                                if_none_match="*")
            except ResourceExistsError:
                state = _copy_of(dest, owner)  # taken between our look and our copy
            else:
                _wait_for_copy(dest, copy, blob_name, dest_container)
                state = True
        if state:
            chosen = dest
            break
    if chosen is None:
        raise BlobMoveError(f"{dest_container} already holds other blobs at {wanted!r} and its unique name")
    if chosen.get_blob_properties().size != props.size:
        raise BlobMoveError(f"copy of {blob_name} to {dest_container} has the wrong size")
    try:
        source.delete_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        pass  # replaced meanwhile (the new version has its own trigger), or deleted by a concurrent move
    return chosen.blob_name
