import pytest

from shared.drop.routing import RoutingError, RoutingRules, route

RULES = RoutingRules(frozenset(), frozenset({"pdf", "jpg", "png"}), max_bytes=1000)


@pytest.mark.parametrize("path, type_scan", [
    ("11287/supplier/F-001.pdf", "Supplier"),
    ("11287/client/Facture été.pdf", "Client"),
    ("11287/other/releve.PNG", "Others"),
])
def test_document_kinds(path, type_scan):
    instruction = route(path, {}, 10, RULES)
    assert instruction.folder_id == 11287
    assert instruction.type_scan == type_scan
    assert instruction.file_name == path.rsplit("/", 1)[1]
    assert not instruction.is_expense_bill


def test_expense_beneficiary_from_path_and_metadata():
    assert route("7/expense/Jeanne Dupont/taxi.jpg", {}, 10, RULES).beneficiary == "Jeanne Dupont"
    from_meta = route("7/expense/taxi.jpg", {"Beneficiary": "Ren%C3%A9 Roux"}, 10, RULES)
    assert from_meta.is_expense_bill and from_meta.beneficiary == "René Roux"
    overridden = route("7/expense/Jeanne/taxi.jpg", {"beneficiary": "Paul"}, 10, RULES)
    assert overridden.beneficiary == "Paul"


def test_metadata_overrides():
    instruction = route("7/supplier/a.pdf", {"DocRef": "PO-9", "sourceid": "erp-1", "withoutworkflow": "TRUE",
                                             "documentname": "Achat mars.pdf"}, 10, RULES)
    assert (instruction.doc_ref, instruction.source_id, instruction.without_workflow, instruction.document_name) == \
        ("PO-9", "erp-1", True, "Achat mars.pdf")


@pytest.mark.parametrize("path, meta, size, reason", [
    ("supplier/a.pdf", {}, 10, "does not match"),
    ("7/supplier/x/a.pdf", {}, 10, "only expense"),
    ("abc/supplier/a.pdf", {}, 10, "not a positive integer"),
    ("0/supplier/a.pdf", {}, 10, "not a positive integer"),
    ("-4/supplier/a.pdf", {}, 10, "not a positive integer"),
    ("7/invoices/a.pdf", {}, 10, "kind"),
    ("7/supplier/a.exe", {}, 10, "'.exe' is not accepted"),
    ("7/supplier/noext", {}, 10, "no extension"),
    ("7/supplier/a\x07b.pdf", {}, 10, "control characters"),
    ("7/supplier/a.pdf", {}, 0, "empty"),
    ("7/supplier/a.pdf", {}, 1001, "1000-byte limit"),
    ("7/expense/a.pdf", {}, 10, "no beneficiary"),
    ("7/supplier/a.pdf", {"withoutworkflow": "maybe"}, 10, "withoutworkflow"),
    ("7/supplier/a.pdf", {"docref": "a%0Ab"}, 10, "docref contains control characters"),
    ("7//a.pdf", {}, 10, "does not match"),
])
def test_refusals_say_why(path, meta, size, reason):
    with pytest.raises(RoutingError, match=reason):
        route(path, meta, size, RULES)


def test_folder_allow_list():
    rules = RoutingRules(frozenset({11287}), RULES.allowed_extensions, RULES.max_bytes)
    assert route("11287/other/a.pdf", {}, 1, rules).folder_id == 11287
    with pytest.raises(RoutingError, match="ALLOWED_FOLDER_IDS"):
        route("42/other/a.pdf", {}, 1, rules)
