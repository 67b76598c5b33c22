"""What each route of Inqom's accounting-documents API answers in the emulator, and the public
download URLs it hands out (Azure Blob Storage style).

    api = InqomApi(emulator, documents)  # reads the emulator's folder and download settings
    routes = api.routes()  # (method, path pattern, endpoint), for EmulatorServer._route
    reply = api.upload_document("11287", request=request)  # 200 with the document's JSON
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote, unquote, urlencode

from tests.emulators._server import FileBody, Reply, Route, json_reply
from tests.emulators.inqom_documents import Document, InqomDocuments, iso, now
from tests.emulators.inqom_http import FORBIDDEN, Request, file_part, form_errors, message, positive_int

MAX_PAGE_SIZE = 100
TYPE_SCANS = ("Client", "Supplier", "Others")
_FOLDER = r"/api/accounting-documents/accounting-folders/([^/]+)/Documents"


class ApiSettings(Protocol):
    """The emulator's settings the endpoints read (tests change them at any time)."""

    folders: set[int] | None
    unknown_folders: set[int]
    forbidden_folders: set[int]
    get_as_array: bool
    public_url_ttl: float
    corrupt_next_downloads: int
    redirect_public_to: str | None

    @property
    def base_url(self) -> str: ...


def _storage_error(status: int, code: str, text: str, detail: str | None = None) -> Reply:
    """An Azure Blob Storage style XML error, as the public download URLs answer."""
    detail_xml = f"<AuthenticationErrorDetail>{detail}</AuthenticationErrorDetail>" if detail else ""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{text}\nRequestId:{uuid.uuid4()}\n"
        f"Time:{iso(now())}</Message>{detail_xml}</Error>"
    )
    return Reply(status, body.encode("utf-8"), "application/xml", {"x-ms-error-code": code})


