"""Operator CLI (``python -m inqom_bridge_cli``) against Azurite and the Inqom emulator.

The documents are driven through the real functions (``host``); the CLI is called in-process
through ``main(argv)`` and reads the same environment (``app_env``) as the app.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from inqom_bridge_cli import main
from shared.config import load_settings
from shared.ledger.rows import ARCHIVED, QUARANTINED, UPLOADED, parse_iso
from shared.services import Services
from tests.support.documents import drop, where_is, later

PDF = b"%PDF-1.4\n% cli test\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
REPO_ROOT = Path(__file__).resolve().parents[1]


def upload(services, host, name, data=PDF, metadata=None):
    drop(services, name, data, metadata)
    host.deliver_blob("upload_document", name)
    rows = [e for e in services.ledger.scan("BlobPath eq @p", p=name)]
    return sorted(rows, key=lambda e: e.get("CreatedAt"))[-1]


def rows_of(services, name):
    return sorted(services.ledger.scan("BlobPath eq @p", p=name), key=lambda e: e.get("CreatedAt"))


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- status


def test_status_counts_oldest_pending_and_recent_errors(services, host, inqom, capsys):
    first = upload(services, host, "11287/supplier/oldest.pdf", PDF + b"1")
    later(services, seconds=30)
    upload(services, host, "11287/client/newer.pdf", PDF + b"2")
    done = upload(services, host, "11287/other/done.pdf", PDF + b"3")
    upload(services, host, "abc/supplier/bad.pdf", PDF + b"4")
    inqom.set_status(done.get("InqomId"), "Done")
    later(services, seconds=61)
    host.fire_timer("poll_documents")  # oldest/newer → Processing, done → archived

    code, out, err = cli(capsys, "status", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["total"] == 4
    assert data["states"] == {UPLOADED: 2, ARCHIVED: 1, QUARANTINED: 1}
    assert data["kinds"] == {"supplier": 1, "client": 1, "other": 1, "unknown": 1}
    assert data["pending"] == 2
    oldest = data["oldest_pending"]
    assert oldest["blob_path"] == "11287/supplier/oldest.pdf" and oldest["inqom_id"] == first.get("InqomId")
    assert oldest["state"] == UPLOADED and oldest["inqom_status"] == "Processing"
    assert 91 <= oldest["age_seconds"] < 120
    (error,) = data["recent_errors"]
    assert error["blob_path"] == "abc/supplier/bad.pdf" and "not a positive integer" in error["last_error"]

    code, out, _ = cli(capsys, "status")
    assert code == 0
    assert "4 document(s), 2 pending" in out
    assert "Oldest pending: 11287/supplier/oldest.pdf" in out and "Inqom status Processing" in out
    assert f"age {oldest['age']}" in out and oldest["age"].startswith("1m 3")
    assert "abc/supplier/bad.pdf" in out and "not a positive integer" in out


def test_status_of_an_empty_ledger(services, capsys):
    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["total"], data["states"], data["oldest_pending"], data["recent_errors"]) == (0, {}, None, [])


# --------------------------------------------------------------------------- show


def test_show_by_path_inqom_id_enfact_id_and_not_found(services, host, inqom, capsys):
    name = "11287/supplier/Facture été.pdf"
    row = upload(services, host, name)
    inqom_id = row.get("InqomId")

    code, by_path, err = cli(capsys, "show", name)
    assert code == 0, err
    for expected in (name, row.key, "State", UPLOADED, str(inqom_id), row.get("Sha1"), "Attempts", "NextPollAt"):
        assert expected in by_path
    # Readable order: identity, then state and times, Inqom, checksums, paths, errors.
    assert by_path.index("BlobPath") < by_path.index("State") < by_path.index("InqomId") < by_path.index("Sha1")

    code, by_id, _ = cli(capsys, "show", str(inqom_id))
    assert code == 0 and by_id == by_path

    upload(services, host, "11287/client/enfact-5001.pdf", PDF + b"enfact",
           {"source": "enfact", "enfactid": "5001"})
    code, out, _ = cli(capsys, "show", "5001", "--json")
    assert code == 0
    (document,) = json.loads(out)["documents"]
    assert document["BlobPath"] == "11287/client/enfact-5001.pdf"
    assert document["Source"] == "enfact" and document["EnfactId"] == "5001" and document["State"] == UPLOADED

    code, out, err = cli(capsys, "show", "11287/supplier/nothing.pdf")
    assert code == 1 and out == ""
    assert "no ledger row" in err and "11287/supplier/nothing.pdf" in err
    assert cli(capsys, "show", "999999")[0] == 1


# --------------------------------------------------------------------------- quarantine


def test_quarantine_list_shows_the_reason_and_ledger_state(services, host, capsys):
    upload(services, host, "12/supplier/virus.exe")
    upload(services, host, "12/expense/nobody.pdf")
    code, out, err = cli(capsys, "quarantine", "list")
    assert code == 0, err
    assert "12/supplier/virus.exe" in out and "file type '.exe' is not accepted" in out
    assert "12/expense/nobody.pdf" in out and "no beneficiary" in out
    assert "%20" not in out and QUARANTINED in out

    code, out, _ = cli(capsys, "quarantine", "list", "--json", "--prefix", "12/supplier/")
    (item,) = json.loads(out)
    assert item["path"] == "12/supplier/virus.exe" and item["ledger_state"] == QUARANTINED
    assert item["reason"].startswith("file type '.exe' is not accepted")
    assert item["ledger_key"] == rows_of(services, "12/supplier/virus.exe")[0].key


def test_replay_after_a_fixed_routing_error_ends_archived(services, host, inqom, capsys):
    bad, good = "abc/supplier/x.pdf", "11287/supplier/x.pdf"
    quarantined = upload(services, host, bad)
    assert quarantined.state == QUARANTINED

    code, _, err = cli(capsys, "replay", bad)  # same path: would be quarantined again
    assert code == 1 and "--to" in err and "not a positive integer" in err
    assert cli(capsys, "replay", "abc/supplier/missing.pdf", "--to", good)[0] == 1

    code, out, err = cli(capsys, "replay", bad, "--to", good)
    assert code == 0, err
    assert f"-> {services.settings.inbox_container}/{good}" in out
    assert "Event Grid" in out and "local runner" in out
    assert where_is(services) == {"inbox": {good}, "archive": set(), "quarantine": set()}
    inbox_blob = services.stores.container(services.settings.inbox_container).get_blob_client(good)
    metadata = inbox_blob.get_blob_properties().metadata
    assert "reason" not in metadata and "ledgerkey" not in metadata
    replayed = services.ledger.get(quarantined.partition, quarantined.key)
    assert replayed.state == "Replayed" and replayed.get("ReplayCount") == 1
    assert replayed.get("StateBeforeReplay") == QUARANTINED and replayed.get("LastError") == ""
    assert parse_iso(replayed.get("ReplayedAt")) is not None and replayed.next_poll is None

    host.deliver_blob("upload_document", good)
    for _ in range(6):
        later(services, seconds=3601)
        host.fire_timer("poll_documents")
        (row,) = rows_of(services, good)
        if row.state == ARCHIVED:
            break
    assert row.state == ARCHIVED and row.key != quarantined.key
    places = where_is(services)
    assert places["inbox"] == set() and places["quarantine"] == set() and len(places["archive"]) == 1
    assert services.ledger.get(quarantined.partition, quarantined.key).state == "Replayed"

    code, out, _ = cli(capsys, "show", good, "--json")  # the history: the replayed row and the new one
    assert [r["State"] for r in json.loads(out)["documents"]] == ["Replayed", ARCHIVED]
    assert cli(capsys, "quarantine", "list")[1].startswith(f"quarantine container {services.settings.quarantine_container} is empty")


# --------------------------------------------------------------------------- backfill


def test_backfill_skips_what_was_sent_and_refuses_bad_names(services, host, tmp_path, capsys):
    sent = PDF + b"already sent"
    upload(services, host, "11287/supplier/sent-last-year.pdf", sent)
    pending = PDF + b"waiting in the inbox"
    drop(services, "11287/supplier/pending.pdf", pending)  # in the inbox, not yet uploaded

    big = os.urandom(5 * 1024 * 1024 + 123)  # more than one 4 MiB block
    files = {
        "old.pdf": sent,                         # skipped: same SHA-1 as a sent document
        "new.pdf": PDF + b"new",                 # uploaded
        "2024/03/deep.pdf": PDF + b"deep",       # uploaded as 2024_03_deep.pdf
        "2024/copy-of-new.pdf": PDF + b"new",    # skipped: same content as new.pdf
        "pending.pdf": pending,                  # skipped: the inbox already has this name
        "big.pdf": big,                          # uploaded in blocks
        "virus.exe": b"MZ",                      # refused: extension
        "empty.pdf": b"",                        # refused: empty
    }
    for relative, data in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)

    code, out, err = cli(capsys, "backfill", str(tmp_path), "--folder", "11287", "--kind", "supplier")
    assert code == 1  # refused files are reported and make the run exit 1
    assert "uploaded 3 (5.0 MiB), skipped 3 (already sent or already in the inbox), refused 2" in out
    assert "skipped   old.pdf: already sent (SHA-1 " + hashlib.sha1(sent).hexdigest().upper() in out
    assert "skipped   2024/copy-of-new.pdf: same content as new.pdf" in out
    assert "skipped   pending.pdf: already in the inbox" in out
    assert "refused   virus.exe: file type '.exe' is not accepted" in out
    assert "refused   empty.pdf: file is empty" in out
    assert "[" in err and "6/6 files" in err and "MiB" in err  # progress bar (files and bytes)

    inbox = services.stores.container(services.settings.inbox_container)
    assert {b.name for b in inbox.list_blobs()} == {
        "11287/supplier/sent-last-year.pdf", "11287/supplier/pending.pdf",  # not archived yet
        "11287/supplier/new.pdf", "11287/supplier/2024_03_deep.pdf", "11287/supplier/big.pdf"}
    assert inbox.get_blob_client("11287/supplier/big.pdf").download_blob().readall() == big
    assert inbox.get_blob_client("11287/supplier/new.pdf").get_blob_properties().metadata == {"source": "backfill"}

    host.deliver_blob("upload_document", "11287/supplier/2024_03_deep.pdf")
    (row,) = rows_of(services, "11287/supplier/2024_03_deep.pdf")
    assert row.state == UPLOADED and row.get("Source") == "backfill"

    (tmp_path / "virus.exe").unlink()
    (tmp_path / "empty.pdf").unlink()
    code, out, err = cli(capsys, "backfill", str(tmp_path), "--folder", "11287", "--kind", "supplier",
                         "--no-progress")
    assert code == 0 and "uploaded 0 (0 B), skipped 6" in out and err == ""
    assert "skipped   2024/03/deep.pdf: already sent" in out  # uploaded meanwhile: its SHA-1 is in the ledger
    assert "skipped   2024/copy-of-new.pdf: same content as new.pdf" in out


def test_backfill_user_and_usage_errors(services, tmp_path, capsys):
    (tmp_path / "a.pdf").write_bytes(PDF)
    code, _, err = cli(capsys, "backfill", str(tmp_path), "--folder", "11287", "--kind", "expense")
    assert code == 1 and "--beneficiary" in err
    assert cli(capsys, "backfill", str(tmp_path / "nope"), "--folder", "1", "--kind", "other")[0] == 1
    assert cli(capsys, "backfill", str(tmp_path), "--folder", "abc", "--kind", "other")[0] == 2
    assert cli(capsys, "backfill", str(tmp_path), "--folder", "1", "--kind", "invoice")[0] == 2
    assert cli(capsys)[0] == 2
    code, out, err = cli(capsys, "backfill", str(tmp_path), "--folder", "1", "--kind", "expense",
                         "--beneficiary", "Jeanne Dupont", "--dry-run")
    assert code == 0 and "would upload" in out and "1/expense/Jeanne Dupont/a.pdf" in out
    assert where_is(services)["inbox"] == set()


# --------------------------------------------------------------------------- export


def test_export_csv_has_one_row_per_document(services, host, inqom, tmp_path, capsys):
    upload(services, host, "11287/supplier/a.pdf", PDF + b"a")
    done = upload(services, host, "11287/client/b, \"quoted\".pdf", PDF + b"b")
    upload(services, host, "11287/supplier/virus.exe")
    inqom.set_status(done.get("InqomId"), "Done")
    later(services, seconds=61)
    host.fire_timer("poll_documents")
    expected = {"11287/supplier/a.pdf": UPLOADED, "11287/client/b, \"quoted\".pdf": ARCHIVED,
                "11287/supplier/virus.exe": QUARANTINED}

    code, out, _ = cli(capsys, "export")
    assert code == 0
    reader = csv.DictReader(io.StringIO(out))
    rows = list(reader)
    assert {r["BlobPath"]: r["State"] for r in rows} == expected
    assert reader.fieldnames[:5] == ["PartitionKey", "RowKey", "Source", "Container", "BlobPath"]
    assert reader.fieldnames.index("State") < reader.fieldnames.index("InqomId") < reader.fieldnames.index("LastError")
    archived = next(r for r in rows if r["State"] == ARCHIVED)
    assert archived["ArchivePath"].startswith(services.settings.archive_container + "/")

    target = tmp_path / "ledger.csv"
    code, _, err = cli(capsys, "export", "--out", str(target))
    assert code == 0 and "exported 3 document row(s)" in err
    with open(target, newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == rows


def test_show_and_export_carry_what_inqom_extracted(services, host, inqom, capsys):
    name = "11287/supplier/LinkedIn mars.pdf"
    done = upload(services, host, name, PDF + b"extracted")
    inqom.set_status(done.get("InqomId"), "Done")
    inqom.set_extracted(done.get("InqomId"), CounterParty="LinkedIn Ireland Unlimited Company, Dublin",
                        Amount=1234.5, EffectifDate="2025-03-12T00:00:00Z", DocRef="INV-117")
    bare = upload(services, host, "11287/other/nothing.pdf", PDF + b"nothing")
    inqom.set_status(bare.get("InqomId"), "Done")
    later(services, seconds=61)
    host.fire_timer("poll_documents")

    code, out, err = cli(capsys, "show", name)
    assert code == 0, err
    assert "Extracted by Inqom" in out
    for expected in ("LinkedIn Ireland Unlimited Company, Dublin", "1234.50", "123450", "2025-03-12", "INV-117",
                     "TaggedAt"):
        assert expected in out
    # Readable order: the extracted values come right after Inqom's status.
    assert out.index("InqomStatus") < out.index("CounterParty") < out.index("Sha1")
    code, out, _ = cli(capsys, "show", name, "--json")
    (document,) = json.loads(out)["documents"]
    assert document["Amount"] == "1234.50" and document["AmountCents"] == 123450
    assert document["EffectifDate"] == "2025-03-12" and document["InqomType"] == "Supplier"

    code, out, _ = cli(capsys, "export")
    reader = csv.DictReader(io.StringIO(out))
    rows = {r["BlobPath"]: r for r in reader}
    fields = reader.fieldnames
    assert fields.index("InqomStatus") < fields.index("CounterParty") < fields.index("Amount") \
        < fields.index("AmountCents") < fields.index("EffectifDate") < fields.index("Sha1")
    assert rows[name]["CounterParty"] == "LinkedIn Ireland Unlimited Company, Dublin"  # the comma is quoted
    assert (rows[name]["Amount"], rows[name]["AmountCents"], rows[name]["DocRef"]) == ("1234.50", "123450", "INV-117")
    assert rows["11287/other/nothing.pdf"]["CounterParty"] == "" and rows["11287/other/nothing.pdf"]["TaggedAt"]


# --------------------------------------------------------------------------- entry point


def test_module_entry_point_runs_in_a_subprocess(app_env):
    env = {**os.environ, **app_env}
    result = subprocess.run([sys.executable, "-m", "inqom_bridge_cli", "status", "--json"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 0
    missing = {k: v for k, v in env.items() if k != "DocumentStorage"}
    result = subprocess.run([sys.executable, "-m", "inqom_bridge_cli", "status"], cwd=REPO_ROOT, env=missing,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "DocumentStorage" in result.stderr


def test_missing_ledger_table_is_a_clear_error(app_env, capsys):
    services = Services(load_settings({**app_env, "LEDGER_TABLE": "nosuchtable"}))
    code = main(["export"], services=services)
    _, err = capsys.readouterr()
    assert code == 1 and "storage:" in err and "LEDGER_TABLE" in err
