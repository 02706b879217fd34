"""audit-service killed (-9) and restarted while an emitter ships under load: every event arrives, once,
and the log verifies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from safeharbor_audit.app import build_log
from safeharbor_audit.config import load_config
from safeharbor_common.audit_emitter import AuditEmitter, ShipperSettings

from .conftest import AuditEnv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: AuditEnv, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [  # as the Dockerfile serves it: granian through the shared launcher, 2 workers
        sys.executable, "-m", "safeharbor_common.serving", "safeharbor_audit.app:create_app",
        "--port", str(port), "--workers", "2", "--threads", "4",
    ]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, env=environ, stdout=log_file, stderr=log_file, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except requests.RequestException:
            pass
        assert process.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError("audit-service did not start")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_outage_during_traffic_loses_nothing_and_doubles_nothing(audit_env: AuditEnv, tmp_path: Path) -> None:
    port = free_port()
    server_log = tmp_path / "server.log"
    server = start_server(audit_env, port, server_log)
    emitter = AuditEmitter(
        outbox_path=tmp_path / "outbox-gateway.db",
        source="gateway",
        service_url=f"http://127.0.0.1:{port}",
        token_provider=lambda: audit_env.signers["gateway"].token_for("audit"),
        settings=ShipperSettings(batch_size=100, backoff_initial=0.05, backoff_max=0.5, linger_seconds=0.005),
    )
    emitted: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            emitted.append(
                emitter.emit(
                    action="gateway.request",
                    actor=f"user-{n % 7}",
                    outcome="200",
                    resource=f"/v1/x/{n}",
                    ip="203.0.113.9",
                    user_agent="load/1",
                    request_id=f"req-{n:08d}",
                )
            )
            n += 1
            time.sleep(0.0005)

    producer = threading.Thread(target=traffic)
    producer.start()
    try:
        time.sleep(1.0)
        kill_group(server)  # mid-traffic, possibly mid-transaction
        time.sleep(1.0)  # an outage: events pile up in the outbox
        assert emitter.pending() > 0
        server = start_server(audit_env, port, server_log)
        time.sleep(1.0)
        kill_group(server)  # once more, for good measure
        server = start_server(audit_env, port, server_log)
        time.sleep(0.5)
    finally:
        stop.set()
        producer.join()
    try:
        assert emitter.flush(60), f"{emitter.pending()} events still queued"
    finally:
        emitter.close()
        kill_group(server)

    log = build_log(load_config(audit_env.environ))
    with log.engine.connect() as conn:
        stored = [str(r[0]) for r in conn.exec_driver_sql("SELECT event_id FROM audit_entries")]
    assert len(emitted) > 500
    assert len(stored) == len(set(stored)) == len(emitted)  # once each
    assert set(stored) == set(emitted)  # none lost
    report = log.verify()
    assert report.ok and report.size == len(emitted), report
    log.engine.dispose()
