"""`make run` (`python -m safeharbor_devstack`) as a user runs it: starts the stack and, with no Stream
credentials, the local Stream emulator and says so; prints the gateway URL; Ctrl-C (SIGINT) stops every
process it started and exits 0. Runs in a temporary var dir on free ports, so a real `make run` and its
var/ are left alone."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from safeharbor_devstack.stack import SERVICES, free_port

START_TIMEOUT = 120.0  # the whole stack on a 2-core machine under load (30+ took over 45 s): migrations, seeding
STOP_TIMEOUT = 20.0  # Stack.stop: SIGTERM, 10 s grace, then SIGKILL
GATEWAY_LINE = re.compile(r"^SafeHarbor gateway: (http://127\.0\.0\.1:\d+)$")
EMULATOR_LINE = re.compile(r"^Stream: starting the LOCAL STREAM EMULATOR \(dev tool\) at (http://\S+)$")
STREAM_SETTINGS = ("STREAM_API_KEY", "STREAM_API_SECRET", "STREAM_CHAT_URL", "STREAM_EMULATOR")


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, session id, start time) from /proc, None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`: pid -> start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append((pid, stat[3]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            found[pid] = started
            todo.append(pid)
    return found


def _left_running(known: dict[int, int], sessions: set[int]) -> list[str]:
    """Processes still alive (not zombies) that are one of `known`, or in one of the services' sessions
    (a server worker re-parented to init after its main process died)."""
    left = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        if known.get(pid) == stat[3] or stat[2] in sessions:
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                left.append(f"{pid}: {command}")
    return left


class Output:
    """The process's stdout, line by line, read on a thread (a full pipe would block the stack)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], deadline: float, process: subprocess.Popen[str]) -> re.Match[str]:
        with self._changed:
            while True:
                match = next((m for m in map(pattern.match, self.lines) if m), None)
                if match:
                    return match
                if process.poll() is not None and not self._thread.is_alive():
                    pytest.fail(f"devstack exited ({process.returncode}) before {pattern.pattern!r}:\n{self.text}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {pattern.pattern!r} within {START_TIMEOUT} s:\n{self.text}")
                self._changed.wait(timeout=0.5)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def devstack_env(tmp_path: Path) -> dict[str, str]:
    """No Stream credentials (so the emulator starts), no external databases, free ports, a temp var dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in STREAM_SETTINGS and not k.endswith("_DATABASE_URL") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update({f"{spec.name.upper()}_PORT": str(free_port()) for spec in SERVICES})
    env.update({
        "SAFEHARBOR_VAR_DIR": str(tmp_path / "var"),
        "STREAM_EMULATOR_PORT": str(free_port()),
        "GATEWAY_INTERNAL_PORT": str(free_port()),
        "SAFEHARBOR_WORKERS": "1",  # a light stack: the machine may be busy
        "SAFEHARBOR_ENV": "dev",
        "SAFEHARBOR_DEMO_PASSWORD": "Devstack-test-2026",
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Run:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.output = Output(process)
        self.children: dict[int, int] = {}  # filled by the test once the stack runs, for the clean-up


ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def devstack(devstack_env: dict[str, str]) -> Iterator[Run]:
    # From the repository root as `make run`; its own process group as a terminal's foreground job (Ctrl-C
    # goes to the group).
    process = subprocess.Popen([sys.executable, "-m", "safeharbor_devstack"], env=devstack_env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run = Run(process)
    try:
        yield run
    finally:
        # Whatever happened, leave nothing behind: only the processes this test started, by id.
        if process.poll() is None:
            run.children.update(_descendants(process.pid))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for pid, started in run.children.items():
            stat = _proc_stat(pid)
            if stat is not None and stat[3] == started and stat[2] == pid:  # a service's session leader
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def test_make_run_starts_stack_with_emulator_and_stops_on_ctrl_c(devstack: Run, devstack_env: dict[str, str]) -> None:
    process, output = devstack.process, devstack.output
    deadline = time.monotonic() + START_TIMEOUT
    emulator = output.wait_for(EMULATOR_LINE, deadline, process).group(1)
    gateway = output.wait_for(GATEWAY_LINE, deadline, process).group(1)
    assert gateway == f"http://127.0.0.1:{devstack_env['GATEWAY_PORT']}"
    assert emulator == f"http://127.0.0.1:{devstack_env['STREAM_EMULATOR_PORT']}"
    assert requests.get(gateway + "/healthz", timeout=5).status_code == 200
    assert requests.get(emulator + "/_emulator/state", timeout=5).status_code == 200
    assert "Devstack-test-2026" in output.text  # dev mode prints the demo users' password
    # /metrics only on the gateway's internal listener, never on the public port.
    assert requests.get(gateway + "/metrics", timeout=5).status_code == 404
    internal = f"http://127.0.0.1:{devstack_env['GATEWAY_INTERNAL_PORT']}/metrics"
    assert requests.get(internal, timeout=5).status_code == 200

    children = devstack.children = _descendants(process.pid)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children]
    assert sum(b"safeharbor_common.serving" in c for c in commands) >= len(SERVICES), commands
    # The public gateway on gevent workers (stalled clients cost greenlets), the services on threads.
    gateway_commands = [c for c in commands if b"safeharbor_gateway.app" in c]
    assert gateway_commands and all(b"gevent" in c for c in gateway_commands), gateway_commands
    assert any(b"stream_emulator" in c for c in commands), commands
    sessions = {pid for pid in children if (stat := _proc_stat(pid)) is not None and stat[2] == pid}
    assert len(sessions) == len(SERVICES) + 1  # every service and the emulator lead a session of their own

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
    assert process.wait(timeout=STOP_TIMEOUT) == 0, output.text
    assert _left_running(children, sessions) == [], output.text
    assert output.text.rstrip().endswith("Stopped.")
    # Everything it wrote is under the temporary var dir (SAFEHARBOR_VAR_DIR), not the repository's var/.
    var = Path(devstack_env["SAFEHARBOR_VAR_DIR"])
    assert (var / "dev-secrets.json").exists() and (var / "log" / "gateway.log").exists()
    assert (var / "auth.db").exists()
