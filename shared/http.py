"""The one HTTP layer: a pooled ``requests.Session`` wrapped by throttle, auth, timeout and retry.

    client = HttpClient("inqom", timeout=(10, 120), retry=RetryPolicy(max_attempts=4),
                        throttle=RateLimiter(10), auth=token_provider)
    response = client.request("GET", url)

Transient failures (connection errors, timeouts, 429, 500/502/503/504) are retried with capped
backoff and jitter, honouring ``Retry-After``; one beyond the cap raises ``ThrottledError``. Other 4xx
raise typed errors at once; a 403 refreshes ``auth`` once and retries once. POST and PATCH are retried
only when surely not processed, else raised with ``outcome_unknown``. Pass a streamed body as a
factory (``body=lambda: {...}``); ``deadline()`` bounds every call in a block. Errors never quote a
URL's query string. Why: docs/guarantee.md.
"""

from __future__ import annotations

import contextvars
import email.utils
import logging
import math
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationValueError, NewConnectionError

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class ApiError(Exception):
    """An HTTP API answered with an error, or could not be reached.

    ``transient``: worth retrying within the call. ``permanent``: the same request will fail again,
    so a document behind it is set aside rather than retried later.
    """

    transient = False
    permanent = True
    #: The request may have been processed although no success was seen (a non-idempotent request's
    #: answer lost, a 5xx, a timeout): set by ``HttpClient``; the caller must look before resending.
    outcome_unknown = False

    def __init__(self, service: str, message: str, status: int | None = None, detail: str = "") -> None:
        self.service = service
        self.status = status
        self.detail = detail
        text = f"{service}: {message}"
        if status is not None:
            text += f" (HTTP {status})"
        if detail:
            text += f": {detail}"
        super().__init__(text)


class BadRequestError(ApiError):
    """400: the request was refused as malformed; retrying it cannot help."""


class ForbiddenError(ApiError):
    """403: authentication or authorisation failed (after one credential refresh)."""

    permanent = False  # usually configuration or rights, fixed without touching the document


class NotFoundError(ApiError):
    """404: the URL or resource does not exist."""


class ClientError(ApiError):
    """Any other 4xx."""


class TransientError(ApiError):
    """Connection failure, timeout, 429 or 5xx that persisted through every retry."""

    transient = True
    permanent = False


class ThrottledError(TransientError):
    """The server asked us to wait (429, or a ``Retry-After`` longer than the retry cap).

    ``retry_after``: the seconds it asked for, None when it did not say. Not a failed attempt:
    the work is handed back for later.
    """

    def __init__(self, service: str, message: str, status: int | None = None, detail: str = "",
                 *, retry_after: float | None = None) -> None:
        super().__init__(service, message, status, detail)
        self.retry_after = retry_after


_ERRORS_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequestError, 403: ForbiddenError, 404: NotFoundError}

_DETAIL_LIMIT = 500


def error_detail(response: requests.Response) -> str:
    """The server's own explanation, shortened; JSON ``Message``/``error_description`` preferred."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:_DETAIL_LIMIT].strip()
    if isinstance(payload, dict):
        for key in ("Message", "message", "error_description", "error", "title", "detail"):
            if payload.get(key):
                return str(payload[key])[:_DETAIL_LIMIT]
    return str(payload)[:_DETAIL_LIMIT]


def error_for(service: str, response: requests.Response, retry_after: float | None = None) -> ApiError:
    status = response.status_code
    message = f"{response.request.method} {_path_of(response.url)} failed"
    if status == 429:
        return ThrottledError(service, message, status, error_detail(response), retry_after=retry_after)
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = TransientError if status in TRANSIENT_STATUSES else ClientError
    return cls(service, message, status, error_detail(response))


def _path_of(url: str) -> str:
    """URL without query string: temporary download URLs carry their signature there."""
    return url.split("?", 1)[0]


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter: wait ∈ [0, min(cap, base·2^attempt)]."""

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_cap)
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)


