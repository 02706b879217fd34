"""The SDK and CLI against the real keydir-service and Stream emulator (in-process, see ministack.py)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.importorskip("safeharbor_keydir")
pytest.importorskip("stream_emulator")

from ministack import MiniStack, logged_in, make
from safeharbor_client.cli import EXIT_LOGIN, EXIT_OK, EXIT_UNVERIFIED
from safeharbor_client.cli import main as cli_main
from safeharbor_client.client import SafeHarborClient
from safeharbor_client.errors import (
    BackupPasswordInvalid,
    DirectoryInconsistent,
    EnvelopeTampered,
    Forbidden,
    InvalidCredentials,
    KeysNotInitialized,
    LoginRequired,
    RecipientKeysMissing,
    SessionExpired,
    SessionRevoked,
)
from safeharbor_protocol.checkpoint import sign_checkpoint, split_note
from safeharbor_protocol.encoding import b64url_decode, b64url_encode

PASSWORD = "river stone candle 7"


@pytest.fixture(scope="module")
def chat(stack: MiniStack, root: Path) -> dict[str, Any]:
    doc = logged_in(stack, root, "doc-laptop", "doc")
    pat = logged_in(stack, root, "pat-phone", "pat")
    doc.init_keys()
    pat.init_keys()
    pat.backup_keys(PASSWORD)
    channel = doc.open_channel("patient-care", [stack.users["pat"]["id"]])
    doc.send(channel.cid, "Your INR is 2.4, keep the same dose.")
    pat.send(channel.cid, "Thank you!")
    return {"doc": doc, "pat": pat, "cid": channel.cid}


def test_login_countdown_and_refresh(stack: MiniStack, root: Path) -> None:
    client = logged_in(stack, root, "sam-1", "sam")
    countdown = client.countdown()
    assert 590 <= countdown.idle_remaining_s <= 600 and countdown.absolute_remaining_s > 40000
    first = client.state.load_session()["access_token"]  # type: ignore[index]
    # Less than half the idle time left: the next call refreshes the session (activity keeps it alive).
    later = make(stack, root, "sam-1", clock=lambda: time.time() + 400)
    assert later.me()["user"]["role"] == "billing"
    assert later.state.load_session()["access_token"] != first  # type: ignore[index]
    with pytest.raises(InvalidCredentials):
        client.login("sam", "wrong-password-1")


def test_expired_and_revoked_sessions_ask_for_login(stack: MiniStack, root: Path) -> None:
    client = logged_in(stack, root, "sam-2", "sam")
    expired = make(stack, root, "sam-2", clock=lambda: time.time() + 601)
    with pytest.raises(SessionExpired):
        expired.me()
    with pytest.raises(LoginRequired):
        client.me()
    client = logged_in(stack, root, "sam-2", "sam")
    other = make(stack, root, "sam-2-copy")
    other.state.save_session(client.state.load_session() or {})
    other.logout()
    with pytest.raises(SessionRevoked):
        client.me()
    assert client.session is None
    out: list[str] = []
    assert cli_main(["--gateway", stack.gateway_url, "--state-dir", str(root / "sam-2"), "whoami"],
                    out=out.append) == EXIT_LOGIN


def test_conversation_devices_rotation_and_ciphertext_only(stack: MiniStack, root: Path, chat: dict[str, Any]) -> None:
    doc, pat, cid = chat["doc"], chat["pat"], chat["cid"]
    assert [m.text for m in pat.read(cid)] == ["Your INR is 2.4, keep the same dose.", "Thank you!"]
    assert all(m.verified for m in doc.read(cid))
    # Second device: restore, read history, receive new messages.
    tablet = logged_in(stack, root, "pat-tablet", "pat")
    with pytest.raises(BackupPasswordInvalid):
        tablet.restore_keys("not the password 123")
    restored = tablet.restore_keys(PASSWORD)
    assert restored["registered"] is not None
    assert [m.text for m in tablet.read(cid)] == ["Your INR is 2.4, keep the same dose.", "Thank you!"]
    before = doc.send(cid, "Before rotation.")
    assert len({r for r in before.recipients if r.user_id == stack.users["pat"]["id"]}) == 2
    doc.rotate_keys()
    pat.rotate_keys()
    after = doc.send(cid, "After rotation.")
    for reader in (pat, tablet, doc):
        read = {m.stream_message_id: m for m in reader.read(cid)}
        assert all(m.verified for m in read.values()), [m.error for m in read.values()]
        assert read[before.message_id].sender.version == 1  # type: ignore[union-attr]
        assert read[after.message_id].sender.version == 2  # type: ignore[union-attr]
    state = requests.get(stack.stream_url + "/_emulator/state", timeout=10).json()
    stored = json.dumps(state["messages"][cid])
    # Each probe holds a space, which base64url never does, so ciphertext cannot match one by chance
    # (a bare "INR" did, about one run in fifty).
    for secret in ("INR is 2.4", "same dose", "Thank you", "Before rotation", "After rotation"):
        assert secret not in stored


def test_role_rules_and_missing_keys(stack: MiniStack, root: Path, chat: dict[str, Any]) -> None:
    sam = logged_in(stack, root, "sam-3", "sam")
    with pytest.raises(Forbidden):
        sam.open_channel("clinical", [stack.users["doc"]["id"]])
    doc = chat["doc"]
    lonely = doc.open_channel("patient-care", [stack.users["kim"]["id"]])  # kim has no keys
    with pytest.raises(RecipientKeysMissing) as info:
        doc.send(lonely.cid, "hello")
    assert info.value.user_ids == [stack.users["kim"]["id"]]
    kim = logged_in(stack, root, "kim", "kim")
    with pytest.raises(KeysNotInitialized):
        kim.read(lonely.cid)


def test_tampered_message_shown_as_refused(stack: MiniStack, root: Path, chat: dict[str, Any]) -> None:
    doc, pat, cid = chat["doc"], chat["pat"], chat["cid"]
    sent = doc.send(cid, "Tamper with me.")
    state = requests.get(stack.stream_url + "/_emulator/state", timeout=10).json()
    message = next(m for m in state["messages"][cid] if m["id"] == sent.message_id)
    envelope = json.loads(message["text"])
    raw = bytearray(b64url_decode(envelope["ct"]))
    raw[0] ^= 1
    envelope["ct"] = b64url_encode(bytes(raw))
    stack.stream("POST", f"/messages/{sent.message_id}", {"message": {"text": json.dumps(envelope)}})
    read = {m.stream_message_id: m for m in pat.read(cid)}
    assert isinstance(read[sent.message_id].error, EnvelopeTampered)
    out: list[str] = []
    code = cli_main(["--gateway", stack.gateway_url, "--state-dir", str(pat.state.path), "--stream-url",
                     stack.stream_url, "read", cid], out=out.append)
    assert code == EXIT_UNVERIFIED and "REFUSED envelope_tampered" in out[-1]


def test_forked_directory_refused(stack: MiniStack, root: Path, chat: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    doc = chat["doc"]
    pat_id = stack.users["pat"]["id"]
    doc.lookup_keys([pat_id])
    note = requests.get(stack.gateway_url + "/v1/keys/checkpoint", timeout=10).text
    text, sigs = split_note(note)
    origin, size = text.split("\n")[0], int(text.split("\n")[1])
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(stack.keydir_signing_seed))
    forked = sign_checkpoint(origin, size + 2, os.urandom(32), key_name=sigs[0][0], private_key=key)
    session = requests.Session()

    def fork(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.request.method == "GET" and "/v1/keys?" in (response.request.url or ""):
            body = response.json()
            body["checkpoint"] = forked
            response._content = json.dumps(body).encode()
        return response

    session.hooks["response"].append(fork)
    view = SafeHarborClient(stack.gateway_url, state_dir=doc.state.path, stream_url=stack.stream_url, http=session)
    with pytest.raises(DirectoryInconsistent):
        view.lookup_keys([pat_id])
    with pytest.raises(DirectoryInconsistent):
        view.send(chat["cid"], "never sent")
    assert doc.lookup_keys([pat_id])[pat_id].devices  # the honest directory is still accepted


def test_cli_flow(stack: MiniStack, root: Path, chat: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["--gateway", stack.gateway_url, "--state-dir", str(root / "doc-cli"), "--stream-url", stack.stream_url]
    monkeypatch.setenv("SAFEHARBOR_PASSWORD", stack.users["doc"]["password"])
    monkeypatch.setenv("SAFEHARBOR_BACKUP_PASSWORD", PASSWORD)
    out: list[str] = []
    assert cli_main([*base, "login", "doc"], out=out.append) == EXIT_OK
    assert "automatic logoff in" in out[-1]
    assert cli_main([*base, "keys", "init"], out=out.append) == EXIT_OK
    assert "fingerprint:" in out[-1]
    assert cli_main([*base, "keys", "backup"], out=out.append) == EXIT_OK
    assert cli_main([*base, "keys", "show"], out=out.append) == EXIT_OK
    assert "(this device)" in out[-1]
    assert cli_main([*base, "whoami"], out=out.append) == EXIT_OK
    assert cli_main([*base, "channels", "list"], out=out.append) == EXIT_OK
    assert chat["cid"] in out[-1]
    assert cli_main([*base, "send", chat["cid"], "From the CLI."], out=out.append) == EXIT_OK
    out.clear()
    cli_main([*base, "--json", "read", chat["cid"]], out=out.append)
    rows = json.loads(out[-1])
    assert rows[-1]["verified"] and rows[-1]["text"] == "From the CLI."
    assert cli_main([*base, "logout"], out=out.append) == EXIT_OK


def test_post_quantum_end_to_end(stack: MiniStack, root: Path) -> None:
    """Every device publishes a hybrid key (the directory carries `pq_pub`): the hybrid suite is negotiated;
    one device without it brings everyone back to X25519."""
    stack.add_user("ben", "clinician")
    stack.add_user("ann", "patient")
    ben = logged_in(stack, root, "ben-pq", "ben")
    ann = logged_in(stack, root, "ann-pq", "ann")
    assert ben.init_keys(with_pq=True).pq_published
    assert ann.init_keys(with_pq=True).pq_published
    channel = ben.open_channel("patient-care", [stack.users["ann"]["id"]])
    hybrid = ben.send(channel.cid, "post-quantum hello")
    assert hybrid.suite == "mlkem768x25519"
    assert [d["post_quantum"] for d in ann.show_keys()] == [True]
    ann_laptop = logged_in(stack, root, "ann-laptop", "ann")
    ann_laptop.init_keys()  # classic only
    classic = ben.send(channel.cid, "classic again")
    assert classic.suite == "x25519"
    read = ann.read(channel.cid)
    assert [(m.text, m.suite) for m in read] == [("post-quantum hello", "mlkem768x25519"),
                                                 ("classic again", "x25519")]
    assert all(m.verified for m in read)
