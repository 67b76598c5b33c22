"""Tests of the Inqom emulator itself (tests/emulators/inqom.py), through plain requests."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.emulators.inqom import InqomEmulator
from tests.support.emulator_cli import emulator_process

FOLDER = 11287
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 9  # 2313 bytes: Size 3 (kB, rounded up)
MB = 1024 * 1024
_PATTERN = random.Random(7).randbytes(64 * 1024)


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def inqom() -> Iterator[InqomEmulator]:
    with InqomEmulator() as emulator:
        yield emulator


def token_form(emulator: InqomEmulator) -> dict[str, str]:
    return {
        "username": emulator.username,
        "password": emulator.password,
        "grant_type": "password",
        "scope": "openid apidata",
        "client_id": emulator.client_id,
        "client_secret": emulator.client_secret,
    }


def auth(emulator: InqomEmulator) -> dict[str, str]:
    response = requests.post(emulator.token_url, data=token_form(emulator), timeout=5)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def documents_url(emulator: InqomEmulator, folder: int | str = FOLDER) -> str:
    return f"{emulator.base_url}/api/accounting-documents/accounting-folders/{folder}/Documents"


def expense_bills_url(emulator: InqomEmulator, folder: int = FOLDER) -> str:
    return f"{emulator.base_url}/api/v1/accounting-folders/{folder}/expense-bills"


def upload(emulator: InqomEmulator, headers: dict[str, str], content: bytes = PDF,
           name: str = "invoice.pdf", folder: int | str = FOLDER,
           **fields: str) -> requests.Response:
    data = {"TypeScan": "Supplier", "FileSource": "Api", **fields}
    return requests.post(documents_url(emulator, folder), headers=headers, data=data,
                         files={"Document": (name, content, "application/pdf")}, timeout=5)


def get_document(emulator: InqomEmulator, headers: dict[str, str], doc_id: int,
                 folder: int = FOLDER) -> dict[str, Any]:
    response = requests.get(f"{documents_url(emulator, folder)}/{doc_id}", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert isinstance(payload, list) and len(payload) == 1
    document: dict[str, Any] = payload[0]
    return document


def public_url(emulator: InqomEmulator, headers: dict[str, str], doc_id: int) -> str:
    response = requests.get(f"{documents_url(emulator)}/{doc_id}/public-url", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    url = response.json()
    assert isinstance(url, str)
    return url


def memory_kb(name: str) -> int:
    """VmRSS / VmHWM of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


class StreamedMultipart:
    """A multipart/form-data body made on the fly: plain fields, then one big file part.

    Readable (``read``/``len``, so requests sends a Content-Length) or iterable in
    chunks (``chunks()``, so requests sends it chunked); never held in memory.
    """

    def __init__(self, fields: dict[str, str], file_field: str, filename: str, size: int) -> None:
        self.boundary = f"----emulator-test-{uuid.uuid4().hex}"
        head = "".join(f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                       f"{value}\r\n" for name, value in fields.items())
        head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                 f'filename="{filename}"\r\nContent-Type: application/pdf\r\n\r\n')
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._size = size
        self.len = len(self._head) + size + len(self._tail)
        self._position = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @staticmethod
    def file_chunks(size: int) -> Iterator[bytes]:
        for offset in range(0, size, len(_PATTERN)):
            yield _PATTERN[:min(len(_PATTERN), size - offset)]

    @classmethod
    def file_sha1(cls, size: int) -> str:
        digest = hashlib.sha1()
        for chunk in cls.file_chunks(size):
            digest.update(chunk)
        return digest.hexdigest().upper()

    def chunks(self) -> Iterator[bytes]:
        yield self._head
        yield from self.file_chunks(self._size)
        yield self._tail

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        wanted = self.len - self._position if size < 0 else size
        out = bytearray()
        while len(out) < wanted and self._position < self.len:
            position, missing = self._position, wanted - len(out)
            file_start, file_end = len(self._head), len(self._head) + self._size
            if position < file_start:
                piece = self._head[position:position + missing]
            elif position < file_end:
                offset = (position - file_start) % len(_PATTERN)
                piece = _PATTERN[offset:offset + min(missing, file_end - position)]
            else:
                piece = self._tail[position - file_end:position - file_end + missing]
            out += piece
            self._position += len(piece)
        return bytes(out)


