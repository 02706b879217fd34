"""--stack-url's pieces without a stack: what a stack elsewhere can give, and unmarked reaches failing loudly."""
from __future__ import annotations

from pathlib import Path

import pytest
from stack_modes import MARKERS, RemoteStack, read_secrets


def test_a_remote_stack_without_secrets_or_stream_skips_what_needs_them() -> None:
    remote = RemoteStack("http://127.0.0.1:1/", stream_url=None, secrets=None)
    assert remote.gateway_url == "http://127.0.0.1:1"
    assert {m for m in MARKERS if remote.missing(m)} == set(MARKERS)
    with pytest.raises(pytest.fail.Exception, match="stack_secrets"):
        _ = remote.settings.secrets["STREAM_API_SECRET"]
    with pytest.raises(pytest.fail.Exception, match=r"mark\.stream"):
        _ = remote.emulator_url
    with pytest.raises(pytest.fail.Exception, match="owned_stack"):
        remote.kill("emulator")
    with pytest.raises(AttributeError):  # copy, pickle and pytest probe dunders: never a test failure
        _ = remote.__deepcopy__


def test_secrets_and_a_stream_url_enable_their_markers_only() -> None:
    remote = RemoteStack("http://gw", stream_url="http://127.0.0.1:1", secrets={"STREAM_API_KEY": "k"})
    assert remote.settings.secrets["STREAM_API_KEY"] == "k" and remote.emulator_url == "http://127.0.0.1:1"
    assert remote.missing("stack_secrets") is None and remote.missing("stream") is None
    assert remote.missing("emulator")  # nothing answers the emulator's inspection API there
    assert remote.missing("owned_stack")


def test_secrets_files_as_json_or_env_lines(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"STREAM_API_KEY": "k", "STREAM_API_SECRET": "s"}')
    (tmp_path / ".env").write_text("# generated\nSTREAM_API_KEY=k\nSTREAM_API_SECRET=s=x\n\n")
    assert read_secrets(tmp_path / "s.json") == read_secrets(tmp_path / ".env") | {"STREAM_API_SECRET": "s"}
    assert read_secrets(tmp_path / ".env")["STREAM_API_SECRET"] == "s=x"
