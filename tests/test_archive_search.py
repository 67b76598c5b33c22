"""Issue 13: a searchable archive (fields kept, tags, find, tag backfill) and the statuses Inqom really answers.

Pure parts (parsing, normalising, the tag filter builder) are unit-tested; the rest runs the real
functions against Azurite and the Inqom emulator, whose documents carry what Inqom extracted (with
accents, commas, very long names and missing values).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import unquote

import pytest
from azure.data.tables import EdmType, EntityProperty

from shared.archive import poll as archiver
from shared.archive.tags import (
    MAX_TAGS, MAX_VALUE_LENGTH, METADATA_VALUE_LIMIT, TAG_AMOUNT, TAG_COUNTERPARTY, TAG_DATE, TAG_DOCREF, TAG_FOLDER,
    TAG_ID, TAG_KIND, ArchiveFields, TagError, TagQuery, amount_from_tag, amount_tag, archive_tags, merge_tags,
    normalise_name, normalise_ref, tag_filter, to_cents, valid_tag,
)
from shared.archive.poll import poll_tick
from shared.inqom.client import InqomDocument
from shared.ledger.rows import ARCHIVED, DELETED, UPLOADED
from shared.inqom.polling import PollPolicy, is_known_status
from tests.support.documents import archived_blob, assert_accounted, cli, drop

PDF = b"%PDF-1.4\n% archive search\n" + bytes(range(256)) * 16 + b"\n%%EOF\n"
LONG_NAME = ("Établissements Dupont, Durand & Fils — Société d'exploitation des carrières de l'Île-de-France, "
             "succursale de Saint-Étienne, " * 12).strip()


@pytest.fixture
def settings_overrides():
    return {"POLL_FIRST_DELAY_SECONDS": "60", "POLL_MAX_INTERVAL_SECONDS": "600",
            "POLL_REVIEW_INTERVAL_SECONDS": "21600", "POLL_MAX_AGE_HOURS": "24"}


# --------------------------------------------------------------------------- helpers


def upload(services, host, name, data=PDF, metadata=None):
    drop(services, name, data, metadata)
    host.deliver_blob("upload_document", name)
    return row(services, name)


def row(services, name):
    rows = sorted(services.ledger.scan("BlobPath eq @p", p=name), key=lambda e: e.get("CreatedAt"))
    return rows[-1]


def tick(services, minutes: float = 2):
    """One poll tick as if ``minutes`` had passed since the uploads (every first poll is due after 1 minute)."""
    return poll_tick(services, now=services.ledger.clock() + timedelta(minutes=minutes))


def archive_one(services, host, inqom, name, data=PDF, **extracted):
    entry = upload(services, host, name, data)
    inqom.set_status(entry.get("InqomId"), "Done")
    if extracted:
        inqom.set_extracted(entry.get("InqomId"), **extracted)
    report = tick(services)
    assert not report.errors, report.errors
    archived = row(services, name)
    assert archived.state == ARCHIVED, archived.get("LastError")
    return archived


# --------------------------------------------------------------------------- parsing (pure)


def test_extracted_fields_are_parsed_typed_and_tolerantly():
    doc = InqomDocument.parse([{
        "Id": 7, "Status": "Done", "CounterParty": "  LinkedIn Ireland Unlimited Company\n", "Amount": 14.87,
        "EffectifDate": "2025-03-12T00:00:00Z", "DocRef": "F-2025/001", "Type": "Supplier",
        "UserDefinedThirdPartyName": "Jeanne Dupont"}])
    assert doc.counter_party == "LinkedIn Ireland Unlimited Company"
    assert doc.amount == Decimal("14.87") and isinstance(doc.amount, Decimal)
    assert doc.effectif_date == date(2025, 3, 12)
    assert (doc.doc_ref, doc.type, doc.third_party_name) == ("F-2025/001", "Supplier", "Jeanne Dupont")

    bare = InqomDocument.parse({"Id": 8, "Status": "Done"})
    assert (bare.counter_party, bare.amount, bare.effectif_date, bare.doc_ref) == (None, None, None, None)
    assert ArchiveFields.from_document(bare).empty

    for amount, expected in [("1 234,56", Decimal("1234.56")), (-3, Decimal(-3)), ("abc", None), (True, None),
                             (float("nan"), None), ({"x": 1}, None), ("", None),
                             (0.1 + 0.2, Decimal("0.30000000000000004"))]:
        assert InqomDocument.parse({"Id": 1, "Amount": amount}).amount == expected, amount
    for text, expected in [("2025-03-12", date(2025, 3, 12)), ("2025-03-12T23:30:00+01:00", date(2025, 3, 12)),
                           ("2025-02-30T00:00:00Z", None), ("12/03/2025", None), (20250312, None)]:
        assert InqomDocument.parse({"Id": 1, "EffectifDate": text}).effectif_date == expected, text
    assert InqomDocument.parse({"Id": 1, "CounterParty": "A\u202eB\x00C"}).counter_party == "A B C"
    assert InqomDocument.parse({"Id": 1, "Status": 5}).status == "5"  # never a crash on an odd status


def test_ledger_columns_are_typed():
    fields = ArchiveFields.from_document(InqomDocument.parse(
        {"Id": 1, "CounterParty": "Café", "Amount": 12.345, "EffectifDate": "2025-03-12T00:00:00Z"}))
    columns = fields.ledger_columns()
    assert columns["Amount"] == "12.35" and columns["EffectifDate"] == "2025-03-12"
    assert columns["AmountCents"] == EntityProperty(1235, EdmType.INT64)
    assert set(columns) == {"CounterParty", "Amount", "AmountCents", "EffectifDate"}
    assert ArchiveFields.from_document(InqomDocument.parse({"Id": 1, "Amount": "1e40"})).amount is None


# --------------------------------------------------------------------------- tags (pure)


def test_normalised_names_fold_accents_case_and_punctuation():
    assert normalise_name("L'Oréal S.A.") == normalise_name("LOREAL SA") == "loreal sa"
    assert normalise_name("Société Générale, Ørsted & Fils — Ltd.") == "societe generale orsted fils ltd"
    assert normalise_name("Straße") == "strasse" and normalise_name("ÆØÅ œuvre") == "aeoa oeuvre"
    assert normalise_name("  ,;  ") is None and normalise_name("北京") is None
    assert normalise_ref("F#2025/001") == "f 2025/001" and normalise_ref("Réf: A-1") == "ref: a-1"
    long = normalise_name(LONG_NAME)
    assert len(long) <= MAX_VALUE_LENGTH and long.startswith("etablissements dupont durand fils societe dexploitation")


def test_amount_tags_sort_like_the_amounts():
    rng = random.Random(13)
    cents = sorted({0, 1, -1, 99, -99, 10**12 - 1, -(10**12 - 1), *(rng.randint(-10**11, 10**11) for _ in range(300))})
    tags = [amount_tag(c) for c in cents]
    assert tags == sorted(tags)  # lexicographic order is numeric order, negatives included
    assert all(valid_tag(TAG_AMOUNT, t) and len(t) == 13 for t in tags)
    assert [amount_from_tag(t) for t in tags] == [Decimal(c) / 100 for c in cents]
    assert amount_tag(1487) == "p000000001487" and amount_tag(-1487) == "n999999998512"
    assert amount_tag(10**12) is None and amount_tag(-(10**12)) is None
    assert to_cents(Decimal("0.005")) == 1 and to_cents(Decimal("-0.005")) == -1


def test_archive_tags_stay_within_the_limits_with_long_odd_values():
    fields = ArchiveFields(counter_party=LONG_NAME, amount=Decimal("1234.50"), effectif_date=date(2025, 3, 12),
                           doc_ref="Réf n°" + "x/" * 300, type="Supplier", third_party_name="Zoë O'Brien-Smith")
    tags = archive_tags(11287, "expense", 1_000_042, fields)
    assert len(tags) <= MAX_TAGS and all(valid_tag(k, v) for k, v in tags.items())
    assert tags[TAG_FOLDER] == "11287" and tags[TAG_KIND] == "expense" and tags[TAG_ID] == "1000042"
    assert tags[TAG_DATE] == "2025-03-12" and tags[TAG_AMOUNT] == "p000000123450"
    assert tags["inqom_beneficiary"] == "zoe obrien smith" and len(tags[TAG_DOCREF]) <= MAX_VALUE_LENGTH
    # Nothing extracted: tagged all the same, with what the bridge knows.
    assert archive_tags(7, "supplier", 3, ArchiveFields()) == {TAG_FOLDER: "7", TAG_KIND: "supplier", TAG_ID: "3"}
    # Amounts beyond 12 digits of cents: no amount tag, the rest stays.
    assert TAG_AMOUNT not in archive_tags(7, "other", 3, ArchiveFields(amount=Decimal("1e11")))


def test_metadata_keeps_the_originals_ascii_and_bounded():
    fields = ArchiveFields(counter_party=LONG_NAME, amount=Decimal("-3.00"), doc_ref="F,1;é" * 400,
                           third_party_name="Zoë")
    meta = fields.metadata()
    assert all(v.isascii() and len(v) <= METADATA_VALUE_LIMIT for v in meta.values())
    assert sum(len(k) + len(v) for k, v in meta.items()) < 4096  # room left in the 8 KiB of a blob's metadata
    assert LONG_NAME.startswith(unquote(meta["counterparty"])) and unquote(meta["beneficiary"]) == "Zoë"
    assert meta["amount"] == "-3.00" and "effectifdate" not in meta


def test_merge_keeps_other_tags_while_ten_fit():
    ours = {TAG_FOLDER: "1", TAG_KIND: "other", TAG_ID: "2"}
    merged, dropped = merge_tags({"project": "x", "inqom_date": "stale"}, ours)
    assert merged == {**ours, "project": "x"} and dropped == []
    merged, dropped = merge_tags({f"k{i}": "v" for i in range(9)}, ours)
    assert len(merged) == MAX_TAGS and dropped == ["k7", "k8"]


def test_tag_filter_building_quoting_and_refusals():
    where = tag_filter(TagQuery(folder=11287, counterparty="LinkedIn Ireland", date_from=date(2025, 3, 1),
                                date_to=date(2025, 3, 31), min_amount=Decimal("1000"), max_amount=Decimal("1500"),
                                docref="F-1"), container="archive")
    assert where == ("@container = 'archive' AND \"inqom_folder\" = '11287' AND \"inqom_counterparty\" = "
                     "'linkedin ireland' AND \"inqom_date\" >= '2025-03-01' AND \"inqom_date\" <= '2025-03-31' AND "
                     "\"inqom_amount\" >= 'p000000100000' AND \"inqom_amount\" <= 'p000000150000' AND "
                     "\"inqom_docref\" = 'f-1'")
    # A name with quotes cannot break out of its quotes: it is normalised to the tag alphabet first.
    hostile = tag_filter(TagQuery(counterparty="x' OR \"inqom_folder\" > '0"))
    assert hostile == "\"inqom_counterparty\" = 'x or inqom folder 0'"
    assert tag_filter(TagQuery(docref="a'b\"c")) == "\"inqom_docref\" = 'a b c'"
    prefix = tag_filter(TagQuery(counterparty="Linked", counterparty_prefix=True))
    assert prefix.startswith("\"inqom_counterparty\" >= 'linked' AND \"inqom_counterparty\" <= 'linkedzz")
    assert tag_filter(TagQuery(min_amount=Decimal("-10"))) == "\"inqom_amount\" >= 'n999999998999'"
    for bad in (TagQuery(), TagQuery(counterparty="!!!"),
                TagQuery(date_from=date(2025, 4, 1), date_to=date(2025, 3, 1)),
                TagQuery(min_amount=Decimal(5), max_amount=Decimal(4)), TagQuery(max_amount=Decimal("1e12")),
                TagQuery(folder=0)):
        with pytest.raises(TagError):
            tag_filter(bad)
    with pytest.raises(TagError):
        tag_filter(TagQuery(folder=1), container="arch'ive")


def test_poll_cadence_for_pending_and_unknown_statuses():
    policy = PollPolicy(first_delay=60, max_interval=600, review_interval=21600)
    assert is_known_status("Pending") and is_known_status("Rejected") and not is_known_status("Archiving")
    assert policy.next_delay("Pending", 2) == policy.next_delay("Received", 2) == timedelta(seconds=240)
    assert policy.next_delay("Archiving", 2) == policy.next_delay("ToReview", 2) == timedelta(seconds=21600)
    assert policy.next_delay(None, 2) == timedelta(seconds=240)  # errors keep backing off


# --------------------------------------------------------------------------- keep it, tag it (Azurite)


def test_done_document_keeps_typed_fields_and_is_tagged_at_commit(services, host, inqom):
    name = "11287/supplier/Facture LinkedIn mars.pdf"
    archived = archive_one(services, host, inqom, name, CounterParty="LinkedIn Ireland Unlimited Company",
                           Amount=14.87, EffectifDate="2025-03-12T00:00:00Z", DocRef="INV-2025-03/117")
    assert archived.get("CounterParty") == "LinkedIn Ireland Unlimited Company"
    assert archived.get("Amount") == "14.87" and archived.get("AmountCents") == 1487
    assert archived.fields["AmountCents"].edm_type == EdmType.INT64  # a numeric column, for sorting and filters
    assert archived.get("EffectifDate") == "2025-03-12" and archived.get("DocRef") == "INV-2025-03/117"
    assert archived.get("InqomType") == "Supplier" and archived.get("TaggedAt")
    blob = archived_blob(services, archived)
    inqom_id = archived.get("InqomId")
    assert blob.get_blob_tags() == {
        TAG_FOLDER: "11287", TAG_KIND: "supplier", TAG_ID: str(inqom_id),
        TAG_COUNTERPARTY: "linkedin ireland unlimited company", TAG_DATE: "2025-03-12",
        TAG_AMOUNT: "p000000001487", TAG_DOCREF: "inv-2025-03/117"}
    meta = blob.get_blob_properties().metadata
    assert unquote(meta["counterparty"]) == "LinkedIn Ireland Unlimited Company" and meta["amount"] == "14.87"
    assert meta["effectifdate"] == "2025-03-12" and meta["inqomtype"] == "Supplier"
    assert meta["ledgerkey"] == archived.key  # what was there before is still there
    assert assert_accounted(services, {name: PDF}) == {name: "archive"}


def test_accents_commas_long_names_and_missing_values_archive_all_the_same(services, host, inqom):
    odd = archive_one(services, host, inqom, "7/expense/Zoë O'Brien/taxi.pdf", PDF + b"1",
                      CounterParty=LONG_NAME, Amount="n/a", EffectifDate="bientôt", DocRef="Réf, n°1")
    assert odd.get("CounterParty") == LONG_NAME and odd.get("Amount") is None and odd.get("EffectifDate") is None
    assert odd.get("UserDefinedThirdPartyName") == "Zoë O'Brien"
    tags = archived_blob(services, odd).get_blob_tags()
    assert len(tags[TAG_COUNTERPARTY]) <= MAX_VALUE_LENGTH and TAG_AMOUNT not in tags and TAG_DATE not in tags
    assert tags["inqom_beneficiary"] == "zoe obrien" and tags[TAG_DOCREF] == "ref n 1"

    bare = archive_one(services, host, inqom, "7/other/nothing-extracted.pdf", PDF + b"2")
    assert bare.state == ARCHIVED and bare.get("TaggedAt")
    assert all(bare.get(c) is None for c in ("CounterParty", "Amount", "AmountCents", "EffectifDate"))
    assert archived_blob(services, bare).get_blob_tags() == {TAG_FOLDER: "7", TAG_KIND: "other",
                                                             TAG_ID: str(bare.get("InqomId"))}


def test_duplicate_is_kept_and_tagged_under_its_own_id(services, host, inqom):
    first = upload(services, host, "9/supplier/a.pdf")
    inqom.extraction_for_name["a-copy.pdf"] = {"CounterParty": "ACME", "Amount": "99,90"}
    second = upload(services, host, "9/supplier/a-copy.pdf")
    assert second.get("OriginId") == first.get("InqomId")
    tick(services)
    dup = row(services, "9/supplier/a-copy.pdf")
    assert dup.state == ARCHIVED and dup.get("Amount") == "99.90"
    assert archived_blob(services, dup).get_blob_tags()[TAG_ID] == str(dup.get("InqomId"))


def test_tags_refused_by_the_service_still_archive_the_copy_untagged(services, host, inqom, monkeypatch, capsys):
    """A 400 on the tagged commit (here: a tag Azurite refuses) commits the copy without tags, never refuses it."""
    real = archiver.archive_tags
    monkeypatch.setattr(archiver, "archive_tags", lambda *a: {**real(*a), "bad'key": "x"})
    name = "9/other/untagged.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    report = tick(services)
    archived = row(services, name)
    assert archived.state == ARCHIVED and not archived.get("TaggedAt") and report.untagged == 1
    assert archived_blob(services, archived).get_blob_properties().tag_count in (None, 0)
    code, out, _ = cli(capsys, "status", "--json")
    assert json.loads(out)["archived_untagged"] == 1


def test_a_tick_dying_after_the_tagged_commit_is_finished_by_the_next(services, host, inqom, monkeypatch):
    """The copy and its tags are one commit: the next tick recognises the copy (ledgerkey) and its tags."""
    name = "9/supplier/interrupted.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Done")
    inqom.set_extracted(entry.get("InqomId"), CounterParty="ACME", Amount=10)

    def die(*args):
        raise RuntimeError("worker died after the commit")

    monkeypatch.setattr(archiver, "_release_inbox_blob", die)
    first = tick(services)
    assert first.errors and row(services, name).state == UPLOADED
    monkeypatch.undo()
    commits_before = len(inqom.calls("GET", "/public-url"))
    assert not tick(services, minutes=30).errors
    archived = row(services, name)
    assert archived.state == ARCHIVED and archived.get("TaggedAt") and archived.get("CounterParty") == "ACME"
    assert len(inqom.calls("GET", "/public-url")) == commits_before  # not downloaded again
    assert archived_blob(services, archived).get_blob_tags()[TAG_COUNTERPARTY] == "acme"
    assert assert_accounted(services, {name: PDF}) == {name: "archive"}


# --------------------------------------------------------------------------- statuses


def test_rejected_goes_to_quarantine_with_its_reasons(services, host, inqom):
    name = "7/supplier/refused.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Rejected", ["JournalNotFound"])
    report = tick(services)
    rejected = row(services, name)
    assert not report.errors
    assert rejected.state == DELETED and rejected.get("InqomStatus") == "Rejected"
    reason = rejected.get("QuarantineReason")
    assert "rejected by Inqom" in reason and "JournalNotFound" in reason
    assert rejected.next_poll is None
    meta = services.stores.container(services.settings.quarantine_container).get_blob_client(name) \
        .get_blob_properties().metadata
    assert "rejected by Inqom" in unquote(meta["reason"]) and "JournalNotFound" in unquote(meta["reason"])
    assert assert_accounted(services, {name: PDF}) == {name: "quarantine"}


def test_pending_is_followed_like_a_machine_state(services, host, inqom):
    name = "7/client/pending.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Pending")
    now = services.ledger.clock() + timedelta(minutes=2)
    poll_tick(services, now=now)
    pending = row(services, name)
    assert pending.state == UPLOADED and pending.get("InqomStatus") == "Pending"
    assert not pending.get("UnknownStatusLogged")
    assert pending.next_poll - now == timedelta(seconds=120)


def test_unknown_status_is_logged_once_followed_slowly_counted_and_never_crashes(services, host, inqom, caplog,
                                                                                    capsys):
    name = "7/supplier/strange.pdf"
    entry = upload(services, host, name)
    inqom.set_status(entry.get("InqomId"), "Archiving", unknown=True)
    caplog.set_level(logging.WARNING, logger="shared.archive.poll")
    now = services.ledger.clock() + timedelta(minutes=2)
    for polls in range(3):
        report = poll_tick(services, now=now)
        assert not report.errors and report.unknown_status == 1
        strange = row(services, name)
        assert strange.next_poll - now == timedelta(hours=6)  # the slow review cadence
        now = strange.next_poll + timedelta(seconds=1)
    assert strange.state == UPLOADED and strange.get("InqomStatus") == "Archiving" and strange.get("Polls") == 3
    assert strange.get("UnknownStatusLogged") == "Archiving"
    warnings = [r for r in caplog.records if "does not name" in r.getMessage()]
    assert len(warnings) == 1 and "Archiving" in warnings[0].getMessage()

    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["unknown_statuses"] == {"Archiving": 1}
    code, out, _ = cli(capsys, "status")
    assert "Unknown Inqom statuses" in out and "Archiving" in out

    inqom.set_status(entry.get("InqomId"), "Done")  # it becomes one the bridge knows
    poll_tick(services, now=now)
    assert row(services, name).state == ARCHIVED


# --------------------------------------------------------------------------- find it (Azurite)


@pytest.fixture
def archive_set(services, host, inqom):
    """Five archived documents in two folders, as an accountant's archive would hold them."""
    specs = [
        ("11287/supplier/linkedin-mars.pdf", dict(CounterParty="LinkedIn Ireland Unlimited Company", Amount=14.87,
                                                   EffectifDate="2025-03-12T00:00:00Z", DocRef="LI-117")),
        ("11287/supplier/linkedin-avril.pdf", dict(CounterParty="LINKEDIN IRELAND UNLIMITED COMPANY", Amount=1234.00,
                                                    EffectifDate="2025-04-02T00:00:00Z", DocRef="LI-130")),
        ("11287/supplier/loreal.pdf", dict(CounterParty="L'Oréal S.A.", Amount="1 234,00",
                                           EffectifDate="2025-03-20T00:00:00Z")),
        ("11287/client/avoir.pdf", dict(CounterParty="Société Générale", Amount=-250.5,
                                        EffectifDate="2025-03-31T00:00:00Z")),
        ("42/supplier/linkedin-other-folder.pdf", dict(CounterParty="LinkedIn Ireland Unlimited Company",
                                                        Amount=1234, EffectifDate="2025-03-15")),
    ]
    rows = {}
    for i, (name, extracted) in enumerate(specs):
        entry = upload(services, host, name, PDF + bytes([i]))
        inqom.set_status(entry.get("InqomId"), "Done")
        inqom.set_extracted(entry.get("InqomId"), **extracted)
    assert not tick(services).errors
    for name, _ in specs:
        rows[name] = row(services, name)
        assert rows[name].state == ARCHIVED and rows[name].get("TaggedAt")
    return rows


