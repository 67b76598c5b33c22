"""Answers, clocks and limits for the crash-point simulation (tests only; issue 19).

Three actors that ``tests.support.simulation.World`` lacks, added from outside it:

    with AnswerActor(["ok_no_id"]) as answers, World.create(azurite) as world:
        answers.bind(world)                                        # odd answers under the Interceptor
        ClockActor(world, seed=7, bound=300, new_process=0.5)      # per-process skew, within ±5 min
        world.drop("11287/supplier/a.pdf", data)
        world.interceptor.arm(CrashPoint("list").index_in(clean_run_crashable), "after")
        world.run()
        problems = world.check() + extra_checks(world)

* ``AnswerActor``: at Inqom calls, stands in a legal-but-odd answer from ``ANSWERS`` (every row names
  the document that allows it or where Inqom was seen to send it): deterministically (each row for the
  first ``times`` calls of each operation it applies to) or drawn from a seeded generator.
* ``CrashPoint``: a crash point named by what it is (the upload POST, the list lookup, the archive
  commit...), found in a clean run's crashable calls and armed through the Interceptor.
* ``ClockActor``: each process (each ``Services`` the World builds: after a crash, or when the actor
  starts a new one) gets its own clock skew, drawn from a seed, on the ledger's notion of "due"
  (``services.ledger.clock``) and on the Inqom rate budget (``services.inqom_budget._clock``). Both
  clocks follow the World's simulated time, so a ``Retry-After`` or a hold is waited out as time
  advances instead of in real seconds.
* ``LIMITS``: what Inqom extracted (OCR) or a sender wrote, at and past each storage limit (Table
  strings of 64 KiB of UTF-16, 1 MiB entities, tag values of 256, 8 KiB of blob metadata), and
  ``limit_problems`` that measures what the app wrote against those limits (Azurite enforces strings
  and tags, not entity or metadata sizes).

``extra_checks`` adds to ``World.check``: every row's bytes are where its final state says (and nowhere
else), Inqom holds one document per blob version that reached it, and nothing stored passes a limit.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from shared.ledger.rows import ARCHIVED, DELETED, FINAL_STATES, QUARANTINED, ledger_key, partition_for
from shared.services import get_services
from tests.support.simulation import World

UPLOADS = frozenset({"upload", "upload-expense"})


@dataclass(frozen=True)
class Answer:
    """One row of the table: what Inqom may answer instead, at which calls, and who says it may."""

    name: str
    ops: frozenset[str]
    why: str
    times: int = 1  # per operation, in deterministic use


ANSWERS: dict[str, Answer] = {a.name: a for a in (
    Answer("lost_after_process", UPLOADS,
           "seen (issue 19, defect 1): the document is created, then the connection is reset before the answer "
           "(the emulator's drop_after_process; here the real call, then requests.ConnectionError)"),
    Answer("gateway_504_after_process", UPLOADS,
           "seen (issue 19): the API created the document, its gateway answered 504 Gateway Timeout"),
    Answer("ok_empty_array", UPLOADS,
           "spec: answers are arrays (its examples) or objects; seen (issue 19, defect 2): 200 with []"),
    Answer("ok_two_elements", UPLOADS,
           "spec: an array answer; seen (issue 19, defect 2): 200 with two elements"),
    Answer("ok_no_id", UPLOADS,
           "spec: null members are left out of answers; seen (issue 19, defect 2): 200 with an object without Id"),
    Answer("checksum_null", frozenset({"get-document"}),
           "spec: Checksum is not one of the document's starred (always present) members: it may be null", times=2),
    Answer("checksum_null_in_list", frozenset({"list"}),
           "spec: Checksum unstarred, in the document list (read by the lookup) as in GET Documents/{id}"),
    Answer("done_then_processing", frozenset({"get-document"}),
           "issue 19 (a status moving backwards): Done, then Processing again (a reprocessing)"),
    Answer("deleted_after_done", frozenset({"get-document"}),
           "spec: Deleted is one of the statuses (DeletedAt); issue 19, defect 6: deleted in Inqom after Done"),
    Answer("retry_after_0", frozenset({*UPLOADS, "get-document"}),
           "RFC 9110 §10.2.3 (delay-seconds is any non-negative integer, 0 included) with Inqom's 429"),
    Answer("retry_after_huge", frozenset({*UPLOADS, "get-document"}),
           "RFC 9110 §10.2.3 with Inqom's 429: Retry-After: 86400 (a day; MAX_RETRY_AFTER)"),
    Answer("retry_after_http_date", frozenset({*UPLOADS, "get-document"}),
           "RFC 9110 §10.2.3: Retry-After as an HTTP-date (non-numeric), 2 s ahead, with a 429"),
    Answer("retry_after_garbage", frozenset({*UPLOADS, "get-document"}),
           "issue 19 (a non-numeric Retry-After): neither delay-seconds nor a date ('soon'), with a 429"),
    Answer("redirect_public", frozenset({"download"}),
           "issue 19 (a public URL that redirects; the emulator's redirect_public_to): 302 to another host"),
)}
ANSWER_NAMES = tuple(ANSWERS)


@dataclass(frozen=True)
class CrashPoint:
    """A named crash point: the ``nth`` crashable call of a clean run that ``matches``, crashed ``before``
    it leaves or ``after`` its answer (through the Interceptor's own ``arm``, so its bookkeeping of
    crashes after a send holds)."""

    point: str  # upload, list, get-document, public-url, download, commit
    mode: str = "after"
    nth: int = 1

    @property
    def label(self) -> str:
        return f"crash {self.mode} {self.point}" + (f" #{self.nth}" if self.nth != 1 else "")

    def matches(self, call: Any) -> bool:
        if self.point == "commit":
            return call.service == "blob" and call.op == "commit" and call.target.startswith("archive:")
        if call.service != "inqom":
            return False
        if self.point == "upload":
            return call.op in UPLOADS
        if self.point == "list":
            return call.op in ("list-documents", "list")
        return call.op == self.point

    def index_in(self, crashable: list[Any]) -> int | None:
        """Its index among a clean run's crashable calls (``Interceptor.crashable``), None when not reached."""
        found = [i for i, call in enumerate(crashable) if self.matches(call)]
        return found[self.nth - 1] if len(found) >= self.nth else None


