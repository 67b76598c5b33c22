"""Local runner — a DEVELOPMENT AID, not the Azure Functions host.

    python -m devtools.run            # Azurite + emulators + the app's functions, until Ctrl-C
    python -m devtools.run --demo     # drop the samples and a signed enFact push, wait until archived

It loads ``function_app.app``, reads every function's trigger binding from the app itself and
drives it like the host would (``devtools.host.LocalHost``):

- blob trigger: the inbox is listed every second and each new blob version is delivered once,
  as an Event Grid ``BlobCreated`` would; a failing delivery is retried up to host.json's
  ``poisonBlobThreshold`` times, then written to the ``webjobs-blobtrigger-poison`` queue;
- timers: fired on their NCRONTAB schedules (``POST /admin/functions/<name>`` fires one now,
  like the host's admin API);
- HTTP: served on ``http://127.0.0.1:<port>/api/<route>`` with the same methods; function-level
  auth takes the key from ``LOCAL_FUNCTION_KEY`` (``?code=`` or ``x-functions-key``);
- queues: polled every second; a failing message becomes visible again after host.json's
  ``visibilityTimeout`` and goes to ``<queue>-poison`` after ``maxDequeueCount`` attempts.

Files copied into ``local-inbox/{folderId}/{kind}/…`` are uploaded to the Azurite inbox at the
same path, then moved to ``local-inbox/.uploaded/``. The Inqom and enFact emulators are used
unless ``local.settings.json`` holds real credentials (see README). With Core Tools installed,
``scripts/run.sh`` runs ``func start`` instead of this runner.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import secrets as random_secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait as wait_for
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
LOCAL_INBOX = REPO / "local-inbox"
DEMO_FOLDER = 11287
log = logging.getLogger("devtools.run")
#: After Ctrl-C (or the demo's end), stacks of every thread go to stderr, and the process exits, if
#: it is still stopping this long after: the runner's grace, Azurite's and the emulators' together.
STOP_DUMP_SECONDS = 45


def _host_json() -> dict[str, Any]:
    return json.loads((REPO / "host.json").read_text())


def _seconds(text: str) -> float:
    hours, minutes, seconds = (float(x) for x in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def _is_placeholder(value: str | None) -> bool:
    return not value or value.startswith("<")


def local_settings() -> dict[str, str]:
    path = REPO / "local.settings.json"
    return json.loads(path.read_text()).get("Values", {}) if path.exists() else {}


class LocalRunner:
    def __init__(self, env: dict[str, str], port: int, function_key: str) -> None:
        self.env = env
        self.port = port
        self.function_key = function_key
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blob")
        self.in_flight: set[Future] = set()
        self.http: ThreadingHTTPServer | None = None
        extensions = _host_json().get("extensions", {})
        self.poison_blob_threshold = int(extensions.get("blobs", {}).get("poisonBlobThreshold", 5))
        queues = extensions.get("queues", {})
        self.max_dequeue = int(queues.get("maxDequeueCount", 5))
        self.visibility_timeout = int(_seconds(queues.get("visibilityTimeout", "00:00:30")))

    def start(self) -> None:
        os.environ.update(self.env)
        from shared.config import get_settings
        from shared.services import get_services

        get_settings.cache_clear()
        get_services.cache_clear()
        import function_app
        from devtools.host import LocalHost

        self.host = LocalHost(function_app.app)
        self.services = get_services()
        queues = [self.host.queue_name(n) for n in self.host.functions_of_type("queueTrigger")]
        self.services.ensure_storage(  # the host creates poison queues on demand: so do we, up front
            extra_queues=(*queues, *(f"{q}-poison" for q in queues), "webjobs-blobtrigger-poison"))
        for name in self.host.functions_of_type("blobTrigger"):
            self._spawn(self._watch_blobs, name)
        for name in self.host.functions_of_type("timerTrigger"):
            self._spawn(self._run_timer, name)
        for name in self.host.functions_of_type("queueTrigger"):
            self._spawn(self._poll_queue, name)
        self._spawn(self._watch_local_inbox)
        self._serve_http()

    def stop(self, grace: float = 10.0) -> None:
        """Stop serving and wait up to ``grace`` seconds in all for what is running, as a host does.

        An invocation still running then is left to fail once storage and the emulators stop (next
        in the exit stack), as it would on a host that is shut down: nothing it did is lost."""
        self.stopping.set()
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        deadline = time.monotonic() + grace
        self.pool.shutdown(wait=False, cancel_futures=True)
        for thread in self.threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0))
        _, running = wait_for(list(self.in_flight), timeout=max(deadline - time.monotonic(), 0))
        late = [thread.name for thread in self.threads if thread.is_alive()] + [f"{len(running)} blob invocation(s)"] * bool(running)
        if late:
            log.warning("still running %.0f s after stop, left to end with storage: %s", grace, ", ".join(late))

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=f"{target.__name__}{args}", daemon=True)
        thread.start()
        self.threads.append(thread)

    # -- blob trigger -------------------------------------------------------------------------
    def _watch_blobs(self, name: str) -> None:
        container = self.services.stores.container(self.host.blob_container(name))
        delivered: set[tuple[str, str]] = set()
        failures: dict[tuple[str, str], int] = {}
        in_flight: set[tuple[str, str]] = set()
        lock = threading.Lock()

        def deliver(version: tuple[str, str]) -> None:
            try:
                self.host.deliver_blob(name, version[0])
                with lock:
                    delivered.add(version)
            except Exception as exc:  # the host would retry: so do we, then poison
                with lock:
                    failures[version] = failures.get(version, 0) + 1
                    attempts = failures[version]
                log.warning("%s failed for %s (attempt %d of %d): %s", name, version[0], attempts,
                            self.poison_blob_threshold, exc)
                if attempts >= self.poison_blob_threshold:
                    self.services.stores.queue("webjobs-blobtrigger-poison").send_message(
                        json.dumps({"FunctionId": f"Host.Functions.{name}", "BlobName": version[0], "ETag": version[1]}))
                    with lock:
                        delivered.add(version)
            finally:
                with lock:
                    in_flight.discard(version)

        while not self.stopping.wait(1.0):
            try:
                versions = [(b.name, b.etag) for b in container.list_blobs()]
            except Exception as exc:
                log.warning("listing %s failed: %s", container.container_name, exc)
                continue
            with lock:
                fresh = [v for v in versions if v not in delivered and v not in in_flight]
                in_flight.update(fresh)
            for version in fresh:
                future = self.pool.submit(deliver, version)
                self.in_flight.add(future)
                future.add_done_callback(self.in_flight.discard)

    def _watch_local_inbox(self) -> None:
        sent = LOCAL_INBOX / ".uploaded"
        sizes: dict[Path, int] = {}
        while not self.stopping.wait(1.0):
            if not LOCAL_INBOX.is_dir():
                continue
            for path in sorted(p for p in LOCAL_INBOX.rglob("*") if p.is_file() and sent not in p.parents):
                size = path.stat().st_size
                if sizes.get(path) != size:  # wait until a copy in progress has settled
                    sizes[path] = size
                    continue
                relative = path.relative_to(LOCAL_INBOX).as_posix()
                with open(path, "rb") as data:
                    self.services.stores.container(self.services.settings.inbox_container).upload_blob(
                        relative, data, overwrite=True)
                target = sent / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), target)
                sizes.pop(path, None)
                log.info("local-inbox: %s uploaded to the inbox", relative)

    # -- timers -------------------------------------------------------------------------------
    def _run_timer(self, name: str) -> None:
        from devtools.ncrontab import Schedule

        schedule = Schedule(self.host.schedule(name))
        due = schedule.next_after(datetime.now(timezone.utc))
        while not self.stopping.is_set():
            wait = (due - datetime.now(timezone.utc)).total_seconds()
            if self.stopping.wait(max(wait, 0)):
                return
            now = datetime.now(timezone.utc)
            self.fire(name, past_due=(now - due).total_seconds() > 1)
            due = schedule.next_after(now)

    def fire(self, name: str, past_due: bool = False) -> None:
        try:
            self.host.fire_timer(name, past_due=past_due)
        except Exception:
            log.exception("timer %s failed", name)

    # -- queues -------------------------------------------------------------------------------
    def _poll_queue(self, name: str) -> None:
        queue_name = self.host.queue_name(name)
        queue = self.services.stores.queue(queue_name)
        poison = self.services.stores.queue(f"{queue_name}-poison")
        while not self.stopping.wait(1.0):
            try:
                messages = list(queue.receive_messages(messages_per_page=8, visibility_timeout=self.visibility_timeout))
            except Exception as exc:
                log.warning("receiving from %s failed: %s", queue_name, exc)
                continue
            for message in messages:
                try:
                    self.host.deliver_queue_message(name, message.content, message.dequeue_count, message.id)
                except Exception as exc:
                    log.warning("%s failed on message %s (dequeue %d of %d): %s", name, message.id,
                                message.dequeue_count, self.max_dequeue, exc)
                    if message.dequeue_count >= self.max_dequeue:
                        poison.send_message(message.content)
                        queue.delete_message(message)
                    continue
                queue.delete_message(message)

    # -- HTTP ---------------------------------------------------------------------------------
    def _serve_http(self) -> None:
        runner = self
        routes = {}
        for name in self.host.functions_of_type("httpTrigger"):
            route, methods, level = self.host.http_route(name)
            routes[f"/api/{route.strip('/')}"] = (name, methods, level)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http: " + fmt, *args)

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                key = parse_qs(target.query).get("code", [None])[0] or self.headers.get("x-functions-key")
                if target.path.startswith("/admin/functions/") and self.command == "POST":
                    name = target.path.rsplit("/", 1)[-1]
                    if key != runner.function_key:
                        return self._reply(401, b'{"error": "function key required"}')
                    if name not in runner.host.functions:
                        return self._reply(404, b'{"error": "no such function"}')
                    runner.fire(name)
                    return self._reply(202, b"{}")
                if target.path not in routes:
                    return self._reply(404, b'{"error": "not found"}')
                name, methods, level = routes[target.path]
                if self.command not in methods:
                    return self._reply(405, b'{"error": "method not allowed"}')
                if level != "anonymous" and key != runner.function_key:
                    return self._reply(401, b'{"error": "function key required"}')
                response = runner.host.call_http(name, self.command, self.path, dict(self.headers.items()), body)
                self._reply(response.status_code, response.get_body(), response.mimetype or "application/json")

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self._spawn(self.http.serve_forever)


def build_environment(args, azurite, inqom, enfact) -> dict[str, str]:
    """local.settings.json values, with storage and (unless real ones are configured) emulators."""
    values = {k: v for k, v in local_settings().items() if not _is_placeholder(v)}
    env = {"FUNCTIONS_WORKER_RUNTIME": "python", **values,
           "DocumentStorage": azurite.connection_string, "AzureWebJobsStorage": azurite.connection_string,
           "SECRETS_FROM_ENVIRONMENT": values.get("SECRETS_FROM_ENVIRONMENT", "true")}
    for setting in ("INBOX_CONTAINER", "ARCHIVE_CONTAINER", "QUARANTINE_CONTAINER", "LEDGER_BACKUP_CONTAINER",
                    "LEDGER_TABLE", "ENFACT_QUEUE", "POLL_SCHEDULE", "ENFACT_RECONCILE_SCHEDULE", "LEDGER_BACKUP_SCHEDULE"):
        from shared.config import SETTINGS

        env.setdefault(setting, next(s.default for s in SETTINGS if s.env == setting))
    if inqom is not None:
        env.update({"INQOM_TOKEN_URL": inqom.token_url, "INQOM_API_BASE_URL": inqom.base_url,
                    "ARCHIVE_ALLOWED_HOSTS": inqom.host, "INQOM_USERNAME": inqom.username,
                    "INQOM_PASSWORD": inqom.password, "INQOM_CLIENT_ID": inqom.client_id,
                    "INQOM_CLIENT_SECRET": inqom.client_secret})
    if enfact is not None:
        company = enfact.companies[0]
        env.update({"ENFACT_API_BASE_URL": enfact.base_url, "ENFACT_SESSION_KEY": enfact.session_key,
                    "ENFACT_COMPANY_FOLDERS": f"{company}={DEMO_FOLDER}"})
    env.setdefault("ENFACT_WEBHOOK_SECRET", "whsec_" + __import__("base64").b64encode(random_secrets.token_bytes(24)).decode())
    if args.demo:
        env.update({"POLL_SCHEDULE": "*/2 * * * * *", "POLL_FIRST_DELAY_SECONDS": "1", "POLL_MAX_INTERVAL_SECONDS": "2"})
    return env


DEMO_DROPS = {
    "supplier-invoice.pdf": f"{DEMO_FOLDER}/supplier/supplier-invoice.pdf",
    "sales-invoice.pdf": f"{DEMO_FOLDER}/client/sales-invoice.pdf",
    "bank-statement.png": f"{DEMO_FOLDER}/other/bank-statement.png",
    "expense-receipt.pdf": f"{DEMO_FOLDER}/expense/Camille Martin/expense-receipt.pdf",
}


def run_demo(runner: LocalRunner, enfact, timeout: float) -> int:
    """Drop one sample per kind and push one enFact invoice; wait until all are archived."""
    from devtools.send_push import send

    inbox = runner.services.stores.container(runner.services.settings.inbox_container)
    for sample, path in DEMO_DROPS.items():
        inbox.upload_blob(path, (REPO / "samples" / sample).read_bytes(), overwrite=True)
        print(f"  dropped samples/{sample} -> inbox/{path}")
    invoice = enfact.add_invoice(enfact.companies[0], number="DEMO-0001", customer="Boulangerie Dupont")
    response = send(f"http://127.0.0.1:{runner.port}/api/enfact/invoices?code={runner.function_key}",
                    runner.env["ENFACT_WEBHOOK_SECRET"], enfact.companies[0], str(invoice["id"]))
    print(f"  pushed enFact invoice {invoice['id']} -> HTTP {response.status_code} {response.text}")
    expected = {path: path for path in DEMO_DROPS.values()}
    expected[f"enFact invoice {invoice['id']}"] = f"{DEMO_FOLDER}/client/enfact-{invoice['id']}.pdf"
    deadline = time.monotonic() + timeout
    rows: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = {e.get("BlobPath"): e for e in runner.services.ledger.scan()}
        if all(rows.get(path) is not None and rows[path].state == "Archived" for path in expected.values()):
            break
        time.sleep(1)
    print(f"\n  {'document':<45} {'kind':<9} {'Inqom id':<9} {'state':<12} archive")
    missing = []
    for label, path in expected.items():
        entry = rows.get(path)
        state = entry.state if entry else "not seen"
        print(f"  {label:<45} {(entry.get('Kind') if entry else '-'):<9} {str(entry.get('InqomId') if entry else '-'):<9} "
              f"{state:<12} {entry.get('ArchivePath') if entry else '-'}")
        if state != "Archived":
            missing.append(f"{label} ({state})")
    if missing:
        print(f"\nDEMO FAILED: not archived within {timeout:.0f}s: {', '.join(missing)}")
        return 1
    print(f"\nDEMO OK: {len(expected)} documents sent to Inqom (emulator) and archived with verified SHA-1.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="run the demo and exit (0 when everything is archived)")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port for the functions (default 7071)")
    parser.add_argument("--timeout", type=float, default=180, help="demo: seconds to wait for the archive")
    parser.add_argument("--emulators", choices=("auto", "on"), default="auto",
                        help="auto: emulate Inqom/enFact unless local.settings.json holds real credentials")
    parser.add_argument("--no-func", action="store_true", help="use this runner even when Core Tools (func) is installed")
    args = parser.parse_args(argv)
    from shared.observability import LOCAL_FORMAT, install_filter

    logging.basicConfig(level=logging.INFO, format=LOCAL_FORMAT)
    install_filter()
    for noisy in ("azure", "urllib3", "tests.emulators"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from tests.emulators.enfact import EnfactEmulator
    from tests.emulators.inqom import InqomEmulator
    from tests.support.azurite import Azurite

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background, where it is ignored
    values = local_settings()
    real_inqom = not args.demo and args.emulators == "auto" and not _is_placeholder(values.get("INQOM_USERNAME"))
    real_enfact = not args.demo and args.emulators == "auto" and not _is_placeholder(values.get("ENFACT_SESSION_KEY"))
    data_dir = None if args.demo else REPO / ".azurite"
    if data_dir:
        data_dir.mkdir(exist_ok=True)
    try:
        with contextlib.ExitStack() as started:  # everything started here is stopped on any exit
            azurite = started.enter_context(Azurite.start(ports=(10000, 10001, 10002), data_dir=data_dir))
            inqom = None if real_inqom else started.enter_context(InqomEmulator())
            enfact = None if real_enfact else started.enter_context(EnfactEmulator())
            key = os.environ.get("LOCAL_FUNCTION_KEY") or random_secrets.token_urlsafe(24)
            env = build_environment(args, azurite, inqom, enfact)
            if shutil.which("func") and not args.demo and not args.no_func:
                print("Core Tools found: running `func start` (the real host) against Azurite and the emulators.")
                return subprocess.call(["func", "start", "--port", str(args.port)], cwd=REPO, env={**os.environ, **env})
            runner = LocalRunner(env, args.port if not args.demo else 0, key)
            started.callback(runner.stop)
            # Runs first on the way out: if stopping takes long, every thread's stack says why.
            started.callback(faulthandler.dump_traceback_later, STOP_DUMP_SECONDS, exit=True)
            runner.start()
            print("\ninqom-bridge local runner (development aid — not the Azure Functions host)")
            print(f"  storage      Azurite {azurite.connection_string.split('BlobEndpoint=')[1].split(';')[0]}")
            print(f"  Inqom        {'REAL ' + env['INQOM_API_BASE_URL'] if inqom is None else 'emulator ' + inqom.base_url}")
            print(f"  enFact       {'REAL ' + env['ENFACT_API_BASE_URL'] if enfact is None else 'emulator ' + enfact.base_url}")
            print("  drop files   local-inbox/<folderId>/<supplier|client|other|expense>/<file>  (or the Azurite 'inbox' container)")
            print(f"  webhook      POST http://127.0.0.1:{runner.port}/api/enfact/invoices?code={key}")
            print(f"  tick now     POST http://127.0.0.1:{runner.port}/admin/functions/poll_documents?code={key}")
            print("  status       python -m inqom_bridge_cli status   (with DocumentStorage=UseDevelopmentStorage=true)\n",
                  flush=True)
            if args.demo:
                return run_demo(runner, enfact, args.timeout)
            # Woken twice a second: a SIGINT the kernel hands to another thread only sets a flag
            # that the main thread reads between bytecodes, never inside an untimed wait.
            while not stop.wait(0.5):
                pass
            return 0
    except KeyboardInterrupt:
        return 0

if __name__ == "__main__":
    sys.exit(main())