def found(capsys, *criteria):
    code, out, err = cli(capsys, "find", *criteria, "--json")
    assert code == 0, err
    return sorted(m["name"].split("-", 1)[1] for m in json.loads(out)["matches"])


def test_find_by_counterparty_dates_amounts_and_their_combinations(services, archive_set, capsys):
    assert found(capsys, "--counterparty", "linkedin ireland unlimited company") == [
        "linkedin-avril.pdf", "linkedin-mars.pdf", "linkedin-other-folder.pdf"]
    assert found(capsys, "--counterparty", "LinkedIn Ireland Unlimited Company", "--folder", "11287") == [
        "linkedin-avril.pdf", "linkedin-mars.pdf"]
    assert found(capsys, "--counterparty", "L'OREAL SA") == ["loreal.pdf"]
    assert found(capsys, "--counterparty", "linked", "--prefix") == [
        "linkedin-avril.pdf", "linkedin-mars.pdf", "linkedin-other-folder.pdf"]
    assert found(capsys, "--from", "2025-03-01", "--to", "2025-03-31", "--folder", "11287") == [
        "avoir.pdf", "linkedin-mars.pdf", "loreal.pdf"]
    assert found(capsys, "--from", "2025-03-20") == ["avoir.pdf", "linkedin-avril.pdf", "loreal.pdf"]
    assert found(capsys, "--to", "2025-03-12") == ["linkedin-mars.pdf"]
    assert found(capsys, "--min-amount", "1234", "--max-amount", "1234.00") == [
        "linkedin-avril.pdf", "linkedin-other-folder.pdf", "loreal.pdf"]
    assert found(capsys, "--max-amount", "0") == ["avoir.pdf"]  # negatives sort below zero
    assert found(capsys, "--min-amount", "-300", "--max-amount", "20") == ["avoir.pdf", "linkedin-mars.pdf"]
    # "Where is the invoice from supplier X for €1,234 in March?"
    assert found(capsys, "--counterparty", "LinkedIn Ireland Unlimited Company", "--from", "2025-03-01",
                 "--to", "2025-03-31", "--min-amount", "1234", "--max-amount", "1234") == ["linkedin-other-folder.pdf"]
    assert found(capsys, "--docref", "li-117") == ["linkedin-mars.pdf"]
    assert found(capsys, "--kind", "client", "--folder", "11287") == ["avoir.pdf"]
    assert found(capsys, "--counterparty", "x' OR \"inqom_folder\" > '0") == []  # no injection: just no match
    # Account-wide: every container (other tests' archives share this Azurite account too).
    code, out, _ = cli(capsys, "find", "--counterparty", "LinkedIn Ireland Unlimited Company", "--account", "--json")
    matches = json.loads(out)["matches"]
    ours = sorted(m["name"].split("-", 1)[1] for m in matches if m["container"] == services.settings.archive_container)
    assert ours == ["linkedin-avril.pdf", "linkedin-mars.pdf", "linkedin-other-folder.pdf"]


