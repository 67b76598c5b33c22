"""scripts/backup-ledger.py against Azurite, run as an operator runs it (a subprocess, its CLI).

The script reaches Azurite through `--table-endpoint` with an account SAS in the query string
(Azurite has no Entra ID over HTTP), which also exercises the SAS path: credential=None, and the
query string is never printed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import (
    AccountSasPermissions, EdmType, EntityProperty, ResourceTypes, TableClient, TableServiceClient,
    UpdateMode, generate_account_sas,
)
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from shared.ledger.rows import BUDGET_PARTITION
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "backup-ledger.py"

DATETIME_7 = "2026-01-31T10:11:12.1234567Z"  # the service keeps 100 ns ticks; Python only microseconds
GUID = uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833")


def _expiry() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)


@pytest.fixture
def tables(azurite) -> TableServiceClient:
    return TableServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def table_sas() -> str:
    return generate_account_sas(
        AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY),
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, update=True),
        expiry=_expiry(),
    )


@pytest.fixture
def table_endpoint(azurite, table_sas) -> str:
    return f"http://127.0.0.1:{azurite.table_port}/{ACCOUNT}?{table_sas}"


def _new_table(tables: TableServiceClient) -> Iterator[TableClient]:
    name = f"bk{uuid.uuid4().hex[:12]}"
    client = tables.create_table(name)
    try:
        yield client
    finally:
        tables.delete_table(name)


@pytest.fixture
def source(tables) -> Iterator[TableClient]:
    yield from _new_table(tables)


@pytest.fixture
def target(tables) -> Iterator[TableClient]:
    yield from _new_table(tables)


def _run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _typed(entity: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """{name: (Edm type, value)} of an entity read by azure-data-tables 12.7 (see its _deserialize.py)."""
    out: dict[str, tuple[str, Any]] = {}
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        if isinstance(value, EntityProperty):
            out[name] = (EdmType(value.edm_type).value, value.value)
        elif isinstance(value, bool):
            out[name] = (EdmType.BOOLEAN.value, value)
        elif isinstance(value, int):
            out[name] = (EdmType.INT32.value, value)
        elif isinstance(value, float):
            out[name] = (EdmType.DOUBLE.value, value)
        elif isinstance(value, uuid.UUID):
            out[name] = (EdmType.GUID.value, value)
        elif isinstance(value, dt.datetime):
            out[name] = (EdmType.DATETIME.value, value.tables_service_value)
        elif isinstance(value, bytes):
            out[name] = (EdmType.BINARY.value, value)
        else:
            assert isinstance(value, str), (name, type(value))
            out[name] = (EdmType.STRING.value, value)
    return out


def _rows(table: TableClient) -> dict[tuple[str, str], dict[str, tuple[str, Any]]]:
    return {(e["PartitionKey"], e["RowKey"]): _typed(e) for e in table.list_entities()}


def _every_type(row_key: str) -> dict[str, Any]:
    return {
        "PartitionKey": "11287",
        "RowKey": row_key,
        "State": "archived",
        "Accents": "Facture n° 12 – été",
        "Attempts": 3,  # Int32
        "Small64": EntityProperty(7, EdmType.INT64),  # an Int64 that would fit an Int32
        "InqomId": EntityProperty(2**40 + 5, EdmType.INT64),
        "Sent": True,
        "Failed": False,
        "DocId": GUID,
        "SentAt": EntityProperty(DATETIME_7, EdmType.DATETIME),
        "Pdf": bytes(range(256)),
        "Amount": 1234.5678,
        "Whole": EntityProperty(2.0, EdmType.DOUBLE),
    }


def _export(table: TableClient, endpoint: str, out: Path, *extra: str) -> tuple[Path, str]:
    result = _run("export", "--table-endpoint", endpoint, "--table", table.table_name, "--out", str(out), *extra)
    files = list(out.glob(f"{table.table_name}-*.jsonl"))
    assert len(files) == 1
    return files[0], result.stdout + result.stderr


def test_round_trip_keeps_every_value_and_edm_type(source, target, table_endpoint, tmp_path) -> None:
    source.create_entity(_every_type("k1"))
    source.create_entity({"PartitionKey": "11287", "RowKey": "k2", "State": "pending"})
    before = _rows(source)
    # What azure-data-tables hands the script: the types the export has to carry.
    assert before[("11287", "k1")]["DocId"] == ("Edm.Guid", GUID)
    assert before[("11287", "k1")]["SentAt"] == ("Edm.DateTime", DATETIME_7)
    assert before[("11287", "k1")]["Small64"] == ("Edm.Int64", 7)

    path, _ = _export(source, table_endpoint, tmp_path)
    exported = {json.loads(line)["RowKey"]: json.loads(line) for line in path.read_text("utf-8").splitlines()}
    assert exported["k1"]["properties"]["DocId"] == ["Edm.Guid", str(GUID)]
    assert exported["k1"]["properties"]["SentAt"] == ["Edm.DateTime", DATETIME_7]

    output = _run("restore", "--table-endpoint", table_endpoint, "--table", target.table_name,
                  "--file", str(path)).stdout
    assert "2 rows restored" in output and "0 rows skipped because they exist" in output

    after = _rows(target)
    assert after == before
    for key, properties in before.items():  # the same, property by property, with its Edm type
        assert set(after[key]) == set(properties)
        for name, (edm, value) in properties.items():
            assert after[key][name] == (edm, value), (key, name)


def test_restore_keeps_rows_that_moved_on_unless_overwrite(source, table_endpoint, tmp_path) -> None:
    source.create_entity({"PartitionKey": "11287", "RowKey": "moved", "State": "pending", "Attempts": 1})
    source.create_entity({"PartitionKey": "11287", "RowKey": "lost", "State": "archived",
                          "DocId": GUID})
    source.create_entity({"PartitionKey": BUDGET_PARTITION, "RowKey": "inqom", "Tokens": 1.0,
                          "Window": EntityProperty(100, EdmType.INT64)})
    path, _ = _export(source, table_endpoint, tmp_path)
    assert BUDGET_PARTITION in path.read_text("utf-8")  # exported, for the record

    # After the backup: the document was sent, a row was deleted by mistake, the budget moved on.
    moved = source.get_entity("11287", "moved")
    moved.update(State="sent", InqomId=EntityProperty(99, EdmType.INT64))
    source.update_entity(moved, mode=UpdateMode.REPLACE)
    source.delete_entity("11287", "lost")
    source.upsert_entity({"PartitionKey": BUDGET_PARTITION, "RowKey": "inqom", "Tokens": 0.25,
                          "Window": EntityProperty(200, EdmType.INT64)}, mode=UpdateMode.REPLACE)
    budget_now = _rows(source)[(BUDGET_PARTITION, "inqom")]

    restore = ("restore", "--table-endpoint", table_endpoint, "--table", source.table_name, "--file", str(path))
    output = _run(*restore).stdout
    assert "1 rows restored" in output
    assert "1 rows skipped because they exist" in output
    assert f"1 rows of the '{BUDGET_PARTITION}' partition skipped" in output
    rows = _rows(source)
    assert rows[("11287", "moved")]["State"] == ("Edm.String", "sent")  # left as is: not sent twice
    assert rows[("11287", "moved")]["InqomId"] == ("Edm.Int64", 99)
    assert rows[("11287", "lost")]["DocId"] == ("Edm.Guid", GUID)  # the deleted row is back
    assert rows[(BUDGET_PARTITION, "inqom")] == budget_now

    output = _run(*restore, "--overwrite").stdout
    assert "2 rows restored (existing rows replaced)" in output
    assert f"1 rows of the '{BUDGET_PARTITION}' partition skipped" in output
    rows = _rows(source)
    assert rows[("11287", "moved")] == {"State": ("Edm.String", "pending"), "Attempts": ("Edm.Int32", 1)}
    assert rows[(BUDGET_PARTITION, "inqom")] == budget_now  # never restored, even with --overwrite


def test_budget_rows_are_never_restored_into_an_empty_table(source, target, table_endpoint, tmp_path) -> None:
    source.create_entity({"PartitionKey": BUDGET_PARTITION, "RowKey": "inqom", "Tokens": 3.0})
    source.create_entity({"PartitionKey": "11287", "RowKey": "k", "State": "pending"})
    path, _ = _export(source, table_endpoint, tmp_path)
    for extra in ((), ("--overwrite",)):
        _run("restore", "--table-endpoint", table_endpoint, "--table", target.table_name, "--file", str(path), *extra)
        assert list(_rows(target)) == [("11287", "k")]


def test_sas_query_strings_are_never_printed(azurite, source, target, table_endpoint, table_sas, tmp_path) -> None:
    source.create_entity({"PartitionKey": "11287", "RowKey": "k", "State": "pending"})
    container = f"bk{uuid.uuid4().hex[:12]}"
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    blobs.create_container(container)
    blob_sas = generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY, expiry=_expiry(),
                                      permission=ContainerSasPermissions(read=True, create=True, write=True))
    container_url = f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}/{container}?{blob_sas}"
    try:
        path, output = _export(source, table_endpoint, tmp_path, "--upload-container-url", container_url)
        output += (result := _run("restore", "--table-endpoint", table_endpoint, "--table", target.table_name,
                                  "--file", str(path))).stdout + result.stderr
        # The upload went through with the SAS alone (no DefaultAzureCredential, which Azurite would refuse).
        uploaded = blobs.get_container_client(container).download_blob(f"ledger/{path.name}").readall()
        assert uploaded == path.read_bytes()
        assert f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}/{container}/ledger/{path.name}" in output
        assert f"http://127.0.0.1:{azurite.table_port}/{ACCOUNT}/{source.table_name}" in output
        for secret in (table_sas, blob_sas, "sig=", "?sv=", "?se=", "?sp="):
            assert secret not in output
    finally:
        blobs.delete_container(container)


def test_endpoint_suffix_and_account_are_the_default_endpoint(tmp_path) -> None:
    """--account builds https://<account>.table.<suffix>; --table-endpoint replaces both."""
    help_text = _run("export", "--help").stdout
    assert "--endpoint-suffix" in help_text and "--table-endpoint" in help_text
    assert "--overwrite" in _run("restore", "--help").stdout
    both = subprocess.run([sys.executable, str(SCRIPT), "export", "--account", "a", "--table-endpoint", "http://x"],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode != 0 and "not allowed with argument" in both.stderr
