"""Tests of the enFact emulator itself (tests/emulators/enfact.py), through plain requests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import requests

from tests.emulators.enfact import DEFAULT_COMPANY, EnfactEmulator, minimal_pdf
from tests.support.emulator_cli import emulator_process

KEY = "sk-unit-test"
COMPANY = "6f1c2b7a-3d4e-4f50-8a61-7b8c9d0e1f23"
OTHER = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def enfact() -> Iterator[EnfactEmulator]:
    with EnfactEmulator(session_key=KEY, companies={COMPANY: [], OTHER: []}) as emulator:
        yield emulator


def headers(company: str = COMPANY, key: str = KEY) -> dict[str, str]:
    return {"X-SESSION-KEY": key, "X-COMPANY-UUID": company}


def get(emulator: EnfactEmulator, path: str, *, company: str = COMPANY,
        params: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", headers(company))
    kwargs.setdefault("timeout", 5)
    return requests.get(emulator.base_url + path, params=params, **kwargs)


def check_pdf(data: bytes) -> int:
    """Parse the cross-reference table; every offset must point at "N 0 obj". Returns N objects."""
    assert data.startswith(b"%PDF-1.")
    assert data.rstrip(b"\r\n").endswith(b"%%EOF")
    startxref = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    assert startxref, "no startxref"
    xref = int(startxref.group(1))
    assert data[xref:].startswith(b"xref"), "startxref does not point at the xref table"
    head = re.match(rb"xref\r?\n(\d+) (\d+)\r?\n", data[xref:])
    assert head is not None
    first, count = int(head.group(1)), int(head.group(2))
    entries_at = xref + head.end()
    assert first == 0 and count >= 2
    for index in range(count):
        entry = data[entries_at + 20 * index: entries_at + 20 * (index + 1)]
        assert re.fullmatch(rb"\d{10} \d{5} [nf](?: \n| \r|\r\n)", entry), entry
        offset, _generation, kind = int(entry[:10]), entry[11:16], entry[17:18]
        if index == 0:
            assert kind == b"f"
            continue
        assert kind == b"n"
        assert re.match(rb"%d 0 obj\b" % index, data[offset:]), (index, data[offset:offset + 20])
    trailer = data[entries_at + 20 * count:]
    assert trailer.startswith(b"trailer")
    assert re.search(rb"/Size %d\b" % count, trailer)
    root = re.search(rb"/Root (\d+) 0 R", trailer)
    assert root and b"/Type /Catalog" in data[data.index(b"%s 0 obj" % root.group(1)):][:200]
    for match in re.finditer(rb"<< /Length (\d+) >>\nstream\n", data):  # stream lengths are right
        end = match.end() + int(match.group(1))
        assert data[end:].startswith(b"\nendstream")
    assert b"/Type /Page " in data and b"/Count 1" in data
    return count - 1


# ------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("sent", [
    {},
    {"X-COMPANY-UUID": COMPANY},
    {"X-SESSION-KEY": KEY},
    {"X-SESSION-KEY": "wrong", "X-COMPANY-UUID": COMPANY},
    {"X-SESSION-KEY": KEY, "X-COMPANY-UUID": "00000000-0000-0000-0000-000000000000"},
    {"X-SESSION-KEY": KEY, "X-COMPANY-UUID": ""},
], ids=["none", "no-key", "no-company", "wrong-key", "unknown-company", "empty-company"])
def test_auth_headers_are_required(enfact: EnfactEmulator, sent: dict[str, str]) -> None:
    invoice = enfact.add_invoice(COMPANY)
    for path in ("/v1/invoices.json", f"/v1/invoices/{invoice['id']}.json",
                 f"/v1/invoices/{invoice['id']}.pdf"):
        response = get(enfact, path, headers=sent)
        assert response.status_code == 403, path
        assert response.headers["Content-Type"].startswith("application/json")
        assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_header_names_are_case_insensitive(enfact: EnfactEmulator) -> None:
    response = get(enfact, "/v1/invoices.json",
                   headers={"x-session-key": KEY, "x-Company-Uuid": COMPANY.upper()})
    assert response.status_code == 200
    assert enfact.calls()[-1].headers["X-SESSION-KEY"] == KEY


def test_default_company_and_key() -> None:
    with EnfactEmulator() as emulator:
        assert emulator.companies == [DEFAULT_COMPANY]
        response = get(emulator, "/v1/invoices.json",
                       headers=headers(DEFAULT_COMPANY, "sk-test-session-key"))
        assert response.status_code == 200
        assert response.json() == {"items": [], "page": 1, "limit": 20, "total": 0, "pages": 0}


# ------------------------------------------------------------------------------- list


def test_list_is_paginated_newest_first(enfact: EnfactEmulator) -> None:
    enfact.page_size = 2
    created = [enfact.add_invoice(COMPANY, date=f"2026-03-0{day}") for day in (3, 1, 2, 2, 5)]
    enfact.add_invoice(OTHER, date="2026-03-04")  # never listed for COMPANY
    assert [c["id"] for c in created] == [5001, 5002, 5003, 5004, 5005]
    assert [c["number"] for c in created] == [f"F2026-000{n}" for n in range(1, 6)]

    pages = [get(enfact, "/v1/invoices.json", params={"page": page}).json() for page in (1, 2, 3, 4)]
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    assert all(p["limit"] == 2 and p["total"] == 5 and p["pages"] == 3 for p in pages)
    ids = [item["id"] for p in pages for item in p["items"]]
    assert ids == [5005, 5001, 5004, 5003, 5002]  # by date, then id, descending
    assert pages[3]["items"] == []
    item = pages[0]["items"][0]
    assert item == {"id": 5005, "number": "F2026-0005", "date": "2026-03-05",
                    "customer_name": "Client SA", "total": 121.0, "status": "sent",
                    "modified": item["modified"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["modified"])
    assert enfact.invoices(COMPANY) == [i for p in pages for i in p["items"]]

    everything = get(enfact, "/v1/invoices.json", params={"limit": 100}).json()
    assert [i["id"] for i in everything["items"]] == ids and everything["pages"] == 1


def test_list_date_filter(enfact: EnfactEmulator) -> None:
    for day in ("2026-01-31", "2026-02-01", "2026-02-15", "2026-03-01"):
        enfact.add_invoice(COMPANY, date=day)
    listed = get(enfact, "/v1/invoices.json", params={"date_from": "2026-02-01"}).json()
    assert [i["date"] for i in listed["items"]] == ["2026-03-01", "2026-02-15", "2026-02-01"]
    assert listed["total"] == 3
    window = get(enfact, "/v1/invoices.json",
                 params={"date_from": "2026-02-01", "date_to": "2026-02-15"}).json()
    assert [i["date"] for i in window["items"]] == ["2026-02-15", "2026-02-01"]
    none = get(enfact, "/v1/invoices.json", params={"date_from": "2027-01-01"}).json()
    assert none["items"] == [] and none["total"] == 0 and none["pages"] == 0


@pytest.mark.parametrize("params", [
    {"page": "0"}, {"page": "x"}, {"limit": "0"}, {"limit": "101"}, {"limit": "-1"},
    {"date_from": "01/02/2026"}, {"date_from": "2026-02-30"}, {"date_to": "yesterday"},
])
def test_list_rejects_bad_parameters(enfact: EnfactEmulator, params: dict[str, str]) -> None:
    response = get(enfact, "/v1/invoices.json", params=params)
    assert response.status_code == 400
    assert response.json()["error"]


# ---------------------------------------------------------------------- detail, documents


def test_detail(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY, number="INV-7", date=date(2026, 4, 1),
                                 customer="Dupont & Fils", total=242.0)
    response = get(enfact, f"/v1/invoices/{invoice['id']}.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body == invoice == enfact.invoice(invoice["id"])
    assert {k: body[k] for k in ("id", "number", "date", "total", "currency", "status")} == {
        "id": 5001, "number": "INV-7", "date": "2026-04-01", "total": 242.0,
        "currency": "EUR", "status": "sent"}
    assert body["customer"] == {"name": "Dupont & Fils", "vat": "BE0123456789"}
    assert body["lines"] == [{"description": "Prestation de services (INV-7)", "quantity": 1.0,
                              "unit_price": 200.0, "vat_rate": 21.0, "total": 200.0}]


def test_add_invoice_defaults_and_validation(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY)
    assert invoice["date"] == date.today().isoformat()
    assert invoice["number"] == f"F{date.today().year}-0001"
    assert enfact.add_invoice(COMPANY, invoice_id=9000)["id"] == 9000
    with pytest.raises(ValueError):
        enfact.add_invoice(COMPANY, invoice_id=9000)
    with pytest.raises(ValueError):
        enfact.add_invoice(COMPANY, date="2026-1-2")
    with pytest.raises(KeyError):
        enfact.add_invoice("no-such-company")
    seeded = EnfactEmulator(companies={COMPANY: [{"id": 42, "customer_name": "X", "total": 10}]})
    assert seeded.invoices(COMPANY)[0]["id"] == 42 and seeded.invoices(COMPANY)[0]["total"] == 10.0
    with pytest.raises(ValueError):
        EnfactEmulator(companies={COMPANY: [{"colour": "red"}]})


def test_pdf_is_valid_and_served(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY, number="F2026-0042", customer="Café (Liège) \\ SA")
    response = get(enfact, f"/v1/invoices/{invoice['id']}.pdf")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.content == enfact.pdf_for(invoice["id"])
    assert check_pdf(response.content) == 5
    assert b"(Facture F2026-0042)" in response.content
    assert b"(Client: Caf\xe9 \\(Li\xe8ge\\) \\\\ SA)" in response.content
    # each invoice's PDF differs (Inqom rejects identical files as duplicates)
    other = enfact.add_invoice(COMPANY, number="F2026-0042")
    assert enfact.pdf_for(other["id"]) != response.content
    check_pdf(minimal_pdf([]))


def test_given_pdf_is_served_verbatim(enfact: EnfactEmulator) -> None:
    payload = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    invoice = enfact.add_invoice(COMPANY, pdf=payload)
    assert get(enfact, f"/v1/invoices/{invoice['id']}.pdf").content == payload


def test_html_and_xml(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY, number="F<1>")
    html = get(enfact, f"/v1/invoices/{invoice['id']}.html")
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert "F&lt;1&gt;" in html.text
    xml = get(enfact, f"/v1/invoices/{invoice['id']}.xml")
    assert xml.status_code == 200 and xml.headers["Content-Type"].startswith("application/xml")
    assert "<number>F&lt;1&gt;</number>" in xml.text


def test_not_found_and_wrong_method(enfact: EnfactEmulator) -> None:
    mine = enfact.add_invoice(COMPANY)
    theirs = enfact.add_invoice(OTHER)
    for path in (f"/v1/invoices/{theirs['id']}.json", f"/v1/invoices/{theirs['id']}.pdf",
                 "/v1/invoices/999999.json", "/v1/invoices/abc.json", "/v1/invoices/.pdf"):
        response = get(enfact, path)
        assert response.status_code == 404, path
        assert response.json()["error"]
    for path in ("/v1/invoices", "/v1/invoices.pdf", f"/v1/invoices/{mine['id']}.docx",
                 "/v1/customers.json", "/"):
        assert get(enfact, path).status_code == 404, path
    response = requests.post(enfact.base_url + "/v1/invoices.json", headers=headers(), json={}, timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    assert requests.delete(f"{enfact.base_url}/v1/invoices/{mine['id']}.json",
                           headers=headers(), timeout=5).status_code == 405
    enfact.remove_invoice(COMPANY, mine["id"])
    assert get(enfact, f"/v1/invoices/{mine['id']}.json").status_code == 404
    with pytest.raises(KeyError):
        enfact.remove_invoice(COMPANY, theirs["id"])
    assert enfact.internal_errors == []


# ------------------------------------------------------------------------------ faults


def test_500_then_success(enfact: EnfactEmulator) -> None:
    enfact.inject("500", path_contains="/v1/invoices.json")
    first = get(enfact, "/v1/invoices.json")
    assert first.status_code == 500 and first.json()["error"]
    assert get(enfact, "/v1/invoices.json").status_code == 200
    assert [(c.status, c.fault) for c in enfact.calls()] == [(500, "500"), (200, None)]


def test_faults_are_matched_by_method_and_path(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY)
    enfact.inject("502", times=2, path_contains=".pdf", method="get")
    assert get(enfact, "/v1/invoices.json").status_code == 200
    assert [get(enfact, f"/v1/invoices/{invoice['id']}.pdf").status_code for _ in range(3)] == [502, 502, 200]
    enfact.inject("503", retry_after=1)
    response = get(enfact, "/v1/invoices.json", headers={})  # faults come before auth
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    with pytest.raises(ValueError):
        enfact.inject("418")


def test_drop_fault(enfact: EnfactEmulator) -> None:
    enfact.inject("drop")
    with pytest.raises(requests.ConnectionError):
        get(enfact, "/v1/invoices.json")
    assert get(enfact, "/v1/invoices.json").status_code == 200
    assert [(c.status, c.fault) for c in enfact.calls()] == [(None, "drop"), (200, None)]


def test_429_with_retry_after(enfact: EnfactEmulator) -> None:
    enfact.inject("429", retry_after=3)
    response = get(enfact, "/v1/invoices.json")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["error"]


def test_slow_fault(enfact: EnfactEmulator) -> None:
    enfact.inject("slow", delay=0.3)
    started = time.monotonic()
    assert get(enfact, "/v1/invoices.json").status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        enfact.inject("slow", delay=1.0)
        get(enfact, "/v1/invoices.json", timeout=0.2)


def test_random_faults_are_seeded(enfact: EnfactEmulator) -> None:
    def run() -> list[int]:
        enfact.seed = 1234
        return [get(enfact, "/v1/invoices.json").status_code for _ in range(30)]

    enfact.error_rate = 0.5
    first = run()
    assert first == run()
    assert set(first) == {200, 500, 429}
    enfact.error_rate = 0.0
    with pytest.raises(ValueError):
        enfact.error_kinds = ["teapot"]


# --------------------------------------------------------------------- recording, misc


def test_requests_are_recorded(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY)
    get(enfact, "/v1/invoices.json", params={"page": 1, "date_from": "2026-01-01"})
    get(enfact, f"/v1/invoices/{invoice['id']}.pdf")
    get(enfact, "/v1/invoices.json", headers={})
    listed = enfact.calls("get", "/v1/invoices.json")
    assert len(listed) == 2 and len(enfact.requests) == 3
    assert listed[0].query == {"page": ["1"], "date_from": ["2026-01-01"]}
    assert listed[0].headers["x-company-uuid"] == COMPANY and listed[0].status == 200
    assert listed[1].status == 403 and "X-SESSION-KEY" not in listed[1].headers
    assert enfact.calls(path_contains=".pdf")[0].path == f"/v1/invoices/{invoice['id']}.pdf"
    assert enfact.calls("POST") == []
    enfact.reset_requests()
    assert enfact.requests == []


def test_keep_alive_and_content_length(enfact: EnfactEmulator) -> None:
    invoice = enfact.add_invoice(COMPANY)
    with requests.Session() as session:
        session.headers.update(headers())
        for path in ("/v1/invoices.json", f"/v1/invoices/{invoice['id']}.pdf", "/nope",
                     f"/v1/invoices/{invoice['id']}.json"):
            response = session.get(enfact.base_url + path, timeout=5)
            assert int(response.headers["Content-Length"]) == len(response.content)
    assert len(enfact.requests) == 4


def test_stop_and_restart() -> None:
    emulator = EnfactEmulator(session_key=KEY, companies={COMPANY: []})
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    emulator.add_invoice(COMPANY)
    with emulator:
        url = emulator.base_url
        assert get(emulator, "/v1/invoices.json").json()["total"] == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/v1/invoices.json", headers=headers(), timeout=2)


def test_command_line() -> None:
    with emulator_process("tests.emulators.enfact", "--port", "0", "--session-key", "k",
                          "--company", COMPANY, "--invoices", "3") as info:
        assert info["companies"] == [COMPANY] and info["session_key"] == "k"
        response = requests.get(info["base_url"] + "/v1/invoices.json",
                                headers={"X-SESSION-KEY": "k", "X-COMPANY-UUID": COMPANY}, timeout=5)
        assert response.status_code == 200 and response.json()["total"] == 3
        assert response.json()["items"][0]["date"] == date.today().isoformat()
