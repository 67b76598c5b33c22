"""Inqom "API Accounting Documents" client.

    inqom = InqomClient(settings.inqom_api_base_url, http.with_auth(tokens))
    doc = inqom.upload_document(11287, type_scan="Supplier", open_file=lambda: open(path, "rb"),
                                file_name="invoice.pdf", source_id="abc")
    inqom.get_document(11287, doc.id).status            # 'Processing'
    for chunk in inqom.download(inqom.get_public_url(11287, doc.id), allowed_hosts): ...
    inqom.find_documents(11287, lambda d: d.source_id == "abc")   # what an upload whose answer was lost made

Uploads stream: the multipart body is produced by requests-toolbelt's ``MultipartEncoder``
reading from the file object ``open_file()`` returns (opened anew for each attempt), so a
file is never held whole in memory. Responses are parsed tolerantly: an object or a
one-element array, ``OriginId`` or ``OrigineId``. A download URL is parsed once by
``safe_download_url`` and fetched as rebuilt from its checked parts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO, Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder
from urllib3.util import parse_url

from shared.http import ApiError, HttpClient, TransientError, check_deadline

DOCUMENTS_PATH = "/api/accounting-documents/accounting-folders/{folder}/Documents"
EXPENSE_BILLS_PATH = "/api/v1/accounting-folders/{folder}/expense-bills"

TYPE_SCANS = ("Supplier", "Client", "Others")
#: The spec's statuses, then two that working integrations see: ``Pending`` (waiting, like Received) and
#: ``Rejected`` (final, like Deleted). Any other status is unknown to the poller (logged, followed slowly).
STATUSES = ("Received", "ToReview", "Processing", "Duplicate", "Done", "ManualProcessing", "Deleted",
            "Pending", "Rejected")

DOWNLOAD_CHUNK = 1024 * 1024

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # as config's _https_or_loopback_url
# Parsers disagree on these (a backslash ends urllib3's authority, not urllib.parse's).
_UNSAFE_URL_CHARS = re.compile(r"[\\\s\x00-\x1f\x7f-\x9f]")


class ResponseFormatError(ApiError):
    """Inqom answered 2xx with a body this client cannot read (the request may well have worked)."""

    permanent = False


class UploadUnconfirmed(ResponseFormatError):
    """Inqom answered 2xx to an upload, so it holds the document, but the body names no single one."""

    outcome_unknown = True


class DownloadRefused(ApiError):
    """A download URL fails ``safe_download_url``'s checks, or redirects."""


@dataclass(frozen=True)
class InqomDocument:
    """One document as Inqom answers it, with what Inqom extracted from it (any of which may be missing).

    ``counter_party`` (``CounterParty``), ``amount`` (``Amount``, total incl. VAT, as a ``Decimal``),
    ``effectif_date`` (``EffectifDate``, the entry date, as a ``date``: the calendar date written in the
    answer, no time-zone shift), ``doc_ref`` (``DocRef``), ``type`` (``Type``: Supplier, Client, Others),
    ``third_party_name`` (``UserDefinedThirdPartyName``, the beneficiary of an expense bill). A value
    that cannot be read (an amount that is no number, a date that is no date) is ``None``, never an error:
    the document is still archived. Text values have control characters replaced by spaces and are trimmed.
    """

    id: int
    folder_id: int | None
    status: str | None
    checksum: str | None = None
    origin_id: int | None = None
    status_reasons: tuple[str, ...] = ()
    name: str | None = None
    source_id: str | None = None
    size_kib: int | None = None  # ``Size``: whole KiB, rounded up
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    counter_party: str | None = None
    amount: Decimal | None = None
    effectif_date: date | None = None
    doc_ref: str | None = None
    type: str | None = None
    third_party_name: str | None = None

    @classmethod
    def parse(cls, payload: Any) -> "InqomDocument":
        if isinstance(payload, list):
            if len(payload) != 1:
                raise ResponseFormatError("inqom", f"expected one document, got a list of {len(payload)}")
            payload = payload[0]
        if not isinstance(payload, dict) or payload.get("Id") is None:
            raise ResponseFormatError("inqom", "document response has no Id")
        origin = payload.get("OriginId", payload.get("OrigineId"))
        reasons = payload.get("StatusReasons") or ()
        if isinstance(reasons, str):  # the spec's enum: one name, or flags joined with ", "
            reasons = reasons.split(",")
        return cls(
            id=int(payload["Id"]),
            folder_id=_optional_int(payload.get("AccountingFolderId")),
            status=_text(payload.get("Status")),
            checksum=payload.get("Checksum"),
            origin_id=_optional_int(origin),
            status_reasons=tuple(str(r).strip() for r in reasons if r and str(r).strip() != "None"),
            name=payload.get("OriginalName") or payload.get("Name"),
            source_id=_text(payload.get("SourceId")),
            size_kib=_optional_int_or_none(payload.get("Size")),
            raw=payload,
            counter_party=_text(payload.get("CounterParty")),
            amount=_decimal(payload.get("Amount")),
            effectif_date=_date(payload.get("EffectifDate")),
            doc_ref=_text(payload.get("DocRef")),
            type=_text(payload.get("Type")),
            third_party_name=_text(payload.get("UserDefinedThirdPartyName")),
        )


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _optional_int_or_none(value: Any) -> int | None:
    """An id as answered, None when it is missing or no integer."""
    try:
        return _optional_int(value)
    except (TypeError, ValueError):
        return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")
