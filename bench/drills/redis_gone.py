"""Drill: Redis goes away; the gateway must keep enforcing revocation (docs/SECURITY.md §3: the feed poll
does not depend on Redis; pub/sub is only a shortcut that reconnects by itself).

    .venv/bin/python bench/drills/redis_gone.py [--backend sqlite|postgres]

Starts its own redis-server on a free loopback port (never the machine's shared Redis on 6379) and a stack
using it. Checks, with Redis up, then killed (SIGKILL), then back:
- a logged-out session is refused by every gateway worker (401 session_revoked, on a keydir route, so the
  refusal is the gateway's own set and not auth-service's table) within 1 s (docs/SECURITY.md §3), measured
  as the start of 20 refusals in a row on new connections; the first refusal and the requests other
  workers still accepted after it are reported;
- other sessions keep working (no 5xx from the rate limiter or anything else);
- logins work or fail cleanly (a JSON 503, never a 500): checked in each phase and reported as a finding
  (sessions for the phases are made while Redis is up, so the revocation checks never depend on it).
Exits 1 on the first broken promise; writes bench/results/drill-redis_gone-<backend>.json.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Api, BenchStack, log, write_result

REVOCATION_DEADLINE_S = 1.0


class Failed(Exception):
    pass


class OwnRedis:
    def __init__(self) -> None:
        from safeharbor_devstack import free_port

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="safeharbor-drill-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise Failed("own redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def time_to_refusal(api: Api, token: str, probe: str, started: float, limit: float = 5.0) -> tuple[float, float, int]:
    """Seconds from `started` until the first refusal of `token` and until every gateway worker refuses it
    (the start of a run of 20 refusals on new connections, which the kernel spreads over the workers), and
    how many requests were still accepted between the two. Each worker reads the revocation feed on its
    own: without pub/sub, one may refuse up to a poll period (250 ms) before the other does."""
    first: float | None = None
    streak_start, streak, accepted_after_first = 0.0, 0, 0
    while streak < 20:
        response = api.call("GET", probe, token=token, headers={"Connection": "close"})
        elapsed = time.monotonic() - started
        if response.status_code == 401 and response.json()["error"]["code"] == "session_revoked":
            if first is None:
                first = elapsed
            if streak == 0:
                streak_start = elapsed
            streak += 1
            continue
        if response.status_code != 200:
            raise Failed(f"unexpected {response.status_code} while waiting for revocation: {response.text[:200]}")
        if first is not None:
            accepted_after_first += 1
        streak = 0
        if elapsed > limit:
            raise Failed(f"revoked session still accepted by some worker after {limit} s")
        time.sleep(0.02)
    assert first is not None
    return first, streak_start, accepted_after_first


def phase(api: Api, name: str, sessions: tuple[dict[str, Any], dict[str, Any]], checks: dict[str, Any],
          findings: list[str]) -> None:
    """Revocation and live traffic with sessions made beforehand, then a login (recorded, not relied on)."""
    probe = "/v1/keys?users=nobody"
    victim, other = sessions
    for _ in range(30):
        for s in (victim, other):
            response = api.call("GET", probe, token=s["access_token"])
            if response.status_code != 200:
                raise Failed(f"{name}: a live session got {response.status_code}: {response.text[:200]}")
    started = time.monotonic()
    response = api.call("POST", "/v1/auth/logout", token=victim["access_token"])
    if response.status_code != 204:
        raise Failed(f"{name}: logout answered {response.status_code} {response.text[:200]}")
    first_refusal, refused_after, accepted_after_first = time_to_refusal(api, victim["access_token"], probe, started)
    statuses: dict[int, int] = {}
    for _ in range(50):
        status = api.call("GET", probe, token=other["access_token"]).status_code
        statuses[status] = statuses.get(status, 0) + 1
    if set(statuses) != {200}:
        raise Failed(f"{name}: a live session got {statuses} after another's logout")
    login = api.call("POST", "/v1/auth/login", json={"username": "sam", "password": api.password})
    login_code = login.json().get("error", {}).get("code") if login.status_code != 200 else None
    if login.status_code >= 500 and not (login.status_code == 503 and login_code == "service_unavailable"):
        findings.append(f"{name}: POST /v1/auth/login answered {login.status_code} {login_code} "
                        f"(request id {login.headers.get('X-Request-ID')})")
    checks[name] = {"revoked_refused_after_s": round(refused_after, 3), "first_refusal_s": round(first_refusal, 3),
                    "accepted_between_first_refusal_and_every_worker": accepted_after_first,
                    "live_session_statuses": statuses,
                    "login_status": login.status_code, "login_error": login_code}
    log(f"{name}: revoked session refused by every worker after {refused_after * 1000:.0f} ms (first refusal "
        f"{first_refusal * 1000:.0f} ms, {accepted_after_first} accepted between); live session {statuses}; "
        f"login {login.status_code}{' ' + login_code if login_code else ''}")
    if refused_after > REVOCATION_DEADLINE_S:
        raise Failed(f"{name}: revocation took {refused_after:.2f} s (> {REVOCATION_DEADLINE_S} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    redis_server = OwnRedis()
    checks: dict[str, Any] = {}
    findings: list[str] = []
    ok = False
    try:
        redis_server.start()
        with BenchStack(backend=args.backend, redis_url=redis_server.url) as bench:
            api = bench.api()
            # Sessions for the Redis-less phases are made while Redis is up: logging in is not what this
            # drill is about (it is checked, and reported, separately).
            pairs = [(api.session("pat"), api.session("sam")) for _ in range(4)]
            phase(api, "redis up", pairs[0], checks, findings)
            log(f"killing the drill's own redis-server (port {redis_server.port}) with SIGKILL")
            redis_server.kill()
            time.sleep(1.0)
            phase(api, "redis gone", pairs[1], checks, findings)
            time.sleep(6.0)  # past the staleness limit: the gateway must not have failed closed
            phase(api, "redis gone for 7 s", pairs[2], checks, findings)
            log("starting redis-server again on the same port")
            redis_server.start()
            time.sleep(3.0)  # the subscriber reconnects by itself
            phase(api, "redis back", pairs[3], checks, findings)
            ok = not findings
            tracebacks = [line for line in bench.stack.log_path("auth").read_text(errors="replace").splitlines()
                          if "Error" in line and ("redis" in line.lower() or "exception" in line.lower())]
            checks["auth_log_error_lines"] = tracebacks[:10]
    except Failed as exc:
        log(f"DRILL FAILED: {exc}")
        checks["failure"] = str(exc)
    finally:
        redis_server.close()
    for finding in findings:
        log(f"FINDING: {finding}")
    write_result(f"drill-redis_gone-{args.backend}", {"ok": ok, "checks": checks, "findings": findings})
    log("redis_gone drill " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
