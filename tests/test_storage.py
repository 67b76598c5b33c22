"""Azurite harness and the storage building blocks (blob range reader, ledger ETags, blob moves)."""

import hashlib
import os
from datetime import timedelta

import pytest
from azure.core.exceptions import ResourceModifiedError

from shared.blobmove import move_blob
from shared.ledger.rows import ARCHIVED, UPLOADED, UPLOADING, Ledger, LedgerConflict
from shared.storage import BlobRangeReader


def test_azurite_blob_round_trip_with_metadata(services):
    container = services.stores.container(services.settings.inbox_container)
    container.upload_blob("1/other/a.pdf", b"%PDF-1.4 hello", metadata={"docref": "R-1"})
    blob = container.get_blob_client("1/other/a.pdf")
    assert blob.download_blob().readall() == b"%PDF-1.4 hello"
    assert blob.get_blob_properties().metadata == {"docref": "R-1"}


def test_table_etag_refuses_a_stale_writer(services):
    ledger = services.ledger
    first = ledger.insert("11287", "k1", {"State": UPLOADING})
    winner = ledger.update(first, State=UPLOADED, InqomId=5)
    with pytest.raises(LedgerConflict):
        ledger.update(first, State=ARCHIVED)  # first.etag is stale now
    assert ledger.get("11287", "k1").get("State") == UPLOADED
    assert ledger.update(winner, State=ARCHIVED).state == ARCHIVED


def test_claim_is_exclusive_until_it_expires(services):
    ledger = services.ledger
    claimed = ledger.claim_upload("7", "k2", {"BlobPath": "7/other/a.pdf"}, claim_seconds=60)
    assert claimed is not None and claimed.get("Attempts") == 1
    assert ledger.claim_upload("7", "k2", {}, claim_seconds=60) is None
    later = Ledger(ledger.table, clock=lambda: ledger.clock() + timedelta(seconds=61))
    taken_over = later.claim_upload("7", "k2", {}, claim_seconds=60)
    assert taken_over is not None and taken_over.get("Attempts") == 2
    later.update(taken_over, State=UPLOADED)
    assert later.claim_upload("7", "k2", {}, claim_seconds=60) is None


def test_pending_index_follows_the_row(services):
    ledger = services.ledger
    now = ledger.clock()
    a = ledger.insert("1", "a", {"State": UPLOADED, "NextPollAt": now - timedelta(minutes=5)})
    ledger.insert("1", "b", {"State": UPLOADED, "NextPollAt": now + timedelta(minutes=5)})
    ledger.insert("2", "c", {"State": UPLOADED, "NextPollAt": now - timedelta(minutes=1)})
    assert [item.key for item in ledger.due(now, 10)] == ["a", "c"]
    ledger.update(a, NextPollAt=now + timedelta(hours=1))
    assert [item.key for item in ledger.due(now, 10)] == ["c"]
    assert [item.key for item in ledger.due(now + timedelta(hours=2), 10)] == ["c", "b", "a"]
    assert [item.key for item in ledger.due(now + timedelta(hours=2), 2)] == ["c", "b"]


def test_range_reader_streams_a_pinned_version(services):
    container = services.stores.container(services.settings.inbox_container)
    data = os.urandom(3 * 1024 * 1024 + 17)
    container.upload_blob("1/other/big.pdf", data)
    blob = container.get_blob_client("1/other/big.pdf")
    props = blob.get_blob_properties()
    reader = BlobRangeReader(blob, props.size, props.etag, chunk=1024 * 1024)
    pieces = []
    while chunk := reader.read(8192 * 7):
        pieces.append(chunk)
    assert b"".join(pieces) == data
    assert reader.sha1.hexdigest() == hashlib.sha1(data).hexdigest()

    replaced = BlobRangeReader(blob, props.size, props.etag, chunk=1024 * 1024)
    replaced.read(10)
    container.upload_blob("1/other/big.pdf", b"other content", overwrite=True)
    with pytest.raises(ResourceModifiedError):
        replaced.read(2 * 1024 * 1024)


def test_move_keeps_bytes_and_adds_reason(services):
    settings = services.settings
    inbox = services.stores.container(settings.inbox_container)
    inbox.upload_blob("3/supplier/été.pdf", b"abc", metadata={"docref": "X"})
    move_blob(services.stores, settings.inbox_container, "3/supplier/été.pdf", settings.quarantine_container,
              owner="k1", extra_metadata={"reason": "file type '.pdf' refusé"})
    moved = services.stores.container(settings.quarantine_container).get_blob_client("3/supplier/été.pdf")
    assert moved.download_blob().readall() == b"abc"
    meta = moved.get_blob_properties().metadata
    assert meta["docref"] == "X" and "refus%C3%A9" in meta["reason"]
    assert not inbox.get_blob_client("3/supplier/été.pdf").exists()
