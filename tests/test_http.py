"""Pure parts of the HTTP layer: throttle, backoff, Retry-After, and URLs it cannot even send."""

import random
import traceback
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from shared.http import ApiError, HttpClient, MAX_RETRY_AFTER, RateLimiter, RetryPolicy, parse_retry_after


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_calls_to_the_configured_rate():
    time = FakeTime()
    limiter = RateLimiter(10, clock=time.clock, sleep=time.sleep)
    for _ in range(5):
        limiter.acquire()
    assert abs(time.now - 100.4) < 1e-9  # 5 calls at 10/s: the first at once, then one every 100 ms
    assert all(abs(s - 0.1) < 1e-9 for s in time.slept)


def test_rate_limiter_does_not_bank_idle_time():
    time = FakeTime()
    limiter = RateLimiter(10, clock=time.clock, sleep=time.sleep)
    limiter.acquire()
    time.now += 60  # a quiet minute must not allow a burst of 600 afterwards
    for _ in range(3):
        limiter.acquire()
    assert len(time.slept) == 2


def test_hold_off_delays_every_caller():
    time = FakeTime()
    limiter = RateLimiter(100, clock=time.clock, sleep=time.sleep)
    limiter.hold_off(2.5)
    limiter.acquire()
    assert time.slept == [2.5]


def test_backoff_is_capped_exponential_with_jitter():
    policy = RetryPolicy(max_attempts=8, backoff_base=0.5, backoff_cap=4)
    rng = random.Random(1)
    for attempt in range(1, 8):
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        ceiling = min(4, 0.5 * 2 ** (attempt - 1))
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # jitter spans the range
    assert policy.delay(1, retry_after=30) == 4  # Retry-After honoured up to the cap
    assert policy.delay(1, retry_after=2) == 2


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=lambda: now.timestamp()) == 30


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
def test_retry_after_that_is_not_a_finite_number_counts_as_absent(value):
    assert parse_retry_after(value) is None


def test_retry_after_is_clamped_to_a_day_and_to_zero():
    assert parse_retry_after("1e300") == MAX_RETRY_AFTER == 86400
    assert parse_retry_after("-5") == 0
    assert parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT") == MAX_RETRY_AFTER


def test_hold_off_is_reported_apart_from_rate_spacing():
    time = FakeTime()
    limiter = RateLimiter(1, clock=time.clock, sleep=time.sleep)
    limiter.acquire()
    limiter.acquire()  # plain rate spacing is not a hold-off
    assert limiter.held_off() == 0
    limiter.hold_off(3600)
    assert limiter.held_off() == 3600
    time.now += 3000
    assert limiter.held_off() == 600


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:99999/blob?sv=1&sig=SECRETSIG",  # InvalidURL quoting the whole URL
    "htp://127.0.0.1/blob?sig=SECRETSIG",  # InvalidSchema
    "127.0.0.1/blob?sig=SECRETSIG",  # MissingSchema
    "http://a..b/blob?sig=SECRETSIG",  # urllib3's LocationParseError, unwrapped by requests
])
def test_an_unsendable_url_is_a_permanent_error_without_its_query(url):
    client = HttpClient("store", timeout=(1, 1), retry=RetryPolicy(max_attempts=3), sleep=lambda s: None)
    with pytest.raises(ApiError) as caught:
        client.request("GET", url)
    error = caught.value
    assert type(error) is ApiError and error.permanent and not error.transient
    assert error.__cause__ is None and error.__context__ is None
    text = "".join(traceback.format_exception(error))
    assert "/blob" in text and "SECRETSIG" not in text and "sig=" not in text
