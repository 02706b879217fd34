"""Settings validated at start; admin commands."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DeviceKeys, KeydirEnv, build_app, register
from safeharbor_common.config import ConfigError
from safeharbor_common.service_identity import generate_keypair
from safeharbor_keydir.config import load_config
from safeharbor_keydir.manage import main as manage_main


def _base() -> dict[str, str]:
    return {"SERVICE_PRIVATE_KEY": generate_keypair()[0], "KEYDIR_SIGNING_KEY": generate_keypair()[0]}


def test_defaults() -> None:
    config = load_config(_base())
    assert config["DATABASE_URL"] == "sqlite:///var/keydir.db"
    assert config["KEYDIR_LOG_ORIGIN"] == "safeharbor.example/keys"
    assert config["BACKUP_FRESH_LOGIN_SECONDS"] == 300
    assert config["KEYDIR_BACKUP_MAX_BYTES"] == 65536
    assert config["AUDIT_SERVICE_URL"] == "http://127.0.0.1:8103"
    assert load_config({**_base(), "AUDIT_SERVICE_URL": ""})["AUDIT_SERVICE_URL"] is None


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"KEYDIR_SIGNING_KEY": ""}, "KEYDIR_SIGNING_KEY"),
        ({"KEYDIR_SIGNING_KEY": "not-a-key"}, "KEYDIR_SIGNING_KEY"),
        ({"SERVICE_PRIVATE_KEY": ""}, "SERVICE_PRIVATE_KEY"),
        ({"KEYDIR_LOG_ORIGIN": "has space"}, "KEYDIR_LOG_ORIGIN"),
        ({"SAFEHARBOR_ENV": "staging"}, "SAFEHARBOR_ENV"),
        ({"SAFEHARBOR_ENV": "production"}, "DATABASE_URL"),
        ({"BACKUP_FRESH_LOGIN_SECONDS": "5"}, "BACKUP_FRESH_LOGIN_SECONDS"),
        ({"KEYDIR_BACKUP_MAX_BYTES": "lots"}, "KEYDIR_BACKUP_MAX_BYTES"),
        ({"MAX_BODY_BYTES": "8192"}, "MAX_BODY_BYTES"),
    ],
)
def test_bad_settings_are_refused_by_name(override: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        load_config({**_base(), **override})
    assert "not-a-key" not in str(caught.value)


def test_manage_verify_checkpoint_and_key(keydir_env: KeydirEnv, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    app = build_app(keydir_env)
    register(app.test_client(), keydir_env, DeviceKeys("alice"))
    for name, value in keydir_env.environ.items():
        monkeypatch.setenv(name, value)
    assert manage_main(["verify"]) == 0
    assert '"ok": true' in capsys.readouterr().out
    assert manage_main(["checkpoint"]) == 0
    assert capsys.readouterr().out.startswith("safeharbor.example/keys\n1\n")
    assert manage_main(["verifier-key"]) == 0
    assert capsys.readouterr().out.startswith("safeharbor.example/keys+")
    monkeypatch.setenv("KEYDIR_SIGNING_KEY", "bad")
    assert manage_main(["verify"]) == 2
    assert "KEYDIR_SIGNING_KEY" in capsys.readouterr().err
    app.extensions["audit"].close()