def _response(request: requests.PreparedRequest, status: int, body: bytes = b"",
              headers: dict[str, str] | None = None, reason: str = "") -> requests.Response:
    """A complete, already-read response, as ``requests`` builds one."""
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    response._content = body  # noqa: SLF001 (a response built here, read by the app as any other)
    response._content_consumed = True  # noqa: SLF001
    response.raw = io.BytesIO(body)
    response.url = request.url or ""
    response.request = request
    response.encoding = "utf-8"
    response.reason = reason
    return response


def _json_response(request: requests.PreparedRequest, status: int, payload: Any,
                   headers: dict[str, str] | None = None) -> requests.Response:
    return _response(request, status, json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                     {**(headers or {}), "Content-Type": "application/json; charset=utf-8"})


def _inqom_op(request: requests.PreparedRequest) -> str:
    path = unquote(urlsplit(request.url).path).rstrip("/")
    if "connect/token" in path:
        return "token"
    if path.startswith("/public/"):
        return "download"
    if path.endswith("/public-url"):
        return "public-url"
    if request.method == "POST":
        return "upload-expense" if path.endswith("/expense-bills") else "upload"
    return "list" if path.endswith("/Documents") else "get-document"


class AnswerActor:
    """A layer under the World's Interceptor that stands in legal-but-odd Inqom answers.

    Why a layer over ``Session.send`` rather than the emulator's ``inject``: one mechanism covers every
    row, including the answers the emulator has no fault kind for (a status after Done, Checksum null,
    Retry-After values, a redirect), bounded per operation or drawn from a seed.

    Entered *before* ``World.create`` (it then patches ``requests.Session.send`` first, so the Interceptor
    installed by ``World.create`` takes this layer as its ``original``): the Interceptor records the odd
    answer as the answer on the wire (its sends, the ids it told, the crashes after a send), and its
    crash points are the same whether a row applies or not. ``bind(world)`` once the World exists;
    until then (and for every call that is not Inqom's) the layer passes calls through.

        with AnswerActor(["ok_no_id"]) as answers, World.create(azurite) as world:
            answers.bind(world)

    ``answers``: names (or ``Answer`` rows) applied deterministically, each to the first ``times`` calls of
    each operation it applies to. ``seed``/``probability``: instead, at each Inqom call one applicable row
    of ``pool`` is drawn with that probability (at most ``max_draws`` in all, so that a run can settle).
    """

    def __init__(self, answers: Iterable[str | Answer] = (), *, seed: int | None = None, probability: float = 0.0,
                 pool: Iterable[str] = ANSWER_NAMES, max_draws: int = 4) -> None:
        self.rows = [ANSWERS[a] if isinstance(a, str) else a for a in answers]
        self.rng = random.Random(seed) if seed is not None else None
        self.probability = probability
        self.pool = [ANSWERS[name] for name in pool]
        self.max_draws = max_draws
        self.applied: list[str] = []  # "answer@op", in order
        self.world: World | None = None
        self._left: dict[tuple[str, str], int] = {}
        self._done_seen: set[int] = set()
        self._after_done: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._inqom_port: int | None = None
        self._original: Callable | None = None

    def bind(self, world: World) -> "AnswerActor":
        self.world = world
        self._inqom_port = world.inqom.port
        return self

    # ------------------------------------------------------------------ installation
    def __enter__(self) -> "AnswerActor":
        original = requests.Session.send
        self._original = original
        actor = self

        def send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
            return actor.send(original, session, request, **kwargs)

        requests.Session.send = send  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        requests.Session.send = self._original  # type: ignore[method-assign]

    # ------------------------------------------------------------------ the layer
    def send(self, original: Callable, session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
        if self._inqom_port is None or urlsplit(request.url).port != self._inqom_port:
            return original(session, request, **kwargs)
        op = _inqom_op(request)
        answer = self._choose(op)
        if answer is not None:
            short = self._short_circuit(answer, request)
            if short is not None:
                return short  # answered without Inqom seeing the request
        response = original(session, request, **kwargs)
        if answer is not None:
            return self._after(answer, op, request, response)
        if op == "get-document":
            return self._stateful(request, response)
        return response

    def _choose(self, op: str) -> Answer | None:
        with self._lock:
            if self.rng is not None:
                candidates = [a for a in self.pool if op in a.ops]
                if not candidates or len(self.applied) >= self.max_draws or self.rng.random() >= self.probability:
                    return None
                answer = self.rng.choice(candidates)
            else:
                answer = next((a for a in self.rows
                               if op in a.ops and self._left.get((a.name, op), a.times) > 0), None)
                if answer is None:
                    return None
                if answer.name in _AFTER_DONE:
                    return answer  # counted where it applies (after a Done)
                self._left[(answer.name, op)] = self._left.get((answer.name, op), answer.times) - 1
            if answer.name not in _AFTER_DONE:
                self.applied.append(f"{answer.name}@{op}")
            return answer

    @staticmethod
    def _short_circuit(answer: Answer, request: requests.PreparedRequest) -> requests.Response | None:
        """Answers given without Inqom seeing the request (it processes nothing)."""
        name = answer.name
        if name.startswith("retry_after_"):
            value = {"retry_after_0": "0", "retry_after_huge": "86400", "retry_after_garbage": "soon",
                     "retry_after_http_date": email.utils.formatdate(time.time() + 2, usegmt=True)}[name]
            return _json_response(request, 429, {"Message": "Rate limit is exceeded. Try again later."},
                                  {"Retry-After": value})
        if name == "redirect_public":
            return _response(request, 302, b"", {"Location": "https://cdn.elsewhere.example/blob?sig=x"}, "Found")
        return None

    def _after(self, answer: Answer, op: str, request: requests.PreparedRequest,
               response: requests.Response) -> requests.Response:
        name = answer.name
        if name == "lost_after_process":
            response.close()
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected('Remote end closed connection "
                                           "without response') (simulated, after Inqom processed the request)")
        if name == "gateway_504_after_process":
            response.close()
            return _response(request, 504, b"<html><body><h1>504 Gateway Time-out</h1></body></html>",
                             {"Content-Type": "text/html"}, "Gateway Time-out")
        if response.status_code >= 300:
            return response
        payload = response.json()
        response.close()
        if name == "ok_empty_array":
            payload = []
        elif name == "ok_two_elements":
            item = payload[0] if isinstance(payload, list) else payload
            payload = [item, dict(item)]
        elif name == "ok_no_id":
            item = payload[0] if isinstance(payload, list) and payload else payload
            payload = {k: v for k, v in item.items() if k not in ("Id", "DocumentId")}
        elif name in ("checksum_null", "checksum_null_in_list"):
            for item in payload if isinstance(payload, list) else [payload]:
                item["Checksum"] = None
        elif name in _AFTER_DONE:
            return self._stateful(request, _json_response(request, response.status_code, payload), answer)
        return _json_response(request, response.status_code, payload)

    def _stateful(self, request: requests.PreparedRequest, response: requests.Response,
                  answer: Answer | None = None) -> requests.Response:
        """The rows that follow a document: what comes after a Done the app was answered."""
        if response.status_code >= 300:
            return response
        rows = [answer] if answer is not None else [a for a in self.rows if a.name in _AFTER_DONE]
        if not rows and self.rng is None:
            return response
        payload = response.json()
        changed = False
        for item in payload if isinstance(payload, list) else [payload]:
            doc_id = int(item.get("Id") or 0)
            with self._lock:
                seen = doc_id in self._done_seen
                if item.get("Status") == "Done" and seen:
                    for row in rows:
                        key = (row.name, doc_id)
                        if row.name == "done_then_processing" and self._after_done.get(key, row.times) > 0:
                            self._after_done[key] = self._after_done.get(key, row.times) - 1
                            item["Status"] = "Processing"  # a reprocessing: Done, then Processing again
                            self.applied.append(f"{row.name}@get-document")
                            changed = True
                elif item.get("Status") == "Done":
                    self._done_seen.add(doc_id)
                    for row in rows:
                        key = (row.name, doc_id)
                        if row.name == "deleted_after_done" and key not in self._after_done:
                            self._after_done[key] = 0
                            assert self.world is not None
                            self.world.inqom.set_status(doc_id, "Deleted")  # answered Done; then a user deletes it
                            self.applied.append(f"{row.name}@get-document")
        if not changed:
            return response  # its body was read and is kept: the app reads it as it came
        return _json_response(request, response.status_code, payload)


_AFTER_DONE = ("done_then_processing", "deleted_after_done")


class ClockActor:
    """Per-process clock skew on the ledger's "due" and on the Inqom rate budget, within ``±bound`` seconds.

    Every ``Services`` the World builds is one process: it draws its skew from ``seed`` when first seen.
    With ``new_process`` > 0, each invocation runs in a fresh process with that probability (the host
    scaled out, or recycled an instance), so consecutive invocations disagree about the time.
    ``bound=0`` only makes the budget follow the World's simulated time.
    """

    def __init__(self, world: World, seed: int = 0, bound: float = 300.0, new_process: float = 0.0) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.bound = bound
        self.new_process = new_process
        self.skews: list[float] = []
        self.processes: list[Any] = []  # the Services seen (kept alive: ids stay unique)
        self._skew_of: dict[int, float] = {}
        original_services, original_invoke = world.services, world.invoke

        def services():
            built = original_services()  # sets ledger.clock = world.now
            return self._apply(built)

        def invoke(label: str, fn: Callable[[], Any]) -> str:
            if self.new_process and self.rng.random() < self.new_process:
                get_services.cache_clear()
            return original_invoke(label, fn)

        world.services = services  # type: ignore[method-assign]
        world.invoke = invoke  # type: ignore[method-assign]

    def _apply(self, services: Any) -> Any:
        skew = self._skew_of.get(id(services))
        if skew is None:
            skew = self.rng.uniform(-self.bound, self.bound) if self.bound else 0.0
            self._skew_of[id(services)] = skew
            self.skews.append(skew)
            self.processes.append(services)
        world = self.world
        services.ledger.clock = lambda: world.now() + timedelta(seconds=skew)
        budget = services.inqom_budget
        budget._clock = lambda: time.time() + world.offset.total_seconds() + skew  # noqa: SLF001
        # Its local fallback limiter keeps a hold-off on a monotonic clock: simulated time moves it too.
        budget._fallback._clock = lambda: time.monotonic() + world.offset.total_seconds()  # noqa: SLF001
        return services

    def budget_throttles(self) -> int:
        """How many times a budget refused to wait (``ThrottledError`` from the budget itself), all processes."""
        return sum(p.inqom_budget.stats().throttled for p in self.processes if "inqom_budget" in vars(p))


# --------------------------------------------------------------------------- limits

ASTRAL = "\U0001d538"  # 𝔸: one character, two UTF-16 units, four UTF-8 bytes
TABLE_STRING_UNITS = 32_768  # 64 KiB of UTF-16 per string property (Azurite takes 32,768 units, refuses 32,769)
TABLE_ENTITY_BYTES = 1024 * 1024
TAG_VALUE_CHARS = 256
MAX_TAGS = 10
METADATA_BYTES = 8 * 1024


@dataclass(frozen=True)
class Limit:
    """One document whose OCR fields (what Inqom extracted) or blob metadata sit at or past a limit."""

    name: str
    file: str  # the inbox file name (the emulator's ``extraction_for_name`` key)
    extracted: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    kind: str = "supplier"


def _filled(metadata: dict[str, str], total: int) -> dict[str, str]:
    """``metadata`` plus a ``note`` that brings names and values to ``total`` bytes."""
    used = sum(len(k) + len(v) for k, v in metadata.items()) + len("note")
    return {**metadata, "note": "x" * (total - used)}


def _units(n: int) -> str:
    """A text of exactly ``n`` UTF-16 units, mostly astral (an odd ``n`` ends with one BMP letter)."""
    return ASTRAL * (n // 2) + "é" * (n % 2)


LIMITS: dict[str, Limit] = {limit.name: limit for limit in (
    Limit("counterparty at 32,767 UTF-16 units", "at-limit.pdf", {"CounterParty": _units(TABLE_STRING_UNITS)}),
    Limit("counterparty at 32,768 units (64 KiB)", "at-64k.pdf", {"CounterParty": _units(32_768)}),
    Limit("counterparty past 64 KiB (astral, 40,000 units)", "past-cp.pdf", {"CounterParty": ASTRAL * 20_000}),
    Limit("docref past 64 KiB (astral)", "past-ref.pdf", {"DocRef": "F-" + ASTRAL * 20_000}),
    Limit("beneficiary past 64 KiB (astral)", "past-ben.pdf", {"UserDefinedThirdPartyName": ASTRAL * 17_000 + "x"}),
    Limit("every OCR text past 64 KiB (a wide row)", "wide.pdf", {
        "CounterParty": ASTRAL * 30_000, "DocRef": "R" + ASTRAL * 30_000, "Type": ASTRAL * 30_000,
        "UserDefinedThirdPartyName": "é" * 70_000, "Amount": "9" * 5_000, "EffectifDate": ASTRAL * 5_000}),
    Limit("tag values at 256 characters", "tag-256.pdf", {"CounterParty": "a" * 256, "DocRef": "r" * 256}),
    Limit("tag values past 256 characters", "tag-257.pdf", {"CounterParty": "a" * 257 + " " + "b" * 300,
                                                            "DocRef": "F/" + "9" * 400}),
    Limit("OCR texts that percent-encode past the metadata budget", "meta-ocr.pdf", {
        "CounterParty": "é" * 3_000, "DocRef": ASTRAL * 3_000, "UserDefinedThirdPartyName": "€" * 3_000,
        "Type": "ü" * 3_000}),
    Limit("sender metadata at 8 KiB, accepted (fields at 255)", "meta-8k.pdf", {}, _filled({
        "docref": "R" * 255, "sourceid": "s" * 255, "documentname": "n" * 251 + ".pdf"}, 8_150)),
    Limit("sender metadata at 8 KiB, refused by routing (docref of 300)", "meta-8k-refused.pdf", {},
          _filled({"docref": "R" * 300}, 8_100)),
)}


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def entity_bytes(partition: str, key: str, fields: dict[str, Any]) -> int:
    """An entity's size as the Table service counts it (Microsoft's formula: 4 + 2·keys + per property)."""
    size = 4 + 2 * (len(partition) + len(key))
    for name, value in fields.items():
        value = getattr(value, "value", value)
        size += 8 + 2 * len(name) + (4 + 2 * utf16_units(value) if isinstance(value, str) else 8)
    return size


def metadata_bytes(metadata: dict[str, str]) -> int:
    """Blob metadata as the service counts it: names and values together (8 KiB at most)."""
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in metadata.items())


def limit_problems(world: World) -> list[str]:
    """Every ledger entity, archive and quarantine blob against the storage limits (Azurite checks only some)."""
    problems: list[str] = []
    with world.interceptor.quiet():
        services = world.services()
        for entity in services.ledger.table.list_entities():
            fields = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
            size = entity_bytes(entity["PartitionKey"], entity["RowKey"], fields)
            if size > TABLE_ENTITY_BYTES:
                problems.append(f"limit: ledger row {entity['RowKey']} is {size} bytes (> 1 MiB)")
            for name, value in fields.items():
                if isinstance(value, str) and utf16_units(value) > TABLE_STRING_UNITS:
                    problems.append(f"limit: ledger column {name} holds {utf16_units(value)} UTF-16 units")
        settings = services.settings
        for container in (settings.archive_container, settings.quarantine_container, settings.inbox_container):
            client = services.stores.container(container)
            for blob in client.list_blobs(include=["metadata", "tags"]):
                size = metadata_bytes(blob.metadata or {})
                if size > METADATA_BYTES:
                    problems.append(f"limit: {container}/{blob.name[:60]} metadata is {size} bytes (> 8 KiB)")
                tags = blob.tags or {}
                if len(tags) > MAX_TAGS or any(len(v) > TAG_VALUE_CHARS for v in tags.values()):
                    problems.append(f"limit: {container}/{blob.name[:60]} tags {sorted(tags)} pass the tag limits")
    return problems


# --------------------------------------------------------------------------- further checks


def where_bytes_are(world: World) -> list[str]:
    """Every row in a named final state that matches where its bytes are, and no bytes that no row names.

    ``World.check`` verifies the copy a row names; this adds: the inbox no longer holds a settled
    version, and every archive or quarantine blob belongs to the row that names it.
    """
    problems: list[str] = []
    with world.interceptor.quiet():
        services = world.services()
        settings = services.settings
        ledger = services.ledger
        inbox = services.stores.container(settings.inbox_container)
        in_inbox = {(b.name, b.etag.strip('"')) for b in inbox.list_blobs()}
        rows = {e.key: e for e in ledger.scan()}
        for (name, etag) in world.versions:
            entry = rows.get(ledger_key(settings.inbox_container, name, etag))
            if entry is None:
                continue  # World.check reports it
            state = entry.state
            if state not in FINAL_STATES:
                problems.append(f"unnamed state: {name!r} ends {state!r}, not one of {sorted(FINAL_STATES)}")
            elif state in (ARCHIVED, DELETED, QUARANTINED) and (name, etag) in in_inbox:
                problems.append(f"misplaced: {name!r} is {state} but its bytes are still in the inbox")
        named = {"archive": {}, "quarantine": {}}
        for entry in rows.values():
            for column, role in (("ArchivePath", "archive"), ("QuarantinePath", "quarantine")):
                path = entry.get(column)
                if path:
                    named[role][path.partition("/")[2]] = entry
        for role, container in (("archive", settings.archive_container),
                                ("quarantine", settings.quarantine_container)):
            for blob in services.stores.container(container).list_blobs(include=["metadata"]):
                owner = (blob.metadata or {}).get("ledgerkey") or (blob.metadata or {}).get("moveid")
                entry = named[role].get(blob.name)
                if entry is None and not (owner in rows and rows[owner].state == ARCHIVED):
                    problems.append(f"unnamed bytes: {role} blob {blob.name!r} (owner {owner}) is named by no row")
                elif entry is not None and owner and owner != entry.key:
                    problems.append(f"mislinked: {role} blob {blob.name!r} is another row's")
    return problems


def inqom_documents_per_version(world: World) -> list[str]:
    """Inqom holds exactly one document per blob version that reached it (a second one only for a second
    version with the same bytes: an Inqom ``Duplicate``), counted by Checksum and by SourceId."""
    problems: list[str] = []
    documents = world.inqom.documents
    by_checksum: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    for doc_id, document in documents.items():
        by_checksum.setdefault(str(document.get("Checksum") or "").upper(), []).append(doc_id)
        if document.get("SourceId"):
            by_source.setdefault(document["SourceId"], []).append(doc_id)
    with world.interceptor.quiet():
        services = world.services()
        settings = services.settings
        sent: dict[str, int] = {}
        for (name, etag), version in world.versions.items():
            entry = services.ledger.get(partition_for(name), ledger_key(settings.inbox_container, name, etag))
            if entry is not None and entry.get("InqomId") not in (None, ""):
                digest = hashlib.sha1(version.data).hexdigest().upper()
                sent[digest] = sent.get(digest, 0) + 1
    for digest, ids in by_checksum.items():
        if len(ids) != sent.get(digest, 0):
            problems.append(f"copies: Inqom holds {len(ids)} documents {sorted(ids)} of bytes {digest[:10]}, "
                            f"{sent.get(digest, 0)} blob version(s) of them were sent")
    for source, ids in by_source.items():
        if len(ids) > 1:
            problems.append(f"copies: Inqom holds {len(ids)} documents {sorted(ids)} with SourceId {source}")
    return problems


def extra_checks(world: World) -> list[str]:
    return where_bytes_are(world) + inqom_documents_per_version(world) + limit_problems(world)


#: What the answers test module ran (its last test prints and checks them).
COUNTS: dict[str, float] = {}
