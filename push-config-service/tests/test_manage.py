"""Admin commands: migrate, lint, apply-defaults, check-drift (run in-process through main())."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safeharbor_push.defaults import DEFAULT_TEMPLATES
from safeharbor_push.manage import main

from .conftest import Emulator, environ


@pytest.fixture
def env(tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    emulator.reset()
    values = environ(f"sqlite:///{tmp_path / 'cli.db'}", emulator.url, tmp_path, AUDIT_SERVICE_URL="")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # No audit-service here: keep the CLI from shipping (and waiting on) its outbox.
    monkeypatch.setattr("safeharbor_push.app._init_audit", lambda app: None)
    return values


def test_migrate_apply_defaults_and_check_drift(
    env: dict[str, str], emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0  # idempotent
    assert main(["apply-defaults"]) == 0
    assert "as version 1" in capsys.readouterr().out
    assert emulator.push_settings()["apn"]["notification_template"] == DEFAULT_TEMPLATES[("apn", "notification")]
    assert main(["apply-defaults"]) == 0
    assert "already has an approved template" in capsys.readouterr().out
    assert main(["check-drift"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["providers"]["firebase"]["in_sync"] is True


def test_lint_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(DEFAULT_TEMPLATES[("firebase", "data")])
    assert main(["lint", str(good), "--provider", "firebase", "--kind", "data"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "findings": []}
    bad = tmp_path / "bad.json"
    bad.write_text('{"title": "{{ channel.name }}"}')
    assert main(["lint", str(bad), "--provider", "firebase"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(f["rule"], f["line"], f["column"]) for f in report["findings"]] == [("phi-variable", 1, 15)]
    assert main(["lint", str(bad), "--provider", "apn", "--kind", "data"]) == 2


def test_configuration_errors_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from safeharbor_common.config import ConfigError
    from safeharbor_push.config import load_config

    base = environ("sqlite:///x.db", "http://127.0.0.1:1", tmp_path)
    with pytest.raises(ConfigError, match="STREAM_API_SECRET"):
        load_config({k: v for k, v in base.items() if k != "STREAM_API_SECRET"})
    with pytest.raises(ConfigError, match="DATABASE_URL is required"):
        load_config({**{k: v for k, v in base.items() if k != "DATABASE_URL"}, "SAFEHARBOR_ENV": "production"})
    with pytest.raises(ConfigError, match="https"):
        load_config({**base, "SAFEHARBOR_ENV": "production", "STREAM_CHAT_URL": "http://stream.example"})
    with pytest.raises(ConfigError, match="PUSH_DRIFT_INTERVAL"):
        load_config({**base, "PUSH_DRIFT_INTERVAL": "soon"})
    config = load_config(base)
    assert "STREAM_API_SECRET" in config and base["STREAM_API_SECRET"] not in repr(config)
