"""The daily ledger export (shared/ledger/backup.py, the backup_ledger timer) against Azurite.

What the export writes, scripts/backup-ledger.py restores identically (its --from-blob path included).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import AccountSasPermissions, EdmType, EntityProperty, ResourceTypes, generate_account_sas
from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from shared.ledger.backup import BackupReport, backup_name, blocks, export_ledger, row_line
from shared.ledger.rows import BUDGET_PARTITION
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY
from tests.test_backup_ledger import _every_type, _rows, _run

NOW = dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.timezone.utc)


@pytest.fixture
def settings_overrides() -> dict[str, str]:
    return {"LEDGER_BACKUP_CONTAINER": f"ledger-backup-{uuid.uuid4().hex[:10]}",
            "LEDGER_BACKUP_SCHEDULE": "0 15 3 * * *"}


@pytest.fixture
def table(services):
    return services.stores.table(services.settings.ledger_table)


@pytest.fixture
def container(services):
    return services.stores.container(services.settings.ledger_backup_container)


def _sas_expiry() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)


def test_blocks_cut_lines_at_the_block_size_and_keep_every_byte() -> None:
    lines = ["é" * 5 + "\n", "abc\n", "x" * 20 + "\n"]
    cut = list(blocks(lines, block_size=8))
    assert all(len(b) == 8 for b in cut[:-1]) and 0 < len(cut[-1]) <= 8
    assert b"".join(cut) == "".join(lines).encode("utf-8")
    assert list(blocks([], block_size=8)) == []
    assert backup_name(NOW.date()) == "ledger-2026-01-31.jsonl"


def test_row_line_carries_each_edm_type() -> None:
    row = json.loads(row_line({"PartitionKey": "1", "RowKey": "k", "Big": EntityProperty(2**40, EdmType.INT64),
                               "Doc": uuid.UUID(int=1), "N": 3, "Nan": float("nan")}))
    assert row["properties"] == {"Big": ["Edm.Int64", 2**40], "Doc": ["Edm.Guid", str(uuid.UUID(int=1))],
                                 "N": ["Edm.Int32", 3], "Nan": ["Edm.Double", "NaN"]}


def test_export_writes_every_row_that_restore_reads_back_identically(azurite, services, table, container,
                                                                     tables_for_restore) -> None:
    table.create_entity(_every_type("k1"))
    table.create_entity({"PartitionKey": "11287", "RowKey": "k2", "State": "pending"})
    table.create_entity({"PartitionKey": BUDGET_PARTITION, "RowKey": "inqom", "Tokens": 1.5,
                         "Window": EntityProperty(100, EdmType.INT64)})
    before = _rows(table)

    report = export_ledger(table, container, now=NOW)
    assert report.created and report.rows == 3 and report.blob_name == "ledger-2026-01-31.jsonl"
    data = container.download_blob(report.blob_name).readall()
    assert report.bytes == len(data)
    lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert {(r["PartitionKey"], r["RowKey"]) for r in lines} == set(before)  # the budget row included
    assert {r["RowKey"]: r for r in lines}["inqom"]["properties"]["Window"] == ["Edm.Int64", 100]

    target, endpoint = tables_for_restore
    sas = generate_blob_sas(ACCOUNT, container.container_name, report.blob_name, account_key=ACCOUNT_KEY,
                            permission=BlobSasPermissions(read=True), expiry=_sas_expiry())
    url = f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}/{container.container_name}/{report.blob_name}?{sas}"
    output = _run("restore", "--table-endpoint", endpoint, "--table", target.table_name, "--from-blob", url).stdout
    assert "2 rows restored" in output and sas not in output
    restored = _rows(target)
    assert restored == {key: value for key, value in before.items() if key[0] != BUDGET_PARTITION}


@pytest.fixture
def tables_for_restore(azurite):
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = f"bk{uuid.uuid4().hex[:12]}"
    target = service.create_table(name)
    sas = generate_account_sas(
        AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY),
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, list=True, add=True, update=True),
        expiry=_sas_expiry(),
    )
    try:
        yield target, f"http://127.0.0.1:{azurite.table_port}/{ACCOUNT}?{sas}"
    finally:
        service.delete_table(name)


def test_a_second_export_the_same_day_leaves_the_first_as_it_is(table, container) -> None:
    table.create_entity({"PartitionKey": "11287", "RowKey": "k", "State": "pending"})
    first = export_ledger(table, container, now=NOW)
    written = container.download_blob(first.blob_name).readall()
    table.create_entity({"PartitionKey": "11287", "RowKey": "later", "State": "pending"})

    again = export_ledger(table, container, now=NOW.replace(hour=1))
    assert again == BackupReport(first.blob_name, 0, 0, created=False)
    assert container.download_blob(first.blob_name).readall() == written
    next_day = export_ledger(table, container, now=NOW + dt.timedelta(minutes=2))
    assert next_day.created and next_day.rows == 2 and next_day.blob_name == "ledger-2026-02-01.jsonl"


def test_a_table_larger_than_a_block_is_committed_as_several_blocks(table, container) -> None:
    for i in range(40):
        table.create_entity({"PartitionKey": "11287", "RowKey": f"k{i:03d}", "Name": f"facture-{i}-" + "x" * 50})
    report = export_ledger(table, container, now=NOW, block_size=1000)
    blob = container.get_blob_client(report.blob_name)
    committed, _ = blob.get_block_list("committed")
    assert len(committed) == -(-report.bytes // 1000) > 1
    assert all(b.size == 1000 for b in committed[:-1])
    keys = [json.loads(line)["RowKey"] for line in blob.download_blob().readall().decode("utf-8").splitlines()]
    assert keys == [f"k{i:03d}" for i in range(40)] and report.rows == 40


def test_an_empty_ledger_is_backed_up_as_an_empty_blob(table, container) -> None:
    report = export_ledger(table, container, now=NOW)
    assert report == BackupReport("ledger-2026-01-31.jsonl", 0, 0, created=True)
    assert container.download_blob(report.blob_name).readall() == b""


def test_the_timer_runs_end_to_end_through_the_host(host, table, container) -> None:
    assert "backup_ledger" in host.functions_of_type("timerTrigger")
    assert host.schedule("backup_ledger") == "0 15 3 * * *"
    table.create_entity({"PartitionKey": "11287", "RowKey": "k", "State": "pending"})
    host.fire_timer("backup_ledger")
    host.fire_timer("backup_ledger")  # the same day: nothing overwritten, no error
    (blob,) = container.list_blobs()
    assert blob.name == backup_name(dt.datetime.now(dt.timezone.utc).date())
    assert json.loads(container.download_blob(blob.name).readall())["RowKey"] == "k"
