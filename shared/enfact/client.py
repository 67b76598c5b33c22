"""enFact (onFact) REST API client: API-key headers per company, the shared HTTP layer.

    enfact = EnfactClient(settings.enfact_api_base_url, http.with_auth(EnfactApiKey(secrets, company_uuid)))
    enfact.get_invoice("5001")["number"]
    for chunk in enfact.invoice_pdf("5001"): ...
    for summary in enfact.iter_invoices(date_from=date(2026, 11, 1)): ...

The extension picks the format (``.json``, ``.pdf``). The list's paging shape is not in enFact's
public page (it shows ``{ // Response }``): we read ``items`` plus ``page``/``pages`` and also
accept a bare list, and stop on an empty page; an answer this client cannot read raises
``EnfactResponseError``. ``valid_invoice_id`` (``invoice_id_of`` for a JSON value) is the one rule
for an invoice id, wherever it comes from (a push, a queue message, the list): no other id becomes
a URL, a blob name or a ledger key.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Iterator

from shared.http import ApiError, HttpClient

PDF_CHUNK = 256 * 1024
MAX_PAGES = 1000
_INVOICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def valid_invoice_id(value: object) -> bool:
    """Whether ``value`` is an enFact invoice id: 1–64 letters, digits, ``-`` or ``_``."""
    return isinstance(value, str) and _INVOICE_ID.fullmatch(value) is not None


def invoice_id_of(value: Any) -> str | None:
    """``value`` (from JSON, where an id may be a number) as an enFact invoice id; None when it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if valid_invoice_id(value) else None


class EnfactResponseError(ApiError):
    """enFact answered 2xx with something this client cannot read."""


class EnfactClient:
    def __init__(self, base_url: str, http: HttpClient) -> None:
        self._base = base_url.rstrip("/")
        self._http = http

    def _url(self, invoice_id: str, extension: str) -> str:
        if not valid_invoice_id(invoice_id):
            raise ValueError(f"not an enFact invoice id: {invoice_id!r}")
        return f"{self._base}/v1/invoices/{invoice_id}.{extension}"

    def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        response = self._http.request("GET", self._url(invoice_id, "json"))
        try:
            payload = response.json()
        except ValueError as exc:
            raise EnfactResponseError("enfact", "invoice detail is not JSON", response.status_code) from exc
        if not isinstance(payload, dict):
            raise EnfactResponseError("enfact", "invoice detail is not an object", response.status_code)
        return payload

    def invoice_pdf(self, invoice_id: str) -> Iterator[bytes]:
        """The invoice PDF, streamed in chunks (the request is made before the first chunk)."""
        response = self._http.request("GET", self._url(invoice_id, "pdf"), stream=True)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type not in ("application/pdf", "application/octet-stream"):
            response.close()
            raise EnfactResponseError("enfact", f"expected a PDF, got {media_type or 'no content type'}",
                                      response.status_code)
        return _chunks(response)

    def list_invoices(self, page: int = 1, limit: int = 100, date_from: date | None = None) -> tuple[list[dict], int]:
        """One page of invoice summaries and the page count (1 when the answer says nothing)."""
        params: dict[str, Any] = {"page": page, "limit": limit}
        if date_from:
            params["date_from"] = date_from.isoformat()
        response = self._http.request("GET", f"{self._base}/v1/invoices.json", params=params)
        try:
            payload = response.json()
        except ValueError as exc:
            raise EnfactResponseError("enfact", "invoice list is not JSON", response.status_code) from exc
        if isinstance(payload, list):  # no paging info: a full page may have a successor
            return payload, page + 1 if len(payload) >= limit else page
        if not isinstance(payload, dict):
            raise EnfactResponseError("enfact", "invoice list is neither an object nor a list", response.status_code)
        items = payload.get("items") or payload.get("data") or []
        pages = payload.get("pages") or page
        if not isinstance(items, list) or not re.fullmatch(r"[0-9]{1,6}", str(pages)):
            raise EnfactResponseError("enfact", "invoice list has no readable items or page count",
                                      response.status_code)
        return items, int(pages)

    def iter_invoices(self, date_from: date | None = None, limit: int = 100) -> Iterator[dict]:
        page = 1
        while page <= MAX_PAGES:
            items, pages = self.list_invoices(page, limit, date_from)
            yield from items
            if not items or page >= pages:
                return
            page += 1


def _chunks(response) -> Iterator[bytes]:
    with response:
        yield from response.iter_content(PDF_CHUNK)
