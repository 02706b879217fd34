"""Issue 17 on the running stack: a live, signed HIPAA §164.312 report through the gateway, every line measured
by the service that owns it, its hash in the audit log; a tampered audit log fails its line; the CLI writes the
HTML page and headless Chromium renders it (screenshot and PDF)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_PASSWORD, Api
from safeharbor_common import compliance
from safeharbor_devstack import Stack
from safeharbor_protocol import compliance_report
from sqlalchemy import create_engine, text

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _report(api: Api, token: str) -> dict[str, Any]:
    response = api.call("GET", "/v1/compliance/report", token=token)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _controls(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in document["report"]["controls"]}


def test_running_stack_signs_a_report_whose_every_line_is_measured(api: Api) -> None:
    auditor = api.token("audra")
    assert api.call("GET", "/v1/compliance/report", token=api.token("pat")).status_code == 403
    assert api.call("GET", "/v1/compliance/report").status_code == 401
    document = _report(api, auditor)
    key = api.call("GET", "/v1/compliance/report/key", token=auditor).text.strip()
    assert compliance_report.verify_report(document, key) == document["sha256"]

    report = document["report"]
    assert report["services"] == {name: {"answered": True, "error": None} for name in
                                  ("auth", "keydir", "push", "gateway", "audit")}, report["services"]
    assert [c["id"] for c in report["controls"]] == [s.id for s in compliance.CATALOGUE]
    for control in report["controls"]:  # measured by its own service: evidence, a time, no "not reported"
        assert control["evidence"] and "error" not in control["evidence"], control
        assert control["measured_at"].startswith(report["generated_at"][:10])
    found = _controls(document)
    assert found["auth.automatic_logoff"]["status"] == "pass"
    assert found["auth.automatic_logoff"]["evidence"]["idle_timeout_s"] == 600
    assert found["audit.log_verifies"]["status"] == "pass"
    assert found["keydir.log_verifies"]["status"] == "pass"
    assert found["gateway.revocation_feed"]["status"] == "pass"
    # The suite's stack lifts the gateway's limits to 100000 a minute for its own load: measured, so it fails.
    assert found["gateway.rate_limits"]["status"] == "fail"
    assert {o["status"] for o in report["organisational"]} == {"not_checked"}

    deadline = time.monotonic() + 10
    while True:
        entries = api.call("GET", "/v1/audit/entries?action=compliance.report.signed&limit=1000",
                           token=auditor).json()["entries"]
        mine = [e for e in entries if e["meta"].get("report_id") == report["report_id"]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [e["meta"]["sha256"] for e in mine] == [document["sha256"]]
    assert mine[0]["seq"] == document["audit_entry"]["seq"] and mine[0]["actor"] != "anonymous"


@pytest.mark.owned_stack
def test_tampered_audit_log_turns_its_line_to_fail_and_raises_an_alert(api: Api, stack: Stack) -> None:
    auditor = api.token("audra")
    assert _controls(_report(api, auditor))["audit.log_verifies"]["status"] == "pass"
    engine = create_engine(stack.settings.database_urls["audit"])
    postgres = engine.dialect.name == "postgresql"
    guard = "audit_entries_append_only" if postgres else "audit_entries_no_update"
    try:
        with engine.begin() as conn:  # someone with the database's rights: the append-only guard goes first
            original = conn.execute(text("SELECT actor FROM audit_entries WHERE seq = 1")).scalar_one()
            conn.execute(text(f"DROP TRIGGER IF EXISTS {guard}" + (" ON audit_entries" if postgres else "")))
            conn.execute(text("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 1"))
        failing = _report(api, auditor)
        line = _controls(failing)["audit.log_verifies"]
        assert line["status"] == "fail" and line["evidence"]["first_bad_seq"] == 1, line
        alerts = api.call("GET", "/v1/audit/entries?action=compliance.control.failed&limit=1000",
                          token=auditor).json()["entries"]
        assert any(a["meta"]["report_id"] == failing["report"]["report_id"] and a["severity"] == "alert"
                   and a["meta"]["control"] == "audit.log_verifies" for a in alerts), alerts
    finally:  # put the entry and the guard back: the rest of the suite verifies this log
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_entries SET actor = :a WHERE seq = 1"), {"a": original})
            conn.execute(text(
                "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries "
                "FOR EACH ROW EXECUTE FUNCTION audit_append_only()" if postgres else
                "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries "
                "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END"))
        engine.dispose()
    assert _controls(_report(api, auditor))["audit.log_verifies"]["status"] == "pass"


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup-frontend.sh --browser)")
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_html_report_and_chromium_renders_it(api: Api, stack: Stack, tmp_path: Path) -> None:
    api.session("audra")  # enrolled in TOTP (the suite shares the secret)
    base = [sys.executable, "-m", "safeharbor_client.cli", "--gateway", stack.gateway_url,
            "--state-dir", str(tmp_path / "cli"), "--stream-url", stack.emulator_url]
    env = {**os.environ, "SAFEHARBOR_PASSWORD": DEMO_PASSWORD, "SAFEHARBOR_OTP": api.otp("audra")}
    login = subprocess.run([*base, "login", "audra"], capture_output=True, text=True, timeout=60, env=env)
    assert login.returncode == 0, login.stderr
    page = tmp_path / "report.html"
    done = subprocess.run([*base, "--json", "compliance", "report", "--html", str(page)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["verified"] is True and answer["html"] == str(page)
    human = subprocess.run([*base, "compliance", "report"], capture_output=True, text=True, timeout=120, env=env)
    assert human.returncode == 0 and "signature verified" in human.stdout and "NOT CHECKED" in human.stdout

    html = page.read_text("utf-8")
    for outside in ("src=", "href=", "url(", "@import", "<script"):  # one self-contained page
        assert outside not in html

    shots = Path(os.environ.get("COMPLIANCE_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    screenshot, pdf = shots / "compliance-report.png", shots / "compliance-report.pdf"
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "chromium-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    report = answer["report"]
    assert report["report_id"] in dom.stdout and answer["sha256"] in dom.stdout
    assert dom.stdout.count('class="st ') == (len(report["safeguards"]) + len(report["controls"])
                                              + len(report["organisational"]))
    for control in report["controls"]:
        assert f"<code>{control['id']}</code>" in dom.stdout
    assert dom.stdout.count(">NOT CHECKED</td>") == len(report["organisational"])
    shot = _chromium(f"--screenshot={screenshot}", "--window-size=1280,2600", "--hide-scrollbars",
                     page.as_uri(), profile=tmp_path / "chromium-shot")
    assert shot.returncode == 0 and screenshot.stat().st_size > 50_000, shot.stderr[-2000:]
    printed = _chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri(),
                        profile=tmp_path / "chromium-pdf")
    assert printed.returncode == 0 and pdf.read_bytes().startswith(b"%PDF-"), printed.stderr[-2000:]