# ------------------------------------------------------------------------------ token


def test_token_exact_form_is_accepted(inqom: InqomEmulator) -> None:
    response = requests.post(inqom.token_url, data=token_form(inqom), timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "openid apidata" and len(body["access_token"]) >= 32
    recorded = inqom.token_calls()
    assert len(recorded) == 1 and recorded[0].form == token_form(inqom)
    assert recorded[0].headers["content-type"] == "application/x-www-form-urlencoded"


def test_token_password_with_reserved_characters_must_be_encoded() -> None:
    with InqomEmulator(password="p@ss+w&rd= %é;") as emulator:
        assert requests.post(emulator.token_url, data=token_form(emulator), timeout=5).status_code == 200
        raw = "&".join(f"{name}={value}" for name, value in token_form(emulator).items())
        response = requests.post(emulator.token_url, data=raw.encode(), timeout=5, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 400


@pytest.mark.parametrize(("change", "named"), [
    (lambda form: form.pop("scope"), "scope"),
    (lambda form: form.pop("client_secret"), "client_secret"),
    (lambda form: form.update(resource="api"), "resource"),
    (lambda form: form.update(grant_type="client_credentials"), "grant_type"),
    (lambda form: form.update(scope="apidata openid"), "scope"),
    (lambda form: form.update(scope="openid"), "scope"),
])
def test_token_form_deviation_is_invalid_request(inqom: InqomEmulator, change: Any, named: str) -> None:
    form = token_form(inqom)
    change(form)
    response = requests.post(inqom.token_url, data=form, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["error_description"]


def test_token_duplicate_field_is_invalid_request(inqom: InqomEmulator) -> None:
    pairs = [*token_form(inqom).items(), ("scope", "openid apidata")]
    response = requests.post(inqom.token_url, data=pairs, timeout=5)
    assert response.status_code == 400
    assert "more than once: scope" in response.json()["error_description"]


@pytest.mark.parametrize("how", ["json", "multipart", "query"])
def test_token_form_must_be_url_encoded_body(inqom: InqomEmulator, how: str) -> None:
    form = token_form(inqom)
    if how == "json":
        response = requests.post(inqom.token_url, json=form, timeout=5)
    elif how == "multipart":
        response = requests.post(inqom.token_url, files={k: (None, v) for k, v in form.items()}, timeout=5)
    else:
        response = requests.post(inqom.token_url, params=form, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(("field", "error"), [
    ("password", "invalid_grant"), ("username", "invalid_grant"),
    ("client_secret", "invalid_client"), ("client_id", "invalid_client"),
])
def test_token_wrong_credentials(inqom: InqomEmulator, field: str, error: str) -> None:
    form = {**token_form(inqom), field: "wrong"}
    response = requests.post(inqom.token_url, data=form, timeout=5)
    assert response.status_code == 400 and response.json() == {"error": error}


# ------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic dXNlcjpwdw=="}])
def test_api_without_valid_token_is_403(inqom: InqomEmulator, headers: dict[str, str]) -> None:
    response = upload(inqom, headers)
    assert response.status_code == 403 and "Message" in response.json()
    assert requests.get(f"{documents_url(inqom)}/1", headers=headers, timeout=5).status_code == 403
    assert inqom.document_count() == 0


def test_expired_tokens_get_403() -> None:
    with InqomEmulator(token_ttl=0.3) as emulator:
        headers = auth(emulator)
        assert upload(emulator, headers).status_code == 200
        time.sleep(0.4)
        assert upload(emulator, headers, b"other").status_code == 403
        fresh = auth(emulator)
        assert upload(emulator, fresh, b"other").status_code == 200
        emulator.expire_tokens()
        assert upload(emulator, fresh, b"third").status_code == 403


# ----------------------------------------------------------------------------- upload


def test_upload_returns_the_document_and_records_the_form(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    response = upload(inqom, headers, name="Facture é.pdf", DocRef="F-1", SourceId="src-1",
                      WithoutWorkflow="true", DocumentName="Invoice F-1.pdf")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    document = response.json()
    sha1 = hashlib.sha1(PDF).hexdigest().upper()
    assert document["Checksum"] == sha1 and document["Size"] == 3
    assert document["Status"] == "Received" and document["Type"] == "Supplier"
    assert document["Name"] == "Invoice F-1.pdf" and document["OriginalName"] == "Facture é.pdf"
    assert document["SourceId"] == "src-1" and document["DocRef"] == "F-1"
    assert document["AccountingFolderId"] == FOLDER and document["Source"] == "Api"
    assert document["ContentSource"] == "DocData" and document["CreatedAt"].endswith("Z")
    assert "OrigineId" not in document and "DeletedAt" not in document
    assert inqom.documents == {document["Id"]: document} and inqom.document_count() == 1

    recorded = inqom.calls("post", "/Documents")[-1]
    assert recorded.status == 200 and recorded.fault is None
    assert recorded.form == {"TypeScan": "Supplier", "FileSource": "Api", "DocRef": "F-1",
                             "SourceId": "src-1", "WithoutWorkflow": "true",
                             "DocumentName": "Invoice F-1.pdf"}
    assert recorded.files["Document"].data == PDF
    assert recorded.files["Document"].sha1_hex_upper == sha1
    assert recorded.files["Document"].filename == "Facture é.pdf"
    assert recorded.headers["authorization"] == headers["Authorization"]


def test_upload_accepts_trailing_slash(inqom: InqomEmulator) -> None:
    response = requests.post(documents_url(inqom) + "/", headers=auth(inqom),
                             data={"TypeScan": "Client", "FileSource": "Api"},
                             files={"Document": ("a.pdf", PDF)}, timeout=5)
    assert response.status_code == 200 and response.json()["Type"] == "Client"


@pytest.mark.parametrize(("data", "files", "named"), [
    ({"Sourceld": "x"}, None, "Sourceld"),
    ({"typescan": "Supplier"}, None, "typescan"),
    ({}, {"File": ("a.pdf", PDF)}, "File"),
    ({"TypeScan": "Purchase"}, None, "TypeScan"),
    ({"TypeScan": ""}, None, "TypeScan"),
    ({"FileSource": "API"}, None, "FileSource"),
    ({"WithoutWorkflow": "True"}, None, "WithoutWorkflow"),
    ({}, {"Other": ("a.pdf", PDF)}, "Document"),
    ({}, {"Document": ("a.pdf", b"")}, "Document is empty"),
    ({}, {"Document": (None, "not a file")}, "must be a file part"),
    ({}, {"Document": ("a.pdf", PDF), "TypeScan": ("t.txt", b"Supplier")}, "plain form field"),
    ({"TypeScan": ["Supplier", "Client"]}, None, "more than once"),
])
def test_upload_form_validation(inqom: InqomEmulator, data: dict[str, Any],
                                files: dict[str, Any] | None, named: str) -> None:
    form = {"TypeScan": "Supplier", "FileSource": "Api", **data}
    parts = files if files is not None else {"Document": ("a.pdf", PDF)}
    response = requests.post(documents_url(inqom), headers=auth(inqom), data=form, files=parts, timeout=5)
    assert response.status_code == 400
    assert named in response.json()["Message"]
    assert inqom.document_count() == 0
    assert inqom.temp_dir is not None and os.listdir(inqom.temp_dir) == []


def test_upload_must_be_multipart(inqom: InqomEmulator) -> None:
    response = requests.post(documents_url(inqom), headers=auth(inqom), timeout=5,
                             data={"TypeScan": "Supplier", "FileSource": "Api", "Document": "x"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["Message"]


@pytest.mark.parametrize("folder", ["abc", "0", "-3"])
def test_upload_folder_id_must_be_positive_integer(inqom: InqomEmulator, folder: str) -> None:
    assert upload(inqom, auth(inqom), folder=folder).status_code == 400


def test_folder_access(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    inqom.unknown_folders = {5}
    inqom.forbidden_folders = {6}
    assert upload(inqom, headers, folder=5).status_code == 404
    assert upload(inqom, headers, folder=6).status_code == 403
    inqom.folders = {FOLDER}
    assert upload(inqom, headers, folder=7).status_code == 404
    assert upload(inqom, headers).status_code == 200
    assert inqom.document_count() == 1


def test_unknown_route_and_wrong_method(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    assert requests.get(f"{inqom.base_url}/api/nothing", headers=headers, timeout=5).status_code == 404
    assert requests.get(f"{inqom.base_url}/api/accounting-documents/accounting-folders/1/documents/1",
                        headers=headers, timeout=5).status_code == 404
    response = requests.delete(f"{documents_url(inqom)}/1", headers=headers, timeout=5)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    assert requests.get(inqom.token_url, timeout=5).status_code == 405


def test_small_parts_are_kept_in_memory_large_ones_are_not() -> None:
    with InqomEmulator(max_memory_part=16) as emulator:
        headers = auth(emulator)
        assert upload(emulator, headers, b"x" * 16).status_code == 200
        assert upload(emulator, headers, b"y" * 17).status_code == 200
        first, second = (call.files["Document"] for call in emulator.calls("POST", "/Documents"))
        assert first.data == b"x" * 16
        assert second.data is None and second.size == 17
        assert second.sha1_hex_upper == hashlib.sha1(b"y" * 17).hexdigest().upper()


# ------------------------------------------------------------------ documents & status


def test_duplicates_and_deleted_documents(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    first = upload(inqom, headers).json()
    duplicate = upload(inqom, headers, name="again.pdf").json()
    assert duplicate["Status"] == "Duplicate" and duplicate["OrigineId"] == first["Id"]
    assert duplicate["Checksum"] == first["Checksum"]
    third = upload(inqom, headers).json()
    assert third["OrigineId"] == first["Id"]
    for _ in range(3):
        assert get_document(inqom, headers, duplicate["Id"])["Status"] == "Duplicate"
    assert upload(inqom, headers, folder=FOLDER + 1).json()["Status"] == "Received"

    inqom.set_status(first["Id"], "Deleted")
    deleted = get_document(inqom, headers, first["Id"])
    assert deleted["Status"] == "Deleted" and deleted["DeletedAt"].endswith("Z")
    inqom.set_status(duplicate["Id"], "Deleted")
    inqom.set_status(third["Id"], "Deleted")
    assert upload(inqom, headers).json()["Status"] == "Received"

    inqom.use_origine_typo = False
    assert get_document(inqom, headers, duplicate["Id"])["OriginId"] == first["Id"]


def test_status_progression_per_polls() -> None:
    with InqomEmulator(polls_per_step=2, status_flow=("Received", "Processing", "Done")) as emulator:
        headers = auth(emulator)
        doc_id = upload(emulator, headers).json()["Id"]
        seen = [get_document(emulator, headers, doc_id)["Status"] for _ in range(5)]
        assert seen == ["Received", "Processing", "Processing", "Done", "Done"]
        assert emulator.documents[doc_id]["Status"] == "Done"  # looking does not poll


def test_flow_overrides(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    inqom.flow_for_name["locked.pdf"] = ("Received", "ManualProcessing")
    locked = upload(inqom, headers, b"locked", name="locked.pdf").json()
    assert get_document(inqom, headers, locked["Id"])["Status"] == "ManualProcessing"

    doc_id = upload(inqom, headers).json()["Id"]
    inqom.set_flow(doc_id, ("ToReview", "Done"))
    assert inqom.documents[doc_id]["Status"] == "ToReview"
    assert get_document(inqom, headers, doc_id)["Status"] == "Done"

    inqom.set_status(doc_id, "ManualProcessing", ["ExerciseLockedForDates"])
    for _ in range(2):
        document = get_document(inqom, headers, doc_id)
        assert document["Status"] == "ManualProcessing"
        assert document["StatusReasons"] == "ExerciseLockedForDates"
        assert document["StatusReason"] == "ExerciseLockedForDates"
    inqom.status_reasons_as_list = True
    assert get_document(inqom, headers, doc_id)["StatusReasons"] == ["ExerciseLockedForDates"]

    with pytest.raises(ValueError):
        inqom.set_status(doc_id, "Finished")
    with pytest.raises(KeyError):
        inqom.set_flow(999, ("Done",))


def test_get_document_shape_and_404(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    doc_id = upload(inqom, headers).json()["Id"]
    assert get_document(inqom, headers, doc_id)["StatusReasons"] == "None"
    inqom.get_as_array = False
    response = requests.get(f"{documents_url(inqom)}/{doc_id}", headers=headers, timeout=5)
    assert isinstance(response.json(), dict) and response.json()["Id"] == doc_id
    for url in (f"{documents_url(inqom, FOLDER + 1)}/{doc_id}", f"{documents_url(inqom)}/{doc_id + 1}"):
        assert requests.get(url, headers=headers, timeout=5).status_code == 404


# ----------------------------------------------------------------------- expense bills


def test_expense_bill(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    response = requests.post(expense_bills_url(inqom), headers=headers, timeout=5, data={
        "BeneficiaryFullName": "Jeanne Martin", "FileNameWithExtension": "taxi.pdf",
        "DocumentReference": "NDF-7"}, files={"File": ("upload.bin", PDF, "application/pdf")})
    assert response.status_code == 200
    assert list(response.json()) == ["DocumentId"]
    document = get_document(inqom, headers, response.json()["DocumentId"])
    assert document["UserDefinedThirdPartyName"] == "Jeanne Martin"
    assert document["Name"] == "taxi.pdf" and document["DocRef"] == "NDF-7"
    assert document["Type"] == "Others" and document["Checksum"] == hashlib.sha1(PDF).hexdigest().upper()


@pytest.mark.parametrize(("data", "files", "named"), [
    ({"BeneficiaryFullName": " "}, None, "BeneficiaryFullName"),
    ({"FileNameWithExtension": "taxi"}, None, "FileNameWithExtension"),
    ({"DocumentRef": "x"}, None, "DocumentRef"),
    ({}, {"Document": ("a.pdf", PDF)}, "Document"),
    ({}, {"File": ("a.pdf", b"")}, "File is empty"),
])
def test_expense_bill_validation(inqom: InqomEmulator, data: dict[str, str],
                                 files: dict[str, Any] | None, named: str) -> None:
    form = {"BeneficiaryFullName": "Jeanne Martin", "FileNameWithExtension": "taxi.pdf", **data}
    response = requests.post(expense_bills_url(inqom), headers=auth(inqom), data=form, timeout=5,
                             files=files if files is not None else {"File": ("a.pdf", PDF)})
    assert response.status_code == 400 and named in response.json()["Message"]
    assert inqom.document_count() == 0


# ------------------------------------------------------------------------- public url


def test_public_url_download(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    doc_id = upload(inqom, headers, name="Facture n°1.pdf").json()["Id"]
    url = public_url(inqom, headers, doc_id)
    assert url.startswith(f"{inqom.base_url}/public/") and "/Facture%20n%C2%B01.pdf?" in url
    response = requests.get(url, timeout=5)
    assert response.status_code == 200 and response.content == PDF
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Length"] == str(len(PDF))

    tampered = url.replace("sig=", "sig=A")
    assert requests.get(tampered, timeout=5).status_code == 403
    unknown = url.replace("/public/", "/public/x")
    assert requests.get(unknown, timeout=5).status_code == 404


def test_public_url_expires() -> None:
    with InqomEmulator(public_url_ttl=0.2) as emulator:
        headers = auth(emulator)
        doc_id = upload(emulator, headers).json()["Id"]
        url = public_url(emulator, headers, doc_id)
        time.sleep(0.3)
        response = requests.get(url, timeout=5)
        assert response.status_code == 403
        assert "AuthenticationFailed" in response.text and "expired" in response.text

        emulator.public_url_ttl = 60
        url = public_url(emulator, headers, doc_id)
        assert requests.get(url, timeout=5).status_code == 200
        emulator.expire_public_urls()
        assert requests.get(url, timeout=5).status_code == 403


def test_corrupt_and_redirected_downloads(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    doc_id = upload(inqom, headers).json()["Id"]
    url = public_url(inqom, headers, doc_id)
    inqom.corrupt_next_downloads = 1
    corrupt = requests.get(url, timeout=5).content
    assert len(corrupt) == len(PDF) and corrupt != PDF
    assert requests.get(url, timeout=5).content == PDF

    inqom.redirect_public_to = "http://other-host.invalid:1/x"
    response = requests.get(url, timeout=5, allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"] == "http://other-host.invalid:1/x"


# ----------------------------------------------------------------------------- faults


def test_scripted_status_faults(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    inqom.inject("503", times=2, path_contains="/Documents")
    inqom.inject("429", path_contains="/Documents", retry_after=2)
    assert [upload(inqom, headers).status_code for _ in range(2)] == [503, 503]
    limited = upload(inqom, headers)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert upload(inqom, headers).status_code == 200
    assert [call.fault for call in inqom.calls("POST", "/Documents")] == ["503", "503", "429", None]
    assert inqom.document_count() == 1

    inqom.inject("500", method="GET")
    assert upload(inqom, headers, b"two").status_code == 200
    assert requests.get(f"{documents_url(inqom)}/1", headers=headers, timeout=5).status_code == 500
    inqom.inject("400")
    assert upload(inqom, headers, b"three").json() == {"Message": "The request is invalid."}
    inqom.inject("403")
    assert upload(inqom, headers, b"three").status_code == 403
    inqom.inject("504")
    assert upload(inqom, headers, b"four").status_code == 504
    with pytest.raises(ValueError):
        inqom.inject("505")


def test_drop_faults(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    inqom.inject("drop", path_contains="/Documents")
    with pytest.raises(requests.ConnectionError):
        upload(inqom, headers)
    assert inqom.document_count() == 0
    inqom.inject("drop_after_process", path_contains="/Documents")
    with pytest.raises(requests.ConnectionError):
        upload(inqom, headers)
    assert inqom.document_count() == 1  # the response was lost, not the document
    assert [(c.status, c.fault) for c in inqom.calls("POST", "/Documents")] == [
        (None, "drop"), (None, "drop_after_process")]
    assert upload(inqom, headers).json()["Status"] == "Duplicate"


@pytest.mark.parametrize("kind, body", [("ok_empty_array", []), ("ok_no_id", None)])
def test_odd_answer_faults_process_then_answer_200(inqom: InqomEmulator, kind, body) -> None:
    headers = auth(inqom)
    inqom.inject(kind, path_contains="/Documents")
    reply = upload(inqom, headers)
    assert reply.status_code == 200 and inqom.document_count() == 1
    if body is not None:
        assert reply.json() == body
    else:
        assert "Id" not in reply.json() and reply.json()["Status"] == "Received"


def test_document_list_pages_newest_first(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    ids = [upload(inqom, headers, bytes([i])).json()["Id"] for i in range(3)]
    page = requests.get(documents_url(inqom), params={"pageNumber": 1, "pageSize": 2}, headers=headers, timeout=5)
    assert [d["Id"] for d in page.json()] == ids[::-1][:2]
    rest = requests.get(documents_url(inqom), params={"pageNumber": 2, "pageSize": 2}, headers=headers, timeout=5)
    assert [d["Id"] for d in rest.json()] == ids[:1]
    refused = requests.get(documents_url(inqom), params={"pageSize": 1000}, headers=headers, timeout=5)
    assert refused.status_code == 400


def test_slow_fault(inqom: InqomEmulator) -> None:
    headers = auth(inqom)
    inqom.inject("slow", delay=0.3, path_contains="/Documents")
    started = time.monotonic()
    assert upload(inqom, headers).status_code == 200
    assert time.monotonic() - started >= 0.3
    inqom.inject("slow", delay=0.5, path_contains="/Documents")
    with pytest.raises(requests.ReadTimeout):
        requests.post(documents_url(inqom), headers=headers, timeout=(5, 0.1),
                      data={"TypeScan": "Supplier", "FileSource": "Api"},
                      files={"Document": ("b.pdf", b"other")})


def test_random_faults(inqom: InqomEmulator) -> None:
    inqom.error_rate, inqom.error_kinds = 1.0, ("502",)
    headers = auth(inqom)  # the token endpoint is spared ...
    assert upload(inqom, headers).status_code == 502
    inqom.random_faults_on_all = True  # ... unless asked
    assert requests.post(inqom.token_url, data=token_form(inqom), timeout=5).status_code == 502
    with pytest.raises(ValueError):
        inqom.error_kinds = ("505",)

    def statuses(seed: int) -> list[int]:
        with InqomEmulator() as emulator:
            emulator.seed, emulator.error_rate = seed, 0.5
            emulator.error_kinds = ("500", "429")
            token = auth(emulator)
            return [upload(emulator, token, bytes([i])).status_code for i in range(12)]

    drawn = statuses(3)
    assert drawn == statuses(3) and {200, 500, 429} <= set(drawn)


# ----------------------------------------------------------------- transport & memory


def test_keep_alive(inqom: InqomEmulator) -> None:
    connection = http.client.HTTPConnection(inqom.host, inqom.port, timeout=5)
    try:
        sockets = []
        for _ in range(3):
            connection.request("GET", "/nowhere")
            response = connection.getresponse()
            response.read()
            assert response.status == 404 and response.getheader("Content-Length")
            sockets.append(connection.sock)
        assert sockets[0] is not None and sockets.count(sockets[0]) == 3
    finally:
        connection.close()


def test_chunked_upload(inqom: InqomEmulator) -> None:
    size = 3 * MB + 123
    body = StreamedMultipart({"TypeScan": "Others", "FileSource": "Api"}, "Document", "big.pdf", size)
    response = requests.post(documents_url(inqom), data=body.chunks(), timeout=30,
                             headers={**auth(inqom), "Content-Type": body.content_type})
    assert response.status_code == 200, response.text
    recorded = inqom.calls("POST", "/Documents")[-1]
    assert recorded.headers["Transfer-Encoding"] == "chunked"
    assert recorded.files["Document"].size == size and recorded.files["Document"].data is None
    assert response.json()["Checksum"] == StreamedMultipart.file_sha1(size)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_large_upload_is_streamed(inqom: InqomEmulator) -> None:
    size = 50 * MB
    headers = auth(inqom)
    body = StreamedMultipart({"TypeScan": "Supplier", "FileSource": "Api"}, "Document", "big.pdf", size)
    try:  # reset VmHWM, the peak RSS, to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        measured = "VmHWM"
    except OSError:
        measured = "VmRSS"
    before = memory_kb("VmRSS")
    response = requests.post(documents_url(inqom), data=body, timeout=60,
                             headers={**headers, "Content-Type": body.content_type})
    growth_mb = (memory_kb(measured) - before) / 1024
    assert response.status_code == 200, response.text
    assert inqom.calls("POST", "/Documents")[-1].headers["Content-Length"] == str(len(body))
    assert response.json()["Checksum"] == StreamedMultipart.file_sha1(size)
    assert response.json()["Size"] == 50 * 1024
    assert growth_mb < 20, f"{measured} grew by {growth_mb:.1f} MB"

    url = public_url(inqom, headers, response.json()["Id"])
    digest, received = hashlib.sha1(), 0
    with requests.get(url, stream=True, timeout=60) as download:
        for chunk in download.iter_content(256 * 1024):
            digest.update(chunk)
            received += len(chunk)
    assert received == size and digest.hexdigest().upper() == response.json()["Checksum"]


def test_stop_closes_connections_and_removes_files() -> None:
    emulator = InqomEmulator().start()
    assert upload(emulator, auth(emulator)).status_code == 200
    temp_dir = emulator.temp_dir
    assert temp_dir is not None and len(os.listdir(temp_dir)) == 1
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    connection.request("GET", "/nowhere")
    connection.getresponse().read()  # an idle keep-alive connection stays open
    started = time.monotonic()
    emulator.stop()
    assert time.monotonic() - started < 2
    assert not os.path.exists(temp_dir) and emulator.temp_dir is None
    assert connection.sock is not None and connection.sock.recv(1) == b""
    connection.close()


def test_command_line() -> None:
    with emulator_process("tests.emulators.inqom", "--port", "0", "--username", "u@x.test",
                          "--password", "p", "--client-id", "c", "--client-secret", "s") as urls:
        assert urls["token_url"] == urls["base_url"] + "/identity/connect/token"
        form = {"username": "u@x.test", "password": "p", "grant_type": "password",
                "scope": "openid apidata", "client_id": "c", "client_secret": "s"}
        assert requests.post(urls["token_url"], data=form, timeout=5).status_code == 200
