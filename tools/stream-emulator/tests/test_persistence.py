"""State survives a restart (in-process and as a real `python -m stream_emulator` process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import API_KEY, API_SECRET, Emulator, provision
from stream_chat import StreamChat
from stream_chat.base.exceptions import StreamAPIException

PKG_ROOT = Path(__file__).resolve().parents[1]


def test_restart_in_process_keeps_everything(make_emulator: Callable[..., Emulator], tmp_path: Path) -> None:
    state_file = str(tmp_path / "state.json")
    first = make_emulator(state_file=state_file)
    provision(first.client)
    ch = first.client.channel("clinical", "case-1", {"members": ["dr-chen", "pat"]})
    ch.create("dr-chen")
    ch.send_message({"text": "persist me"}, "dr-chen")
    first.client.update_app_settings(apn_config={"notification_template": "{}"})
    first.client.revoke_user_token("sam", "2020-01-01T00:00:00Z")
    first.stop()

    second = make_emulator(state_file=state_file)
    assert [m["text"] for m in second.client.channel("clinical", "case-1").query()["messages"]] == ["persist me"]
    assert second.client.get_channel_type("clinical")["grants"]["clinician"]
    assert second.client.query_users({"id": "sam"})["users"][0]["revoke_tokens_issued_before"].startswith("2020")
    app = second.client.get_app_settings()["app"]
    assert app["push_notifications"]["apn"]["notification_template"] == "{}"


def test_corrupt_state_file_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    from stream_emulator.app import create_app

    with pytest.raises(RuntimeError):
        create_app({"api_key": API_KEY, "api_secret": API_SECRET, "state_file": str(bad)})


class _Proc:
    def __init__(self, state_file: Path) -> None:
        env = {**os.environ, "STREAM_API_KEY": API_KEY, "STREAM_API_SECRET": API_SECRET,
               "STREAM_EMULATOR_STATE_FILE": str(state_file), "PYTHONPATH": str(PKG_ROOT)}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_emulator", "--port", "0", "--log-level", "WARNING"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on " in line, line
        self.url = line.strip().rsplit(" ", 1)[-1]
        self.client = StreamChat(API_KEY, API_SECRET, base_url=self.url, timeout=2.0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def proc_factory() -> Iterator[Callable[[Path], _Proc]]:
    procs: list[_Proc] = []

    def start(state_file: Path) -> _Proc:
        p = _Proc(state_file)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.stop()


def test_process_outage_and_restart(proc_factory: Callable[[Path], _Proc], tmp_path: Path) -> None:
    state_file = tmp_path / "var" / "emulator.json"
    first = proc_factory(state_file)
    provision(first.client)
    ch = first.client.channel("clinical", "case-1", {"members": ["dr-chen"]})
    ch.create("dr-chen")
    ch.send_message({"text": "before outage"}, "dr-chen")
    first.stop()

    # Stream is down: the SDK cannot connect at all.
    with pytest.raises(requests.exceptions.ConnectionError):
        first.client.get_app_settings()

    second = proc_factory(state_file)
    msgs = second.client.channel("clinical", "case-1").query()["messages"]
    assert [m["text"] for m in msgs] == ["before outage"]
    assert json.loads(state_file.read_text())["channels"]["clinical:case-1"]["members"]


def test_bad_config_exits_with_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env["PYTHONPATH"] = str(PKG_ROOT)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "stream_emulator", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "STREAM_API_KEY" in result.stderr
    assert time.monotonic() - start < 30


def test_reset_clears_state(emu: Emulator) -> None:
    provision(emu.client)
    requests.post(emu.url + "/_emulator/reset", timeout=5).raise_for_status()
    assert emu.state()["users"] == {}
    with pytest.raises(StreamAPIException):
        emu.client.get_channel_type("clinical")