MAX_RETRY_AFTER = 86400.0  # a longer wait is a broken header; it would also overflow sleep()


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds in [0, ``MAX_RETRY_AFTER``]: delta-seconds or an HTTP date.

    None when absent or unreadable, ``nan`` and ``inf`` included.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class DeadlineExceeded(TransientError):
    """The caller's deadline (a poll tick's budget) ran out: the work is to be released, not failed."""


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic()
    read_cap: float


_deadline: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("http_deadline", default=None)


@contextmanager
def deadline(at: float, read_cap: float) -> Iterator[None]:
    """Every call in the block ends by ``at`` (monotonic), its reads waiting at most ``read_cap`` s.

        with deadline(time.monotonic() + 30, read_cap=10):
            inqom.get_document(folder, doc_id)     # DeadlineExceeded once the 30 s are spent

    Connect and read timeouts shrink to what is left, retries stop at the deadline, and a streamed
    body checks it between chunks (``check_deadline``). A read already waiting when the deadline
    passes finishes within ``read_cap``: that is the most a deadline is overrun.
    """
    token = _deadline.set(_Deadline(at, read_cap))
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    """Seconds left before the current deadline; None without one."""
    current = _deadline.get()
    return None if current is None else current.at - time.monotonic()


def check_deadline(service: str, what: str) -> None:
    left = time_left()
    if left is not None and left <= 0:
        raise DeadlineExceeded(service, f"{what} stopped: the caller's deadline passed")


def _within_deadline(timeout: tuple[float, float], service: str, method: str, url: str) -> tuple[float, float]:
    """The call's (connect, read) timeouts, shrunk to the current deadline; DeadlineExceeded when none is left."""
    current = _deadline.get()
    if current is None:
        return timeout
    check_deadline(service, f"{method} {_path_of(url)}")
    left = current.at - time.monotonic()
    return (min(timeout[0], left), min(timeout[1], left, current.read_cap))


class RateLimiter:
    """Token bucket shared by threads: at most ``rate`` calls per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._interval = 1.0 / rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = clock()
        self._held_until = self._next_free

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(self._next_free, now - (self._burst - 1) * self._interval)
            self._next_free = start + self._interval
            wait = start - now
        if wait > 0:
            self._sleep(wait)

    def hold_off(self, seconds: float) -> None:
        """The server told us to wait (``Retry-After``): delay every caller, not only the one refused."""
        with self._lock:
            self._held_until = max(self._held_until, self._clock() + seconds)
            self._next_free = max(self._next_free, self._held_until)

    def held_off(self) -> float:
        """Seconds left of the longest ``hold_off`` (0 when none is running)."""
        with self._lock:
            return max(self._held_until - self._clock(), 0.0)


class AuthLayer(Protocol):
    def headers(self) -> Mapping[str, str]: ...

    def refresh(self, rejected_headers: Mapping[str, str]) -> None: ...


def _never_sent(exc: Exception) -> bool:
    """The connection was never made (refused, or its connect timed out): the server saw nothing."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def pooled_session(pool_size: int = 16) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class CallObserver(Protocol):
    """Told of every call's outcome and every wait for the throttle (metrics)."""

    def answered(self, status: int | None) -> None: ...

    def waited(self, seconds: float) -> None: ...