def test_find_prints_a_table_and_json_with_the_original_values(services, archive_set, capsys):
    code, out, _ = cli(capsys, "find", "--folder", "11287", "--from", "2025-03-01", "--to", "2025-03-31")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["PATH", "DATE", "COUNTERPARTY", "AMOUNT", "INQOM", "ID"]
    assert [line.split()[1] for line in lines[1:4]] == ["2025-03-12", "2025-03-20", "2025-03-31"]  # by date
    assert "L'Oréal S.A." in out and "1234.00" in out and "-250.50" in out and "Société Générale" in out
    assert "3 document(s)" in out
    loreal = archive_set["11287/supplier/loreal.pdf"]
    code, out, _ = cli(capsys, "find", "--inqom-id", str(loreal.get("InqomId")), "--json")
    (match,) = json.loads(out)["matches"]
    assert match["path"] == loreal.get("ArchivePath") and match["counterparty"] == "L'Oréal S.A."
    assert match["amount"] == "1234.00" and match["date"] == "2025-03-20" and match["ledger_key"] == loreal.key
    code, out, err = cli(capsys, "find", "--counterparty", "nobody at all")
    assert code == 0 and "no archived document matches" in out
    code, _, err = cli(capsys, "find")
    assert code == 1 and "at least one criterion" in err
    code, _, err = cli(capsys, "find", "--from", "2025-04-01", "--to", "2025-03-01")
    assert code == 1 and "date range is empty" in err
    assert cli(capsys, "find", "--from", "March")[0] == 2


