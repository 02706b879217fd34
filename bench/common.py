"""Shared pieces of the benchmarks and drills: the machine, a stack on loopback, a small API client, wrk.

Nothing here is a test: no assertion on timings anywhere in bench/. Every load loop in bench/ is bounded
both in count and in time. Only loopback addresses are ever a target.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A Redis database of the machine's Redis that the integration suite (14) does not use.
REDIS_BENCH_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# A second stack beside the first (one per server compared, `gateway_overhead.py --servers`) gets its own.
REDIS_BENCH_URL_2 = os.environ.get("BENCH_REDIS_URL_2", "redis://127.0.0.1:6379/12")
# The gateway's gunicorn worker class: gevent (what the stack runs) or gthread (16 threads, for comparison).
# The services behind it always run gthread.
SERVERS = ("gevent", "gthread")


def server_list(text: str) -> list[str]:
    """argparse type of `--servers`: distinct names from SERVERS, comma-separated."""
    servers = text.split(",")
    if any(server not in SERVERS for server in servers) or len(set(servers)) != len(servers):
        raise argparse.ArgumentTypeError(f"servers must be distinct names of: {', '.join(SERVERS)}")
    return servers

HIGH_LIMITS = {
    "RATE_LIMIT_PER_IP": "100000000",
    "RATE_LIMIT_PER_USER": "100000000",
    "LOGIN_RATE_LIMIT_PER_IP": "100000000",
    "LOGIN_GLOBAL_MAX_FAILURES_PER_MINUTE": "100000000",
    "KEYDIR_BACKUP_READS_PER_HOUR": "10000",
}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# -- the machine ------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit.stdout.strip(),
        "note": "shared 2-core VM: other engineers may run test suites at the same time; medians of >= 3 runs",
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine_info(), "command": " ".join([Path(sys.executable).name, *sys.argv]), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    log(f"results written to {path.relative_to(ROOT)}")
    return path


# -- the stack ----------------------------------------------------------------------------------------


class Databases:
    """One PostgreSQL database per service (dropped afterwards), or SQLite files in the temp folder."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.prefix = f"sh_bench_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def urls(self, tmp: Path, names: Sequence[str]) -> dict[str, str]:
        if self.backend == "sqlite":
            return {n: f"sqlite:///{tmp / n}.db" for n in names}
        import psycopg

        urls = {}
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in names:
                db = f"{self.prefix}_{name}"
                conn.execute(f'CREATE DATABASE "{db}"')
                self.created.append(db)
                urls[name] = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"
        return urls

    def drop(self) -> None:
        if not self.created:
            return
        import psycopg

        for _ in range(30):  # PostgreSQL may be restarting after a drill
            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                    for db in self.created:
                        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                self.created.clear()
                return
            except psycopg.OperationalError:
                time.sleep(1)


