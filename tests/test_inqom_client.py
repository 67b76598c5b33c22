"""The Inqom client and its auth/retry layers, against the loopback Inqom emulator."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.auth import AuthenticationError, InqomTokenProvider
from shared.http import (BadRequestError, HttpClient, NotFoundError, RateLimiter, RetryPolicy, ThrottledError,
                         TransientError)
from shared.inqom.client import DownloadRefused, InqomClient, InqomDocument, safe_download_url
from shared.secrets import EnvironmentSecrets
from tests.conftest import INQOM_CREDENTIALS

FOLDER = 11287


class Client:
    """Client stack as the app builds it, with the retry waits recorded instead of slept."""

    def __init__(self, emulator, *, max_attempts=4, secrets=None, rps=1000.0, backoff_cap=5.0):
        self.sleeps: list[float] = []
        self.now = 1000.0
        secrets = secrets or EnvironmentSecrets({
            "INQOM_USERNAME": INQOM_CREDENTIALS["username"], "INQOM_PASSWORD": INQOM_CREDENTIALS["password"],
            "INQOM_CLIENT_ID": INQOM_CREDENTIALS["client_id"], "INQOM_CLIENT_SECRET": INQOM_CREDENTIALS["client_secret"],
        })
        self.http = HttpClient("inqom", timeout=(5, 5), retry=RetryPolicy(max_attempts=max_attempts, backoff_cap=backoff_cap),
                               throttle=RateLimiter(rps), sleep=self.sleeps.append)
        self.tokens = InqomTokenProvider(secrets, emulator.token_url, self.http, clock=lambda: self.now)
        self.inqom = InqomClient(emulator.base_url, self.http.with_auth(self.tokens))


def upload(client: Client, data: bytes = b"%PDF-1.4 invoice", name: str = "facture.pdf", **kw) -> InqomDocument:
    return client.inqom.upload_document(FOLDER, type_scan=kw.pop("type_scan", "Supplier"),
                                        open_file=lambda: io.BytesIO(data), file_name=name, **kw)


def test_token_request_is_exactly_the_documented_form(inqom):
    client = Client(inqom)
    upload(client)
    (call,) = inqom.token_calls()
    assert call.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert call.form == {
        "username": INQOM_CREDENTIALS["username"], "password": INQOM_CREDENTIALS["password"],
        "grant_type": "password", "scope": "openid apidata",
        "client_id": INQOM_CREDENTIALS["client_id"], "client_secret": INQOM_CREDENTIALS["client_secret"],
    }
    api_call = inqom.calls("POST", "/Documents")[0]
    assert api_call.headers["Authorization"].startswith("Bearer ")


def test_upload_body_carries_the_file_and_every_field(inqom):
    client = Client(inqom)
    data = bytes(range(256)) * 40 + b"\r\n--boundary-like\r\n"
    document = upload(client, data, "Facture été.pdf", doc_ref="F-2026-001", source_id="ledger-abc",
                      without_workflow=True, document_name="Achat mars.pdf")
    (call,) = inqom.calls("POST", "/Documents")
    assert call.path == f"/api/accounting-documents/accounting-folders/{FOLDER}/Documents/"
    assert call.form == {"TypeScan": "Supplier", "FileSource": "Api", "DocRef": "F-2026-001",
                         "SourceId": "ledger-abc", "WithoutWorkflow": "true", "DocumentName": "Achat mars.pdf"}
    sent = call.files["Document"]
    assert sent.data == data and sent.filename == "Facture été.pdf"
    assert document.checksum == hashlib.sha1(data).hexdigest().upper()
    assert document.status == "Received"


def test_expense_bill_fields(inqom):
    client = Client(inqom)
    document_id = client.inqom.upload_expense_bill(FOLDER, open_file=lambda: io.BytesIO(b"ticket"),
                                                   file_name="taxi.jpg", beneficiary="Jeanne Dupont",
                                                   document_reference="NDF-7")
    (call,) = inqom.calls("POST", "/expense-bills")
    assert call.path == f"/api/v1/accounting-folders/{FOLDER}/expense-bills"
    assert call.form == {"BeneficiaryFullName": "Jeanne Dupont", "FileNameWithExtension": "taxi.jpg",
                         "DocumentReference": "NDF-7"}
    assert call.files["File"].data == b"ticket"
    assert inqom.documents[document_id]["UserDefinedThirdPartyName"] == "Jeanne Dupont"


def test_fifty_concurrent_uploads_share_one_token(inqom):
    inqom.inject("slow", times=1, path_contains="/identity/connect/token", delay=0.3)
    client = Client(inqom)
    with ThreadPoolExecutor(max_workers=16) as pool:
        documents = list(pool.map(lambda i: upload(client, f"invoice {i}".encode(), f"f{i}.pdf"), range(50)))
    assert len({d.id for d in documents}) == 50
    assert len(inqom.token_calls()) == 1


def test_token_refreshed_before_expiry(inqom):
    inqom.token_ttl = 600
    client = Client(inqom)
    upload(client, b"one", "a.pdf")
    client.now += 539  # still more than the 60 s margin left
    upload(client, b"two", "b.pdf")
    assert len(inqom.token_calls()) == 1
    client.now += 2  # inside the margin: refreshed before Inqom would refuse it
    upload(client, b"three", "c.pdf")
    assert len(inqom.token_calls()) == 2
    assert all(r.status == 200 for r in inqom.calls("POST", "/Documents"))


def test_403_refreshes_the_token_once_and_retries_once(inqom):
    client = Client(inqom)
    upload(client, b"one", "a.pdf")
    inqom.expire_tokens()
    document = upload(client, b"two", "b.pdf")
    assert document.id
    statuses = [r.status for r in inqom.calls("POST", "/Documents")]
    assert statuses == [200, 403, 200]
    assert len(inqom.token_calls()) == 2

    inqom.forbidden_folders.add(FOLDER)  # a real authorisation failure: one refresh, then give up
    from shared.http import ForbiddenError
    with pytest.raises(ForbiddenError):
        client.inqom.get_document(FOLDER, document.id)
    assert len(inqom.calls("GET", f"/Documents/{document.id}")) == 2


@pytest.mark.parametrize("kind", ["500", "503", "429", "drop"])
def test_transient_failures_of_a_get_are_retried_then_succeed(inqom, kind):
    client = Client(inqom)
    document = upload(client)
    inqom.inject(kind, times=2, path_contains=f"/Documents/{document.id}",
                 retry_after=3 if kind == "429" else None)
    assert client.inqom.get_document(FOLDER, document.id).id == document.id
    calls = inqom.calls("GET", f"/Documents/{document.id}")
    assert len(calls) == 3 and calls[-1].status == 200
    assert len(client.sleeps) == 2
    if kind == "429":
        assert client.sleeps == [3, 3]  # Retry-After honoured
    else:
        assert all(0 <= s <= 5 for s in client.sleeps)


def test_a_refused_upload_is_retried_in_call(inqom):
    """429: Inqom refused before doing anything, so sending again is safe."""
    client = Client(inqom)
    inqom.inject("429", times=2, path_contains="/Documents", retry_after=3)
    document = upload(client)
    assert list(inqom.documents) == [document.id]
    assert [c.status for c in inqom.calls("POST", "/Documents")] == [429, 429, 200]
    assert client.sleeps == [3, 3]


@pytest.mark.parametrize("kind", ["500", "503", "504", "drop", "drop_after_process"])
def test_an_upload_whose_outcome_is_unknown_is_never_resent_in_call(inqom, kind):
    """A 5xx or a lost answer may hide a document Inqom made: the caller must look before sending again."""
    client = Client(inqom)
    inqom.inject(kind, times=3, path_contains="/Documents", method="POST")
    with pytest.raises(TransientError) as error:
        upload(client)
    assert error.value.outcome_unknown
    assert len(inqom.calls("POST", "/Documents")) == 1
    assert client.sleeps == []
    assert inqom.document_count() == (1 if kind == "drop_after_process" else 0)


def test_retries_are_capped(inqom):
    client = Client(inqom, max_attempts=3)
    document = upload(client)
    inqom.inject("500", times=10, path_contains=f"/Documents/{document.id}")
    with pytest.raises(TransientError) as error:
        client.inqom.get_document(FOLDER, document.id)
    assert error.value.status == 500
    assert len(inqom.calls("GET", f"/Documents/{document.id}")) == 3


def test_retry_after_that_is_not_a_number_is_retried_as_if_absent(inqom):
    client = Client(inqom)
    inqom.inject("429", times=2, path_contains="/Documents", retry_after="nan")
    assert upload(client).id
    assert len(inqom.calls("POST", "/Documents")) == 3
    assert len(client.sleeps) == 2 and all(0 <= s <= 5 for s in client.sleeps)


def test_retry_after_beyond_the_cap_hands_back_at_once(inqom):
    client = Client(inqom, backoff_cap=0.05)
    upload(client, b"warm-up", "w.pdf")  # token fetched
    inqom.reset_requests()
    inqom.inject("429", times=1, path_contains="/Documents", retry_after=3600)
    with pytest.raises(ThrottledError) as error:
        upload(client)
    assert error.value.retry_after == 3600 and error.value.status == 429
    assert error.value.transient and not error.value.permanent
    assert len(inqom.calls("POST", "/Documents")) == 1 and client.sleeps == []
    with pytest.raises(ThrottledError) as held:  # the other callers of the process hold off too, unsent
        client.inqom.get_document(FOLDER, 1)
    assert 3500 < held.value.retry_after <= 3600
    assert len(inqom.requests) == 1


def test_503_with_retry_after_beyond_the_cap_is_throttled_too(inqom):
    client = Client(inqom, backoff_cap=0.05)
    inqom.inject("503", times=1, path_contains="/Documents", retry_after=120)
    with pytest.raises(ThrottledError) as error:
        upload(client)
    assert error.value.retry_after == 120 and error.value.status == 503
    assert len(inqom.calls("POST", "/Documents")) == 1


@pytest.mark.parametrize("retry_after", [0.01, None])
def test_429_through_every_attempt_is_throttled_not_failed(inqom, retry_after):
    client = Client(inqom, max_attempts=3)
    inqom.inject("429", times=10, path_contains="/Documents", retry_after=retry_after)
    with pytest.raises(ThrottledError) as error:
        upload(client)
    assert error.value.retry_after == retry_after and error.value.status == 429
    assert len(inqom.calls("POST", "/Documents")) == 3


def test_bad_request_is_not_retried_and_carries_inqom_message(inqom):
    client = Client(inqom)
    with pytest.raises(BadRequestError) as error:
        client.inqom.upload_document(FOLDER, type_scan="Supplier", open_file=lambda: io.BytesIO(b""), file_name="a.pdf")
    assert error.value.status == 400 and error.value.detail
    assert len(inqom.calls("POST", "/Documents")) == 1
    assert client.sleeps == []


def test_unknown_folder_and_document_are_not_found(inqom):
    client = Client(inqom)
    inqom.unknown_folders.add(999)
    with pytest.raises(NotFoundError):
        client.inqom.upload_document(999, type_scan="Client", open_file=lambda: io.BytesIO(b"x"), file_name="a.pdf")
    with pytest.raises(NotFoundError):
        client.inqom.get_document(FOLDER, 424242)


def test_refused_credentials_raise_authentication_error_without_the_password(inqom):
    secrets = EnvironmentSecrets({"INQOM_USERNAME": INQOM_CREDENTIALS["username"], "INQOM_PASSWORD": "wrong-pass",
                                  "INQOM_CLIENT_ID": INQOM_CREDENTIALS["client_id"],
                                  "INQOM_CLIENT_SECRET": INQOM_CREDENTIALS["client_secret"]})
    client = Client(inqom, secrets=secrets)
    with pytest.raises(AuthenticationError) as error:
        upload(client)
    assert "wrong-pass" not in str(error.value)
    assert len(inqom.token_calls()) == 1


@pytest.mark.parametrize("as_array", [True, False])
@pytest.mark.parametrize("typo", [True, False])
def test_document_parsing_is_tolerant(inqom, as_array, typo):
    inqom.get_as_array, inqom.use_origine_typo = as_array, typo
    client = Client(inqom)
    first = upload(client, b"same bytes", "a.pdf")
    second = upload(client, b"same bytes", "b.pdf")
    fetched = client.inqom.get_document(FOLDER, second.id)
    assert fetched.status == "Duplicate" and fetched.origin_id == first.id
    assert fetched.checksum == hashlib.sha1(b"same bytes").hexdigest().upper()


def test_status_reasons_are_split(inqom):
    client = Client(inqom)
    document = upload(client)
    inqom.set_status(document.id, "ToReview", ["ExerciseLockedForDates", "JournalNotFound"])
    assert client.inqom.get_document(FOLDER, document.id).status_reasons == ("ExerciseLockedForDates", "JournalNotFound")


def test_public_url_download_is_streamed_and_host_checked(inqom):
    client = Client(inqom)
    data = os.urandom(3 * 1024 * 1024)
    document = upload(client, data)
    url = client.inqom.get_public_url(FOLDER, document.id)
    assert b"".join(client.inqom.download(url, (inqom.host,))) == data
    assert "Authorization" not in inqom.calls("GET", "/public/")[-1].headers
    with pytest.raises(DownloadRefused):
        client.inqom.download(url, ("fredprodstorage.blob.core.windows.net",))
    inqom.redirect_public_to = f"http://127.0.0.2:{inqom.port}/elsewhere"
    with pytest.raises(DownloadRefused):
        client.inqom.download(client.inqom.get_public_url(FOLDER, document.id), (inqom.host,))


def _signed_url(client: Client, inqom) -> tuple[str, str]:
    """A fresh temporary URL of a new document, and the path-and-query part after its authority."""
    url = client.inqom.get_public_url(FOLDER, upload(client).id)
    return url, url.split(f"{inqom.host}:{inqom.port}", 1)[1]


ALLOWED = "fredprodstorage.blob.core.windows.net"


def test_a_backslash_before_at_cannot_send_the_download_elsewhere(inqom):
    client = Client(inqom)
    _, rest = _signed_url(client, inqom)
    # urllib.parse reads the host as ALLOWED; urllib3 would connect to the emulator.
    url = f"http://{inqom.host}:{inqom.port}\\@{ALLOWED}{rest}"
    inqom.reset_requests()
    with pytest.raises(DownloadRefused) as error:
        client.inqom.download(url, (ALLOWED,))
    assert "sig" not in str(error.value)
    assert inqom.requests == []


def test_userinfo_in_a_download_url_is_refused(inqom):
    client = Client(inqom)
    _, rest = _signed_url(client, inqom)
    inqom.reset_requests()
    with pytest.raises(DownloadRefused) as error:
        client.inqom.download(f"http://user:pw@{inqom.host}:{inqom.port}{rest}", (inqom.host,))
    assert "sig" not in str(error.value) and "pw" not in str(error.value)
    assert inqom.requests == []


@pytest.mark.parametrize("url, reason", [
    (f"http://{ALLOWED}/c/b.pdf?sv=1&sig=SECRETSIG", "scheme"),
    (f"https://{ALLOWED}:8443/c/b.pdf?sv=1&sig=SECRETSIG", "port"),
    ("https://evil.example.com/c/b.pdf?sv=1&sig=SECRETSIG", "ARCHIVE_ALLOWED_HOSTS"),
    (f"https://{ALLOWED}.evil.example.com/c/b.pdf?sig=SECRETSIG", "ARCHIVE_ALLOWED_HOSTS"),
    (f"https://evil.example.com\\@{ALLOWED}/c/b.pdf?sig=SECRETSIG", "backslash"),
    (f"https://x@{ALLOWED}/c/b.pdf?sig=SECRETSIG", "userinfo"),
    (f"https://{ALLOWED}/c/b c.pdf?sig=SECRETSIG", "whitespace"),
    (f"https://{ALLOWED}/c/b.pdf\t?sig=SECRETSIG", "control"),
])
def test_download_urls_outside_the_rule_are_refused_without_their_query(url, reason):
    with pytest.raises(DownloadRefused) as error:
        safe_download_url(url, (ALLOWED, "127.0.0.1"))
    assert reason in str(error.value) and "SECRETSIG" not in str(error.value)


def test_a_download_url_is_rebuilt_from_its_checked_parts():
    assert safe_download_url(f"HTTPS://{ALLOWED.upper()}:443/c/b.pdf?sv=1&sig=a%2Bb#frag", (ALLOWED,)) == \
        f"https://{ALLOWED}/c/b.pdf?sv=1&sig=a%2Bb"
    assert safe_download_url("http://localhost:7000/x?sig=s", ("localhost",)) == "http://localhost:7000/x?sig=s"
    assert safe_download_url("http://[::1]:7000/x", ("::1",)) == "http://[::1]:7000/x"


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_hundred_megabyte_upload_streams(inqom, tmp_path):
    size = 120 * 1024 * 1024
    path = tmp_path / "big.pdf"
    digest = hashlib.sha1()
    with open(path, "wb") as out:
        block = os.urandom(1024 * 1024)
        for i in range(size // len(block)):
            chunk = block[:-4] + i.to_bytes(4, "big")
            digest.update(chunk)
            out.write(chunk)
    client = Client(inqom)
    upload(client, b"warm-up", "w.pdf")  # token, pool, imports
    baseline = _rss_kib()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_kib())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        document = client.inqom.upload_document(FOLDER, type_scan="Others", open_file=lambda: open(path, "rb"),
                                                file_name="big.pdf")
    finally:
        done.set()
        sampler.join()
    growth_mib = (peak - baseline) / 1024
    assert document.checksum == digest.hexdigest().upper()
    assert growth_mib < 30, f"uploading {size >> 20} MiB grew RSS by {growth_mib:.1f} MiB"
    print(f"120 MiB upload: peak RSS growth {growth_mib:.1f} MiB")