def test_find_downloads_the_matches_with_a_progress_bar(services, archive_set, capsys, tmp_path):
    target = tmp_path / "out"
    code, out, err = cli(capsys, "find", "--counterparty", "LinkedIn Ireland Unlimited Company", "--folder", "11287",
                         "--download", str(target))
    assert code == 0, err
    assert "downloaded 2" in out and "2/2 files" in err  # the progress lines (stderr is no terminal here)
    for name in ("11287/supplier/linkedin-mars.pdf", "11287/supplier/linkedin-avril.pdf"):
        entry = archive_set[name]
        local = target / entry.get("ArchivePath").split("/", 1)[1]
        assert hashlib.sha1(local.read_bytes()).hexdigest().upper() == entry.get("ArchivedSha1")
    code, out, _ = cli(capsys, "find", "--counterparty", "LinkedIn Ireland Unlimited Company", "--folder", "11287",
                       "--download", str(target), "--no-progress")
    assert code == 0 and "downloaded 0" in out and "2 already there" in out  # never overwritten


# --------------------------------------------------------------------------- backfill of tags


def archive_untagged(services, host, inqom, monkeypatch, names):
    """Documents archived as before this change: no tags, no fields on the row."""
    monkeypatch.setattr(archiver, "archive_tags", lambda *a: {})
    monkeypatch.setattr(archiver.ArchiveFields, "from_document", classmethod(lambda cls, d: cls()))
    for i, name in enumerate(names):
        inqom.set_status(upload(services, host, name, PDF + bytes([100 + i])).get("InqomId"), "Done")
    assert not tick(services).errors
    monkeypatch.undo()
    rows = [row(services, n) for n in names]
    assert all(r.state == ARCHIVED and not r.get("TaggedAt") and not r.get("CounterParty") for r in rows)
    return rows