@dataclass
class BenchStack:
    """Every service and the Stream emulator as local processes on free loopback ports, under gunicorn through
    `safeharbor_common.serving` as `make run` starts them; `server` is the gateway's worker class (gevent, as
    deployed, or gthread for side-by-side comparisons)."""

    backend: str = "sqlite"
    workers: int = 2
    redis_url: str | None = "auto"  # auto: the bench Redis DB on the postgres backend, none on sqlite
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    keep_logs: bool = bool(os.environ.get("KEEP_STACK_LOGS"))
    only: Sequence[str] | None = None  # start just these services (no emulator, no seeding)
    server: str = "gevent"
    replicas: int = 1  # instances of every service (issue 19; PostgreSQL + Redis only)

    def __post_init__(self) -> None:
        from safeharbor_devstack import SERVICES, Stack, StackSettings, free_port
        from safeharbor_devstack.secrets import generate_secrets

        self.tmp = Path(tempfile.mkdtemp(prefix="safeharbor-bench-"))
        self.databases = Databases(self.backend)
        if self.redis_url == "auto":
            self.redis_url = REDIS_BENCH_URL if self.backend == "postgres" else None
        self.password = "Bench-" + secrets.token_hex(6)
        self.secrets = generate_secrets()
        ports = {spec.name: free_port() for spec in SERVICES}
        settings = StackSettings(
            root=ROOT,
            var_dir=self.tmp,
            secrets=self.secrets,
            ports=ports,
            database_urls=self.databases.urls(self.tmp, [s.name for s in SERVICES if s.migrates]),
            redis_url=self.redis_url,
            emulator=True,
            emulator_port=free_port(),
            workers=self.workers,
            env="dev",
            demo_password=self.password,
            extra_env={**HIGH_LIMITS, **self.extra_env},
            service_env=self.service_env,
            replicas=self.replicas,
        )
        if self.server not in SERVERS:
            raise ValueError(f"unknown server {self.server!r} (known: {', '.join(SERVERS)})")
        self.stack = Stack(settings) if self.server == "gevent" else _gthread_gateway_stack(settings)
        self.services = SERVICES

    def __enter__(self) -> BenchStack:
        # A SIGTERM (timeout, Ctrl-C from a wrapper) must still stop the stack and drop its databases.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        if self.redis_url:
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        log(f"starting the stack ({self.backend}, {self.server}, {self.workers} workers per service) in {self.tmp}")
        try:
            if self.only:
                for name in self.only:
                    spec = next(s for s in self.services if s.name == name)
                    if spec.migrates:
                        self.stack._run(name, [sys.executable, "-m", f"{spec.package}.manage", "migrate"])
                    self.stack.start_service(name)
                for name in self.only:
                    self.stack.wait_ready(name, timeout=120)
            else:
                self.stack.start(timeout=120)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stack.stop()
        self.databases.drop()
        if self.redis_url in (REDIS_BENCH_URL, REDIS_BENCH_URL_2):
            import redis

            with contextlib.suppress(Exception):
                redis.Redis.from_url(self.redis_url).flushdb()
        if self.keep_logs:
            log(f"stack logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def url(self, name: str) -> str:
        return self.stack.url(name)

    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    def api(self) -> Api:
        return Api(self.gateway_url, self.password)

    def outbox_pending(self) -> int:
        """Events still waiting in the audit outboxes of every service."""
        import sqlite3

        total = 0
        for path in self.tmp.glob("outbox-*.db"):
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                total += int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return total

    def wait_outboxes_empty(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox_pending() == 0:
                return True
            time.sleep(0.2)
        return False

    def audit_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Reads audit-service's database directly (bench bookkeeping only)."""
        url = self.stack.settings.database_urls["audit"]
        if url.startswith("sqlite:///"):
            import sqlite3

            with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)) as conn:
                return list(conn.execute(query.replace("%s", "?"), params).fetchall())
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            return list(conn.execute(query, params).fetchall())  # type: ignore[arg-type]

    def audit_size(self) -> int:
        return int(self.audit_sql("SELECT size FROM log_head WHERE id = 1")[0][0])


# -- API client -----------------------------------------------------------------------------------------


class Api:
    """JSON over the gateway with keep-alive; logs in, enrolling TOTP for roles that need it."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.password = password
        self._local = threading.local()
        self._mfa: dict[str, dict[str, Any]] = {}
        self._used_steps: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def http(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def call(self, method: str, path: str, *, token: str | None = None, timeout: float = 30,
             **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.base + path, headers=headers, timeout=timeout, **kwargs)

    def session(self, username: str, password: str | None = None) -> dict[str, Any]:
        password = password or self.password
        response = self.call("POST", "/v1/auth/login", json=self._credentials(username, password))
        body = response.json()
        if response.status_code == 200 and body.get("scope") == "mfa_enrollment":
            self._enrol(username, body["access_token"])
            response = self.call("POST", "/v1/auth/login", json=self._credentials(username, password))
            body = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"login of {username} failed: {response.status_code} {response.text[:200]}")
        return dict(body)

    def token(self, username: str, password: str | None = None) -> str:
        return str(self.session(username, password)["access_token"])

    def _enrol(self, username: str, token: str) -> None:
        enrolled = self.call("POST", "/v1/auth/mfa/totp/enroll", token=token)
        enrolled.raise_for_status()
        secret = enrolled.json()["secret"]
        confirmed = self.call("POST", "/v1/auth/mfa/totp/confirm", token=token,
                              json={"code": self._next_code(username, secret)})
        confirmed.raise_for_status()
        self._mfa[username] = {"secret": secret, "recovery": list(confirmed.json()["recovery_codes"])}

    def _next_code(self, username: str, secret: str) -> str:
        import pyotp

        with self._lock:
            now = time.time()
            step = int(now) // 30
            used = self._used_steps.get(username, -1)
            # The previous step only while the request cannot reach auth-service in the next window (it would
            # then be two steps old; the same rule as the integration harness, tests/conftest.py).
            earliest = step - 1 if 30 - now % 30 > 10.0 else step
            for candidate in range(earliest, step + 2):
                if candidate > used:
                    self._used_steps[username] = candidate
                    return str(pyotp.TOTP(secret).at(candidate * 30))
            recovery = self._mfa.get(username, {}).get("recovery") or []
            if recovery:
                return str(recovery.pop())
        time.sleep(30 - time.time() % 30 + 0.5)
        return self._next_code(username, secret)

    def _credentials(self, username: str, password: str) -> dict[str, Any]:
        creds: dict[str, Any] = {"username": username, "password": password}
        if username in self._mfa:
            creds["otp"] = self._next_code(username, str(self._mfa[username]["secret"]))
        return creds

    def create_users(self, admin_token: str, prefix: str, count: int, role: str) -> list[dict[str, Any]]:
        users = []
        for i in range(count):
            response = self.call("POST", "/v1/users", token=admin_token, json={
                "username": f"{prefix}{i}", "name": f"Load Tester {i}", "role": role, "password": self.password,
            })
            if response.status_code != 201:
                raise RuntimeError(f"user creation failed: {response.status_code} {response.text[:200]}")
            users.append(dict(response.json()))
        return users


def key_record(user_id: str, device_id: str) -> dict[str, Any]:
    """A signed version-1 key record for POST /v1/keys, built by the SDK."""
    from safeharbor_client.keys import DeviceKeyPair, build_record

    pair = DeviceKeyPair.generate(user_id=user_id, device_id=device_id, version=1)
    return dict(build_record(pair))


# -- wrk ------------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsed wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def wrk(url: str, *, connections: int, seconds: int, headers: dict[str, str] | None = None,
        script: Path | None = None, threads: int = 2) -> WrkResult:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only ever target loopback")
    command = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        # wrk omits the distribution when no request completed: NaN, and the errors say why.
        p50_ms=_ms(latency["50"]) if "50" in latency else float("nan"),
        p90_ms=_ms(latency["90"]) if "90" in latency else float("nan"),
        p99_ms=_ms(latency["99"]) if "99" in latency else float("nan"),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in errors.groups()) if errors else 0,
    )


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)


# -- other people's load ------------------------------------------------------------------------------
# The machine is shared: before each measured run we wait (bounded) for other users' processes to go
# quiet, and we record how much CPU they took during the run, so a contended figure is visible as such.

_CLK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds) of every process."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK)
    return table


def _ours(table: dict[int, tuple[int, float]]) -> set[int]:
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return mine


class ForeignCpu:
    """CPU seconds used by processes outside this benchmark's process tree between start() and stop()."""

    def start(self) -> ForeignCpu:
        self._t0 = time.monotonic()
        table = _proc_table()
        mine = _ours(table)
        self._before = {pid: cpu for pid, (_, cpu) in table.items() if pid not in mine}
        return self

    def stop(self) -> float:
        """Average number of cores the others used meanwhile."""
        table = _proc_table()
        mine = _ours(table)
        used = sum(max(0.0, cpu - self._before.get(pid, cpu if pid in self._before else 0.0))
                   for pid, (_, cpu) in table.items() if pid not in mine)
        return used / max(1e-6, time.monotonic() - self._t0)


