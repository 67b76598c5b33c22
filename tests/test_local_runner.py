"""The README's demo command, run as a new user would: every sample ends archived."""

import os
import subprocess
import sys

import pytest
from pathlib import Path

from tests.conftest import ENFACT_COMPANY

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.long(120)
def test_demo_command_on_a_fresh_clone_archives_every_sample(tmp_path):
    """A clean clone with no venv and no node_modules: the README's demo command sets up and runs."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists() and not (clone / "node_modules").exists()
    result = subprocess.run(["bash", "scripts/run.sh", "--demo", "--timeout", "120"], cwd=clone,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "DEMO OK: 5 documents" in output
    for sample in ("supplier-invoice.pdf", "sales-invoice.pdf", "bank-statement.png", "expense-receipt.pdf",
                   "enfact-5001.pdf"):
        assert f"-{sample}" in output, sample
    assert output.count(" Archived ") == 5


def test_runner_serves_http_functions_with_their_key(app_env):
    """The runner's HTTP front door: route and method from the app, function key enforced."""
    import requests

    from devtools.run import LocalRunner

    runner = LocalRunner(dict(app_env), port=0, function_key="local-key")
    runner.start()
    try:
        base = f"http://127.0.0.1:{runner.port}"
        assert requests.post(f"{base}/api/enfact/invoices", data=b"{}", timeout=5).status_code == 401
        assert requests.get(f"{base}/api/enfact/invoices?code=local-key", timeout=5).status_code == 405
        refused = requests.post(f"{base}/api/enfact/invoices?code=local-key", data=b"{}", timeout=5,
                                headers={"Content-Type": "application/json"})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_signature"
        assert requests.post(f"{base}/admin/functions/poll_documents", timeout=5,
                             headers={"x-functions-key": "local-key"}).status_code == 202
        assert requests.get(f"{base}/api/nothing", timeout=5).status_code == 404
        pushed = subprocess.run(
            [sys.executable, "-m", "devtools.send_push", "--url", f"{base}/api/enfact/invoices?code=local-key",
             "--company", ENFACT_COMPANY, "--invoice", "5001"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, "ENFACT_WEBHOOK_SECRET": app_env["ENFACT_WEBHOOK_SECRET"]})
        assert pushed.returncode == 0 and pushed.stdout.startswith("202 "), pushed.stdout + pushed.stderr
    finally:
        runner.stop()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def test_ctrl_c_stops_every_process_the_runner_started():
    import signal
    import time

    runner = subprocess.Popen([sys.executable, "-m", "devtools.run", "--no-func", "--port", "0"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = []
        for line in runner.stdout:
            banner.append(line)
            if "tick now" in line:
                break
        assert any("webhook" in line for line in banner), "".join(banner)
        started = _descendants(runner.pid)
        assert started, "the runner should have started Azurite"
        runner.send_signal(signal.SIGINT)
        # Within devtools.run.STOP_DUMP_SECONDS it exits, or dumps every thread's stack and exits 1.
        rest, _ = runner.communicate(timeout=90)
        assert runner.returncode == 0, rest[-6000:]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in started):
            time.sleep(0.2)
        assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    finally:
        if runner.poll() is None:
            runner.kill()


def test_runner_moves_a_failing_queue_message_to_the_poison_queue(app_env, enfact):
    """The host's queue semantics: retried after the visibility timeout, poisoned after maxDequeueCount."""
    import json
    import time

    from devtools.run import LocalRunner
    from shared.services import get_services

    enfact.inject("503", times=1000)  # enFact is down for good
    runner = LocalRunner(dict(app_env), port=0, function_key="local-key")
    runner.max_dequeue, runner.visibility_timeout = 2, 1
    runner.start()
    try:
        services = get_services()
        services.enfact_queue.send_message(json.dumps({"company_uuid": ENFACT_COMPANY, "invoice_id": "5001"}))
        poison = services.stores.queue(f"{services.settings.enfact_queue}-poison")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not poison.peek_messages():
            time.sleep(0.5)
        (message,) = poison.peek_messages()
        assert json.loads(message.content)["invoice_id"] == "5001"
        assert services.enfact_queue.peek_messages() == []
    finally:
        runner.stop()


def test_azurite_never_mistakes_another_azurite_on_its_ports_for_itself(monkeypatch):
    """Two runners may both find 10000-10002 free and start at once: the loser must notice and move."""
    from azure.storage.blob import BlobServiceClient

    from tests.support import azurite as support

    with support.Azurite.start() as first:
        taken = (first.blob_port, first.queue_port, first.table_port)
        monkeypatch.setattr(support, "_is_free", lambda port: True)  # the check ran before `first` bound them
        with support.Azurite.start(ports=taken) as second:
            assert (second.blob_port, second.queue_port, second.table_port) != taken
            assert second.process.poll() is None
            first.stop()
            service = BlobServiceClient.from_connection_string(second.connection_string)
            service.create_container("still-served")
            assert [c.name for c in service.list_containers()] == ["still-served"]