def test_backfill_tags_reads_inqom_once_per_document_tags_and_resumes(services, host, inqom, monkeypatch, capsys):
    names = [f"11287/supplier/old-{i}.pdf" for i in range(3)] + ["11287/other/no-data.pdf"]
    old = archive_untagged(services, host, inqom, monkeypatch, names)
    for i, entry in enumerate(old[:3]):
        inqom.set_extracted(entry.get("InqomId"), CounterParty=f"Fournisseur n°{i}, Lyon", Amount=100 + i,
                            EffectifDate=f"2024-12-0{i + 1}T00:00:00Z")
    blob = archived_blob(services, old[0])
    blob.set_blob_tags({"project": "audit 2024"})  # someone else's tag, kept
    before = blob.get_blob_properties()
    code, _, err = cli(capsys, "status", "--json")
    gets_before = len(inqom.calls("GET", "/Documents/"))

    code, out, err = cli(capsys, "backfill-tags", "--limit", "2")
    assert code == 0, out + err
    assert "tagged 2 archived document(s)" in out and "2/2 documents" in err
    code, out2, err = cli(capsys, "backfill-tags")  # resumes: only the two left
    assert code == 0 and "tagged 2 archived document(s)" in out2 and "skipped 2 already tagged" in out2
    assert "1 without extracted data" in out + out2
    assert len(inqom.calls("GET", "/Documents/")) - gets_before == 4  # one GET per document, no more

    after = blob.get_blob_properties()
    assert (after.etag, after.last_modified, after.metadata) == (before.etag, before.last_modified, before.metadata)
    tags = blob.get_blob_tags()
    assert tags["project"] == "audit 2024" and tags[TAG_COUNTERPARTY] == "fournisseur n 0 lyon"
    assert tags[TAG_AMOUNT] == "p000000010000" and tags[TAG_DATE] == "2024-12-01"
    first = row(services, names[0])
    assert first.get("TaggedAt") and first.get("CounterParty") == "Fournisseur n°0, Lyon"
    assert first.get("AmountCents") == 10000 and first.get("EffectifDate") == "2024-12-01"
    bare = row(services, "11287/other/no-data.pdf")
    assert bare.get("TaggedAt") and archived_blob(services, bare).get_blob_tags()[TAG_ID] == str(bare.get("InqomId"))

    code, out, _ = cli(capsys, "backfill-tags")
    assert code == 0 and "tagged 0" in out and "skipped 4" in out
    assert len(inqom.calls("GET", "/Documents/")) - gets_before == 4  # nothing read again
    assert found(capsys, "--counterparty", "fournisseur n°1, LYON") == ["old-1.pdf"]
    assert json.loads(cli(capsys, "status", "--json")[1])["archived_untagged"] == 0