class HttpClient:
    """Throttle → auth → send with timeout → observe → classify → retry, around one pooled session."""

    def __init__(
        self,
        service: str,
        *,
        timeout: tuple[float, float],
        retry: RetryPolicy,
        throttle: RateLimiter | None = None,
        auth: AuthLayer | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        observer: CallObserver | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.retry = retry
        self.throttle = throttle
        self.auth = auth
        self.session = session or pooled_session()
        self._sleep = sleep
        self.observer = observer

    def with_auth(self, auth: AuthLayer | None) -> "HttpClient":
        """The same session, throttle, policy and observer, with another auth layer (or none)."""
        return HttpClient(self.service, timeout=self.timeout, retry=self.retry, throttle=self.throttle,
                          auth=auth, session=self.session, sleep=self._sleep, observer=self.observer)

    def _observe(self, status: int | None) -> None:
        if self.observer is not None:
            self.observer.answered(status)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Callable[[], Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        allow_redirects: bool = False,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; return a 2xx/3xx response or raise an ``ApiError``.

        ``body`` returns fresh keyword arguments for ``requests`` (``data=``, ``headers=``…)
        for each attempt, so a streamed body is re-opened rather than replayed half-read.
        ``idempotent`` defaults to what ``method`` is (see the module's docstring).
        """
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            timeout = _within_deadline(self.timeout, self.service, method, url)
            held = self.throttle.held_off() if self.throttle is not None else 0.0
            if held > self.retry.backoff_cap:
                raise ThrottledError(self.service, f"{method} {_path_of(url)} not sent: the server asked us to wait",
                                     retry_after=held)
            call_headers = dict(headers or {})
            if self.auth is not None:
                call_headers.update(self.auth.headers())
            extra = dict(body() if body else {})
            call_headers.update(extra.pop("headers", {}))
            if self.throttle is not None:
                waited = time.monotonic()
                self.throttle.acquire()
                if self.observer is not None:
                    self.observer.waited(time.monotonic() - waited)
            try:
                response = self.session.request(
                    method, url, headers=call_headers, timeout=timeout, stream=stream,
                    allow_redirects=allow_redirects, **extra, **kwargs,
                )
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                self._observe(None)
                failure: ApiError = TransientError(self.service, f"{method} {_path_of(url)} failed",
                                                   None, type(exc).__name__)
                failure.outcome_unknown = not _never_sent(exc)
                retry_after = None
                if isinstance(exc, requests.Timeout) and timeout != self.timeout:  # cut by the deadline
                    try:
                        _within_deadline(self.timeout, self.service, method, url)
                    except DeadlineExceeded as cut:
                        cut.outcome_unknown = failure.outcome_unknown
                        raise
            except (requests.RequestException, LocationValueError) as exc:
                # InvalidURL & co. quote the whole URL, signature included: keep only the type, and
                # raise outside this block so that nothing chains the original.
                failure = ApiError(self.service, f"{method} {_path_of(url)} failed", None, type(exc).__name__)
                retry_after = None
            else:
                self._observe(response.status_code)
                if response.status_code < 400:
                    return response
                if response.status_code == 403 and self.auth is not None and not refreshed:
                    response.close()
                    refreshed = True
                    log.info("%s answered 403; refreshing credentials once", self.service)
                    self.auth.refresh(call_headers)
                    attempt -= 1
                    continue
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                failure = error_for(self.service, response, retry_after)
                failure.outcome_unknown = response.status_code >= 500
                response.close()
                if failure.transient and retry_after is not None:
                    if self.throttle is not None:
                        self.throttle.hold_off(retry_after)
                    if retry_after > self.retry.backoff_cap:  # retrying sooner would defy the server's word
                        throttled = ThrottledError(self.service, f"{method} {_path_of(url)} failed", failure.status,
                                                   failure.detail, retry_after=retry_after)
                        throttled.outcome_unknown = failure.outcome_unknown
                        raise throttled
            if not idempotent and failure.outcome_unknown:
                raise failure  # resending blind could make a second copy of what the server made
            if not failure.transient or attempt >= self.retry.max_attempts:
                raise failure
            wait = self.retry.delay(attempt, retry_after)
            left = time_left()
            if left is not None and wait >= left:
                raise DeadlineExceeded(self.service, f"{method} {_path_of(url)} not retried: the caller's deadline "
                                       f"comes first ({failure})")
            log.warning("%s; attempt %d of %d, retrying in %.2fs", failure, attempt, self.retry.max_attempts, wait)
            self._sleep(wait)