class InqomApi:
    """The endpoints: uploads, the list, a document, its public URL, and the download itself."""

    def __init__(self, settings: ApiSettings, documents: InqomDocuments) -> None:
        self._settings = settings
        self._documents = documents
        self._lock = threading.Lock()  # for corrupt_next_downloads

    def routes(self) -> tuple[Route, ...]:
        return (
            ("POST", re.compile(_FOLDER + "/?"), self.upload_document),
            ("GET", re.compile(_FOLDER + "/?"), self.list_documents),
            ("GET", re.compile(_FOLDER + "/([^/]+)/?"), self.get_document),
            ("GET", re.compile(_FOLDER + "/([^/]+)/public-url/?"), self.public_url),
            ("POST", re.compile(r"/api/v1/accounting-folders/([^/]+)/expense-bills/?"), self.upload_expense_bill),
            ("GET", re.compile(r"/public/([^/]+)/([^/]+)"), self.download),
        )

    # ------------------------------------------------------------------ endpoints

    def upload_document(self, folder: str, *, request: Request) -> Reply:
        fields = ("TypeScan", "FileSource", "DocRef", "SourceId", "WithoutWorkflow", "DocumentName")
        errors = form_errors(folder, request.body, fields, ("Document",))
        form = {name: value for name, value in request.body.fields if value}  # "" binds as null
        type_scan, file_source = form.get("TypeScan"), form.get("FileSource")
        if type_scan not in TYPE_SCANS:
            errors.append(f"TypeScan must be one of {', '.join(TYPE_SCANS)}, got {type_scan!r}")
        if file_source != "Api":
            errors.append(f'FileSource must be "Api", got {file_source!r}')
        if form.get("WithoutWorkflow", "false") not in ("true", "false"):
            errors.append(f'WithoutWorkflow must be "true" or "false", got {form["WithoutWorkflow"]!r}')
        document = file_part(request, "Document", errors)
        if errors:
            return message(400, "; ".join(errors))
        assert document is not None and type_scan is not None
        folder_id = int(folder)
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        created = self._documents.create(
            folder_id, document, name=form.get("DocumentName") or document.filename,
            original_name=document.filename, type_scan=type_scan, source_id=form.get("SourceId"),
            doc_ref=form.get("DocRef"), beneficiary=None)
        return json_reply(200, created)

    def upload_expense_bill(self, folder: str, *, request: Request) -> Reply:
        fields = ("BeneficiaryFullName", "FileNameWithExtension", "DocumentReference")
        errors = form_errors(folder, request.body, fields, ("File",))
        form = {name: value for name, value in request.body.fields if value}
        beneficiary = (form.get("BeneficiaryFullName") or "").strip()
        file_name = (form.get("FileNameWithExtension") or "").strip()
        if not beneficiary:
            errors.append("BeneficiaryFullName is required")
        if not re.search(r"[^./\\]\.[A-Za-z0-9]{1,10}$", file_name):
            errors.append(f"FileNameWithExtension must be a file name with an extension, got {file_name!r}")
        bill = file_part(request, "File", errors)
        if errors:
            return message(400, "; ".join(errors))
        assert bill is not None
        folder_id = int(folder)
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        created = self._documents.create(
            folder_id, bill, name=file_name, original_name=file_name, type_scan="Others",
            source_id=None, doc_ref=form.get("DocumentReference"), beneficiary=beneficiary)
        return json_reply(200, {"DocumentId": created["Id"]})

    def list_documents(self, folder: str, *, request: Request) -> Reply:
        """One page of the folder's documents, newest first (the statuses as they stand, no polling)."""
        folder_id = positive_int(folder)
        page, size = (positive_int((request.query.get(name) or ["1"])[0]) for name in ("pageNumber", "pageSize"))
        if folder_id is None or page is None or size is None or size > MAX_PAGE_SIZE:
            return message(400, f"accountingFolderId, pageNumber and pageSize (1-{MAX_PAGE_SIZE}) must be "
                                 "positive integers")
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        return json_reply(200, self._documents.page(folder_id, page, size))

    def get_document(self, folder: str, doc_id: str, *, request: Request) -> Reply:
        found = self._find(folder, doc_id)
        if isinstance(found, Reply):
            return found
        payload = self._documents.poll(found)
        return json_reply(200, [payload] if self._settings.get_as_array else payload)

    def public_url(self, folder: str, doc_id: str, *, request: Request) -> Reply:
        found = self._find(folder, doc_id)
        if isinstance(found, Reply):
            return found
        token, link = self._documents.link(found, self._settings.public_url_ttl)
        expiry = datetime.fromtimestamp(link.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sas = urlencode({"sv": "2021-08-06", "se": expiry, "sr": "b", "sp": "r", "sig": link.signature},
                        quote_via=quote, safe="")
        return json_reply(200, f"{self._settings.base_url}/public/{token}/{quote(found.original_name, safe='')}?{sas}")

    def download(self, token: str, name: str, *, request: Request) -> Reply:
        linked = self._documents.linked(token)
        if linked is None or unquote(name) != linked[1].original_name:
            return _storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        link, document = linked
        settings = self._settings
        if settings.redirect_public_to:
            return Reply(302, headers={"Location": settings.redirect_public_to})
        auth_failed = ("Server failed to authenticate the request. Make sure the value of "
                       "Authorization header is formed correctly including the signature.")
        if request.query.get("sig") != [link.signature]:
            return _storage_error(403, "AuthenticationFailed", auth_failed,
                                  "Signature did not match. String to sign used was r")
        if time.time() >= link.expires_at:
            expired = email.utils.formatdate(link.expires_at, usegmt=True)
            return _storage_error(403, "AuthenticationFailed", auth_failed,
                                  f"Signed expiry time [{expired}] has expired: must be after the "
                                  f"current time [{email.utils.formatdate(usegmt=True)}]")
        with self._lock:
            corrupt = settings.corrupt_next_downloads > 0
            if corrupt:
                settings.corrupt_next_downloads -= 1
        return Reply(200, content_type="application/octet-stream",
                     headers={"x-ms-blob-type": "BlockBlob"},
                     file=FileBody(document.path, document.size,
                                   document.size // 2 if corrupt else None))

    # -------------------------------------------------------------------- helpers

    def _folder_denied(self, folder_id: int) -> Reply | None:
        settings = self._settings
        if folder_id in settings.forbidden_folders:
            return message(403, FORBIDDEN)
        if folder_id in settings.unknown_folders or (settings.folders is not None
                                                     and folder_id not in settings.folders):
            return message(404, f"Accounting folder {folder_id} not found")
        return None

    def _find(self, folder: str, doc_id: str) -> Document | Reply:
        folder_id, document_id = positive_int(folder), positive_int(doc_id)
        if folder_id is None or document_id is None:
            return message(400, "accountingFolderId and the document id must be positive integers")
        denied = self._folder_denied(folder_id)
        if denied:
            return denied
        document = self._documents.in_folder(folder_id, document_id)
        if document is None:
            return message(404, f"Document {document_id} not found in accounting folder {folder_id}")
        return document