def test_backfill_tags_waits_out_throttling_and_never_tags_another_rows_copy(services, host, inqom, monkeypatch,
                                                                            capsys):
    first, second = archive_untagged(services, host, inqom, monkeypatch, ["5/supplier/x.pdf", "5/supplier/y.pdf"])
    inqom.inject("429", times=1, path_contains=f"/Documents/{first.get('InqomId')}", method="GET",
                 retry_after=1)  # longer than the tests' retry cap: the client hands the call back
    services.ledger.update(second, ArchivePath=first.get("ArchivePath"))  # as if the row pointed elsewhere
    from inqom_bridge_cli import tagging

    slept = []
    report = tagging.backfill_tags(services, progress=False, sleep=lambda s: (slept.append(s), time.sleep(s)))
    assert report.tagged == [first.get("ArchivePath")], report.failed
    assert slept and slept[0] >= 1  # throttling waited, not failed
    ((failed_row, why),) = report.failed
    assert second.key in failed_row and "another document's copy" in why
    assert row(services, "5/supplier/y.pdf").get("TaggedAt") in (None, "")


def test_dry_run_tags_nothing(services, host, inqom, monkeypatch, capsys):
    (old,) = archive_untagged(services, host, inqom, monkeypatch, ["6/client/dry.pdf"])
    inqom.set_extracted(old.get("InqomId"), CounterParty="ACME")
    code, out, _ = cli(capsys, "backfill-tags", "--dry-run", "--no-progress")
    assert code == 0 and "would tag 1" in out
    assert not archived_blob(services, old).get_blob_tags() and not row(services, "6/client/dry.pdf").get("TaggedAt")