class ComponentCpu:
    """CPU seconds used by named process trees (a service's gunicorn master and workers, nginx, ...).

    CPU per request is robust where latency on a shared 2-core VM is not: it does not depend on what the
    scheduler did meanwhile, only on the work each component does.
    """

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots

    def snapshot(self) -> dict[str, float]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        used: dict[str, float] = {}
        roots = set(self.roots.values())
        for name, root in self.roots.items():
            total, todo = 0.0, [root]
            while todo:
                pid = todo.pop()
                total += table.get(pid, (0, 0.0))[1]
                todo.extend(child for child in children.get(pid, []) if child not in roots)
            used[name] = total
        return used

    @staticmethod
    def per_request_us(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
        return {name: round((after[name] - before[name]) / max(1, requests) * 1e6, 1) for name in before}


def wait_quiet(threshold_cores: float = 0.25, max_wait: float | None = None) -> float:
    """Waits until other users' processes use less than `threshold_cores` over a second (bounded: at most
    `max_wait` s, or BENCH_QUIET_MAX_WAIT, default 120; on a machine that is never quiet, the runs are
    interleaved anyway and each records how busy the others were)."""
    if max_wait is None:
        max_wait = float(os.environ.get("BENCH_QUIET_MAX_WAIT", "120"))
    deadline = time.monotonic() + max_wait
    while True:
        probe = ForeignCpu().start()
        time.sleep(1.0)
        load = probe.stop()
        if load < threshold_cores or time.monotonic() >= deadline:
            return load


def _gthread_gateway_stack(settings: object) -> object:
    """The devstack with the gateway on gunicorn's gthread worker (16 threads) instead of gevent."""
    from safeharbor_devstack import Stack

    class GthreadGatewayStack(Stack):
        def start_service(self, name: str) -> None:
            if name != "gateway":
                super().start_service(name)
                return
            command = [sys.executable, "-m", "safeharbor_common.serving", "safeharbor_gateway.app:create_app",
                       "--port", str(self.settings.ports[name]), "--workers", str(self.settings.workers),
                       "--worker-class", "gthread", "--threads", "16", "--keep-alive", "10"]
            self._spawn(name, command, self.env_for(name))

    return GthreadGatewayStack(settings)
