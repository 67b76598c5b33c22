"""Helpers for tests that drop documents and check where every blob ended up."""

from __future__ import annotations

from datetime import timedelta

from inqom_bridge_cli import main
from shared.ledger.rows import LedgerEntry
from shared.services import Services


def drop(services: Services, name: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
    services.stores.container(services.settings.inbox_container).upload_blob(name, data, metadata=metadata,
                                                                             overwrite=True)


def later(services: Services, **delta: float) -> None:
    """Make the ledger (and so the poller and the CLI) see time ``delta`` ahead from now on (cumulative)."""
    base = services.ledger.clock
    services.ledger.clock = lambda: base() + timedelta(**delta)


def only_row(services: Services, name: str) -> LedgerEntry:
    """The one ledger row of inbox blob ``name``."""
    (entry,) = list(services.ledger.scan("BlobPath eq @p", p=name))
    return entry


def blob_names(services: Services, container: str) -> set[str]:
    return {b.name for b in services.stores.container(container).list_blobs()}


def where_is(services: Services) -> dict[str, set[str]]:
    s = services.settings
    return {role: blob_names(services, name) for role, name in
            (("inbox", s.inbox_container), ("archive", s.archive_container), ("quarantine", s.quarantine_container))}


def assert_accounted(services: Services, dropped: dict[str, bytes]) -> dict[str, str]:
    """Each dropped blob is in exactly one place with its bytes intact; returns name → place.

    Archived blobs are renamed (``{folder}/{yyyy}/{mm}/{inqomId}-{name}``), so they are found
    through the ledger's ``ArchivePath``.
    """
    places = where_is(services)
    archived_by_source = {}
    for entry in services.ledger.scan("State eq 'Archived'"):
        archived_by_source[entry.get("BlobPath")] = entry.get("ArchivePath").split("/", 1)[1]
    found: dict[str, str] = {}
    for name, data in dropped.items():
        spots = [role for role in ("inbox", "quarantine") if name in places[role]]
        if name in archived_by_source and archived_by_source[name] in places["archive"]:
            spots.append("archive")
        assert len(spots) == 1, f"{name} is in {spots or 'no container'}"
        role = spots[0]
        container = getattr(services.settings, f"{role}_container")
        blob_name = archived_by_source[name] if role == "archive" else name
        stored = services.stores.container(container).get_blob_client(blob_name).download_blob().readall()
        assert stored == data, f"{name} in {role} does not hold the dropped bytes"
        found[name] = role
    return found


def archived_blob(services: Services, entry: LedgerEntry):
    """The archive copy's blob client, from the row's ``ArchivePath``."""
    container, _, path = entry.get("ArchivePath").partition("/")
    return services.stores.container(container).get_blob_client(path)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the operator CLI in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