_AMOUNT_TEXT = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)")
_DATE_PREFIX = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:$|[T ])")


def _text(value: Any) -> str | None:
    """A text field: control and bidi-control characters become spaces, whitespace is trimmed; '' is None."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    cleaned = _CONTROL.sub(" ", str(value)).strip()
    return cleaned or None


def _decimal(value: Any) -> Decimal | None:
    """``Amount`` as a Decimal: a JSON number (its shortest decimal form, so 14.87 stays 14.87) or a numeric
    string (``,`` accepted as decimal separator, spaces ignored). Anything else, NaN and infinities are None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        text = value.replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
        if not _AMOUNT_TEXT.fullmatch(text):
            return None
        try:
            return Decimal(text.replace(",", "."))
        except InvalidOperation:
            return None
    return None


def _date(value: Any) -> date | None:
    """``EffectifDate`` ("2025-03-12T00:00:00Z", with or without time, fraction or offset) as the date written."""
    if not isinstance(value, str):
        return None
    match = _DATE_PREFIX.match(value.strip())
    if not match:
        return None
    try:
        moment = datetime(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
    return moment.date()


def safe_download_url(url: str, allowed_hosts: Iterable[str]) -> str:
    """``url`` rebuilt from its parts once they pass, else ``DownloadRefused``.

    Only https on the default port from exactly an allowed host (plain http and any port only
    on a loopback host, for the emulator); no userinfo, backslash, whitespace or control
    character. No message quotes the URL: its query holds the signature.
    """
    if _UNSAFE_URL_CHARS.search(url):
        raise _refused("it holds a backslash, whitespace or a control character")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise _refused("it carries userinfo")
    try:
        port = parts.port
    except ValueError:
        raise _refused("its port is not a number in range") from None
    host = parts.hostname or ""
    if host not in {h.lower() for h in allowed_hosts}:
        raise DownloadRefused("inqom", f"download host {host!r} is not in ARCHIVE_ALLOWED_HOSTS")
    loopback = host in LOOPBACK_HOSTS
    if parts.scheme != "https" and not (loopback and parts.scheme == "http"):
        raise _refused(f"scheme {parts.scheme!r} is not https")
    if not loopback:
        if port not in (None, 443):
            raise _refused(f"port {port} is not the default one")
        port = None
    netloc = (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}")
    rebuilt = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    seen = parse_url(rebuilt)  # what requests will connect to
    if (seen.scheme, (seen.host or "").strip("[]"), seen.port, seen.auth) != (parts.scheme, host, port, None):
        raise _refused("it does not parse the same way twice")
    return rebuilt


def _refused(reason: str) -> DownloadRefused:
    return DownloadRefused("inqom", f"download URL refused: {reason}")


class InqomClient:
    def __init__(self, base_url: str, http: HttpClient, downloads: HttpClient | None = None) -> None:
        """``downloads``: the client for temporary URLs (Inqom's storage host, not its API): its own
        connection pool and no API rate budget. Default: ``http`` without its auth layer."""
        self._base = base_url.rstrip("/")
        self._http = http
        self._downloads = downloads or http.with_auth(None)

    def upload_document(
        self,
        folder_id: int,
        *,
        type_scan: str,
        open_file: Callable[[], BinaryIO],
        file_name: str,
        doc_ref: str | None = None,
        source_id: str | None = None,
        without_workflow: bool = False,
        document_name: str | None = None,
    ) -> InqomDocument:
        if type_scan not in TYPE_SCANS:
            raise ValueError(f"TypeScan must be one of {TYPE_SCANS}, not {type_scan!r}")
        fields = {"TypeScan": type_scan, "FileSource": "Api"}
        optional = {"DocRef": doc_ref, "SourceId": source_id, "DocumentName": document_name or file_name}
        fields.update({k: v for k, v in optional.items() if v})
        if without_workflow:
            fields["WithoutWorkflow"] = "true"
        url = self._base + DOCUMENTS_PATH.format(folder=int(folder_id)) + "/"
        response = self._post_multipart(url, fields, "Document", file_name, open_file)
        try:
            return InqomDocument.parse(_json(response))
        except (ResponseFormatError, ValueError, TypeError) as exc:
            reason = str(exc).removeprefix("inqom: ")
            raise UploadUnconfirmed("inqom", f"upload accepted (HTTP {response.status_code}) but the answer "
                                    f"cannot be read ({reason})", response.status_code) from None

    def upload_expense_bill(
        self,
        folder_id: int,
        *,
        open_file: Callable[[], BinaryIO],
        file_name: str,
        beneficiary: str,
        document_reference: str | None = None,
    ) -> int:
        """Returns the new document's id (``DocumentId``)."""
        fields = {"BeneficiaryFullName": beneficiary, "FileNameWithExtension": file_name}
        if document_reference:
            fields["DocumentReference"] = document_reference
        url = self._base + EXPENSE_BILLS_PATH.format(folder=int(folder_id))
        response = self._post_multipart(url, fields, "File", file_name, open_file)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        document_id = _optional_int_or_none(payload.get("DocumentId")) if isinstance(payload, dict) else None
        if document_id is None:
            raise UploadUnconfirmed("inqom", f"expense bill accepted (HTTP {response.status_code}) but the answer "
                                    "names no DocumentId", response.status_code)
        return document_id

    def list_documents(self, folder_id: int, page: int, page_size: int = 100) -> list[InqomDocument]:
        """One page (from 1) of the folder's documents; elements that name no document are left out."""
        url = f"{self._base}{DOCUMENTS_PATH.format(folder=int(folder_id))}"
        payload = _json(self._http.request("GET", url, params={"pageNumber": page, "pageSize": page_size}))
        if isinstance(payload, dict):  # a paged envelope
            payload = next((payload[k] for k in ("Items", "Documents", "Data", "Results", "items")
                            if isinstance(payload.get(k), list)), [])
        if not isinstance(payload, list):
            raise ResponseFormatError("inqom", "document list is not a list")
        documents = []
        for item in payload:
            try:
                documents.append(InqomDocument.parse(item))
            except (ResponseFormatError, ValueError, TypeError):
                continue
        return documents

    def find_documents(self, folder_id: int, match: Callable[[InqomDocument], bool], *, max_pages: int = 20,
                       page_size: int = 100) -> list[InqomDocument]:
        """Every document of the folder that ``match``es, reading at most ``max_pages`` pages (newest first)."""
        found: list[InqomDocument] = []
        for page in range(1, max_pages + 1):
            documents = self.list_documents(folder_id, page, page_size)
            found += [document for document in documents if match(document)]
            if len(documents) < page_size:
                break
        return found

    def get_document(self, folder_id: int, document_id: int) -> InqomDocument:
        url = f"{self._base}{DOCUMENTS_PATH.format(folder=int(folder_id))}/{int(document_id)}"
        return InqomDocument.parse(_json(self._http.request("GET", url)))

    def get_public_url(self, folder_id: int, document_id: int) -> str:
        url = f"{self._base}{DOCUMENTS_PATH.format(folder=int(folder_id))}/{int(document_id)}/public-url"
        response = self._http.request("GET", url)
        try:
            payload: Any = response.json()
        except ValueError:
            payload = response.text.strip()
        if isinstance(payload, dict):
            payload = payload.get("Url") or payload.get("url") or payload.get("PublicUrl")
        if not isinstance(payload, str) or not payload.startswith(("https://", "http://")):
            raise ResponseFormatError("inqom", "public-url response holds no URL")
        return payload

    def download(self, url: str, allowed_hosts: Iterable[str]) -> Iterator[bytes]:
        """Stream a temporary public URL in chunks; only from ``allowed_hosts``, never redirected.

        The URL is checked and rebuilt by ``safe_download_url``. The download carries no Inqom
        token: the URL is its own credential. Under a ``deadline`` the stream stops when it passes.
        """
        safe_url = safe_download_url(url, allowed_hosts)
        response = self._downloads.request("GET", safe_url, stream=True, allow_redirects=False)
        if response.is_redirect:
            response.close()
            raise DownloadRefused("inqom", "download URL redirects; redirects are not followed", response.status_code)
        return _chunks(response)

    def _post_multipart(self, url: str, fields: dict[str, str], file_field: str, file_name: str,
                        open_file: Callable[[], BinaryIO]):
        opened: list[BinaryIO] = []

        def body() -> dict[str, Any]:
            opened.append(open_file())
            encoder = MultipartEncoder(
                fields={**fields, file_field: (file_name, opened[-1], "application/octet-stream")}
            )
            return {"data": encoder, "headers": {"Content-Type": encoder.content_type}}

        try:
            return self._http.request("POST", url, body=body)
        finally:
            for stream in opened:
                stream.close()


def _chunks(response) -> Iterator[bytes]:
    with response:
        try:
            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                check_deadline("inqom", "download of a temporary URL")
                yield chunk
        except requests.RequestException as exc:  # cut mid-body: the URL stays out of the message
            check_deadline("inqom", "download of a temporary URL")
            raise TransientError("inqom", "download of a temporary URL was cut", None, type(exc).__name__) from None


def _json(response) -> Any:
    try:
        return response.json()
    except ValueError as exc:  # includes json.JSONDecodeError
        raise ResponseFormatError("inqom", "response is not JSON", response.status_code) from exc
