"""End-to-end encryption through the real stack: the client SDK against gateway, auth, keydir and the Stream
emulator, as real processes.

Fresh users per run (a clinician, a patient on two devices, a billing user) so other tests' keys do not
matter. What is proven: the conversation decrypts and verifies on every device, Stream only ever stores
ciphertext, old messages survive key rotations, role rules hold for channels, expired and revoked sessions
make the SDK ask for login, and tampered envelopes and a forking directory are refused.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from conftest import _MFA, Api
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safeharbor_client import backup as backup_mod
from safeharbor_client.audit_export import check_export
from safeharbor_client.cli import EXIT_LOGIN, EXIT_OK
from safeharbor_client.cli import main as cli_main
from safeharbor_client.client import AuditVerificationFailed, SafeHarborClient
from safeharbor_client.errors import (
    DirectoryInconsistent,
    EnvelopeTampered,
    Forbidden,
    LoginRequired,
    MisaddressedMessage,
    ReplayDetected,
    SenderMismatch,
    SessionExpired,
)
from safeharbor_protocol.checkpoint import sign_checkpoint, split_note
from safeharbor_protocol.encoding import b64url_decode

pytestmark = pytest.mark.stream  # the clients send through Stream

BACKUP_PASSWORD = "tide pool lantern 42"


@dataclass
class Person:
    username: str
    password: str
    user_id: str
    role: str


def _create_user(api: Api, admin_token: str, prefix: str, role: str) -> Person:
    username = f"{prefix}-{secrets.token_hex(4)}"
    password = f"E2ee-{secrets.token_hex(8)}-Pw!"
    response = api.call("POST", "/v1/users", token=admin_token,
                        json={"username": username, "name": f"Test {prefix}", "role": role, "password": password})
    assert response.status_code == 201, response.text
    return Person(username=username, password=password, user_id=response.json()["id"], role=role)


@dataclass
class World:
    api: Api
    stack: Any
    root: Path
    clinician: Person
    patient: Person
    billing: Person

    def client(self, name: str) -> SafeHarborClient:
        # The OWASP-minimum KDF keeps the suite quick on a shared machine; production uses the default.
        return SafeHarborClient(self.api.base, state_dir=self.root / name, stream_url=self.stack.emulator_url,
                                kdf=backup_mod.MIN_KDF)

    def login(self, client: SafeHarborClient, person: Person) -> None:
        if person.role in ("clinician", "admin", "auditor") and person.username not in _MFA:
            self.api.session(person.username, person.password)  # enrols TOTP (the harness keeps the secret)
        otp = self.api.otp(person.username) if person.username in _MFA else None
        client.login(person.username, person.password, otp=otp)

    def emulator_messages(self, cid: str) -> list[dict[str, Any]]:
        state = requests.get(f"{self.stack.emulator_url}/_emulator/state", timeout=30).json()
        return list(state["messages"].get(cid, []))

    def stream_server(self, method: str, path: str, body: Any) -> requests.Response:
        """A call with Stream's server credentials: what Stream itself (or a leaked API secret) can do."""
        secret = self.stack.settings.secrets["STREAM_API_SECRET"]
        token = jwt.encode({"server": True}, secret, algorithm="HS256")
        return requests.request(method, f"{self.stack.emulator_url}{path}", json=body, timeout=30,
                                params={"api_key": self.stack.settings.secrets["STREAM_API_KEY"]},
                                headers={"Authorization": token, "stream-auth-type": "jwt"})


@pytest.fixture(scope="module")
def world(stack: Any, api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    admin = api.token("admin")
    yield World(
        api=api,
        stack=stack,
        root=tmp_path_factory.mktemp("e2ee"),
        clinician=_create_user(api, admin, "e2ee-clin", "clinician"),
        patient=_create_user(api, admin, "e2ee-pat", "patient"),
        billing=_create_user(api, admin, "e2ee-bill", "billing"),
    )


@pytest.fixture(scope="module")
def conversation(world: World) -> dict[str, Any]:
    """Clinician and patient with keys, a patient-care channel between them, and a first exchange."""
    doc = world.client("clinician-laptop")
    world.login(doc, world.clinician)
    doc.init_keys()
    pat = world.client("patient-phone")
    world.login(pat, world.patient)
    pat.init_keys()
    pat.backup_keys(BACKUP_PASSWORD)
    channel = doc.open_channel("patient-care", [world.patient.user_id])
    assert world.clinician.user_id in channel.members and world.patient.user_id in channel.members
    first = doc.send(channel.cid, "Your potassium is 3.1 mmol/L; please repeat the test on Friday.")
    reply = pat.send(channel.cid, "Thanks doctor, Friday 9am works.")
    return {"doc": doc, "pat": pat, "cid": channel.cid, "first": first, "reply": reply}


def _texts(messages: list[Any]) -> list[str | None]:
    return [m.text for m in messages]


@pytest.mark.emulator
def test_two_users_and_a_second_device(world: World, conversation: dict[str, Any]) -> None:
    doc, pat, cid = conversation["doc"], conversation["pat"], conversation["cid"]
    for reader in (doc, pat):
        messages = reader.read(cid)
        assert all(m.verified for m in messages), [m.error for m in messages]
        assert _texts(messages) == ["Your potassium is 3.1 mmol/L; please repeat the test on Friday.",
                                    "Thanks doctor, Friday 9am works."]
        assert messages[0].sender is not None and messages[0].sender.user_id == world.clinician.user_id
        assert messages[1].sender is not None and messages[1].sender.user_id == world.patient.user_id
    # The patient's second device: log in, restore the backup, register itself.
    tablet = world.client("patient-tablet")
    world.login(tablet, world.patient)
    restored = tablet.restore_keys(BACKUP_PASSWORD)
    assert restored["restored"] >= 1 and restored["registered"] is not None
    assert restored["device_id"] != pat.state.load_keyring(world.patient.user_id).device_id
    # History sealed before the tablet existed opens with the restored keys.
    history = tablet.read(cid)
    assert all(m.verified for m in history) and len(history) == 2
    # New messages are sealed to every device of every member: the clinician's lookup now finds the tablet.
    sent = doc.send(cid, "Also, keep taking the supplements.")
    patient_devices = {r.device_id for r in sent.recipients if r.user_id == world.patient.user_id}
    assert len(patient_devices) == 2
    for reader in (tablet, pat, doc):
        assert reader.read(cid)[-1].text == "Also, keep taking the supplements."
    # The tablet writes, the phone reads it (sender's own other device).
    tablet.send(cid, "Written on my tablet.")
    last = pat.read(cid)[-1]
    assert last.verified and last.text == "Written on my tablet."
    assert last.sender is not None and last.sender.device_id == restored["device_id"]
    # Stream (the emulator) only ever stored ciphertext.
    stored = world.emulator_messages(cid)
    assert len(stored) == 4
    blob = json.dumps(stored)
    for plaintext in ("potassium", "3.1 mmol", "Friday", "supplements", "tablet"):
        assert plaintext not in blob
    for message in stored:
        envelope = json.loads(message["text"])
        assert envelope["v"] == 1 and envelope["cid"] == cid and message["id"] == envelope["mid"]


def test_message_before_rotation_still_verifies(world: World, conversation: dict[str, Any]) -> None:
    doc, pat, cid = conversation["doc"], conversation["pat"], conversation["cid"]
    before = doc.send(cid, "Sent with key version 1.")
    assert doc.rotate_keys().pair.version == 2
    assert pat.rotate_keys().pair.version == 2
    after = doc.send(cid, "Sent with key version 2.")
    messages = {m.stream_message_id: m for m in pat.read(cid)}
    old, new = messages[before.message_id], messages[after.message_id]
    assert old.verified and old.text == "Sent with key version 1." and old.sender and old.sender.version == 1
    assert new.verified and new.sender and new.sender.version == 2
    # The patient's rotated device still opens what was sealed to its version 1 key, and the clinician
    # reads everything too.
    assert all(m.verified for m in pat.read(cid)) and all(m.verified for m in doc.read(cid))
    shown = doc.show_keys()
    assert shown and shown[0]["version"] == 2 and len(shown[0]["fingerprint"].split()) == 8


def test_billing_cannot_open_clinical_channel(world: World) -> None:
    billing = world.client("billing-desk")
    world.login(billing, world.billing)
    with pytest.raises(Forbidden):
        billing.open_channel("clinical", [world.clinician.user_id])
    with pytest.raises(Forbidden):
        billing.open_channel("patient-care", [world.patient.user_id])


def test_expired_or_ended_session_asks_for_login(world: World) -> None:
    client = world.client("billing-expiry")
    world.login(client, world.billing)
    assert client.keep_alive().idle_remaining_s > 0
    # Automatic logoff: past the idle timeout the SDK refuses to use the token and asks for a login.
    later = time.time() + client.countdown().idle_remaining_s + 5
    expired = SafeHarborClient(world.api.base, state_dir=client.state.path, stream_url=world.stack.emulator_url,
                               clock=lambda: later)
    with pytest.raises(SessionExpired):
        expired.me()
    assert expired.session is None  # the stale session is forgotten
    with pytest.raises(LoginRequired):
        client.me()
    # Server side: a session ended elsewhere (logout) gives LoginRequired on the next call.
    world.login(client, world.billing)
    token = client.state.load_session()["access_token"]  # type: ignore[index]
    assert world.api.call("POST", "/v1/auth/logout", token=token).status_code == 204
    deadline = time.time() + 5
    while True:
        try:
            client.me()
        except LoginRequired:
            break
        assert time.time() < deadline, "ended session still accepted"
        time.sleep(0.1)
    # The CLI says so with its own exit code.
    lines: list[str] = []
    code = cli_main(["--gateway", world.api.base, "--state-dir", str(client.state.path), "whoami"], out=lines.append)
    assert code == EXIT_LOGIN


@pytest.mark.emulator
@pytest.mark.stack_secrets
def test_tampered_replayed_and_readdressed_envelopes_refused(world: World, conversation: dict[str, Any]) -> None:
    doc, pat, cid = conversation["doc"], conversation["pat"], conversation["cid"]
    target = doc.send(cid, "Dose change: 50 mg.")
    original = next(m for m in world.emulator_messages(cid) if m["id"] == target.message_id)
    envelope = json.loads(original["text"])
    # Someone with Stream's server credentials edits the stored message: flip one ciphertext bit.
    raw = bytearray(b64url_decode(envelope["ct"]))
    raw[3] ^= 0x01
    tampered = {**envelope, "ct": base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()}
    edit = world.stream_server("POST", f"/messages/{target.message_id}",
                               {"message": {"text": json.dumps(tampered), "user_id": world.clinician.user_id}})
    assert edit.status_code == 201 or edit.status_code == 200, edit.text
    refused = {m.stream_message_id: m for m in pat.read(cid)}[target.message_id]
    assert isinstance(refused.error, EnvelopeTampered) and refused.text is None
    # The patient re-posts a genuine envelope of the clinician under their own name.
    genuine = next(m for m in world.emulator_messages(cid) if m["id"] == conversation["first"].message_id)
    pat_stream = pat._stream()
    channel_type, channel_id = cid.split(":", 1)
    pat_stream.send_message(channel_type, channel_id, message_id=f"replay-{secrets.token_hex(6)}",
                            text=genuine["text"])
    replayed = doc.read(cid)[-1]
    assert isinstance(replayed.error, SenderMismatch | ReplayDetected)
    # Stream itself re-posts it as the clinician under a new id: a replay.
    world.stream_server("POST", f"/channels/{channel_type}/{channel_id}/message",
                        {"message": {"id": f"replay-{secrets.token_hex(6)}", "text": genuine["text"],
                                     "user_id": world.clinician.user_id}})
    assert isinstance(pat.read(cid)[-1].error, ReplayDetected)
    # A genuine envelope copied into another channel between the same people: re-addressed.
    other_id = f"copy-{secrets.token_hex(6)}"
    created = world.stream_server("POST", f"/channels/{channel_type}/{other_id}/query",
                                  {"data": {"members": [world.clinician.user_id, world.patient.user_id],
                                            "created_by_id": world.clinician.user_id}})
    assert created.status_code in (200, 201), created.text
    world.stream_server("POST", f"/channels/{channel_type}/{other_id}/message",
                        {"message": {"id": genuine["id"] + "-copy", "text": genuine["text"],
                                     "user_id": world.clinician.user_id}})
    copied = doc.read(f"{channel_type}:{other_id}")
    assert copied and isinstance(copied[0].error, MisaddressedMessage)
    # Every other message of the conversation still verifies.
    good = [m for m in pat.read(cid) if m.stream_message_id not in (target.message_id,) and m.error is None]
    assert len(good) >= 5


def _keydir_signer(world: World, note: str) -> tuple[str, str, Ed25519PrivateKey]:
    text, signatures = split_note(note)
    origin = text.split("\n", 1)[0]
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(world.stack.settings.secrets["KEYDIR_SIGNING_KEY"]))
    return origin, signatures[0][0], key


@pytest.mark.stack_secrets
def test_forked_directory_refused(world: World, conversation: dict[str, Any]) -> None:
    doc = conversation["doc"]
    doc.lookup_keys([world.patient.user_id])  # remembers the current checkpoint
    note = str(world.api.call("GET", "/v1/keys/checkpoint").text)
    origin, key_name, key = _keydir_signer(world, note)
    size = int(note.split("\n")[1])
    # 1. The directory serves a checkpoint signed with its real key but for another tree (a split view):
    #    rewrite lookup answers on the way in.
    forked_note = sign_checkpoint(origin, size + 3, os.urandom(32), key_name=key_name, private_key=key)
    session = requests.Session()

    def fork(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.request.method == "GET" and "/v1/keys?" in (response.request.url or ""):
            body = response.json()
            body["checkpoint"] = forked_note
            response._content = json.dumps(body).encode()
        return response

    session.hooks["response"].append(fork)
    forked_view = SafeHarborClient(world.api.base, state_dir=doc.state.path, stream_url=world.stack.emulator_url,
                                   http=session)
    with pytest.raises(DirectoryInconsistent):
        forked_view.lookup_keys([world.patient.user_id])
    with pytest.raises(DirectoryInconsistent):
        forked_view.send(conversation["cid"], "must not be sent to keys from a forked log")
    # 2. The client remembers a checkpoint of the same size with another root: the honest directory's
    #    answer no longer fits what this client saw, and is refused too.
    memory = doc.state.load_directory()
    remembered = memory[world.api.base]["checkpoint"]
    fake_root = os.urandom(32)
    memory[world.api.base]["checkpoint"] = {**remembered, "root": base64.b64encode(fake_root).decode(),
                                            "note": sign_checkpoint(origin, int(remembered["size"]), fake_root,
                                                                    key_name=key_name, private_key=key)}
    doc.state.save_directory(memory)
    with pytest.raises(DirectoryInconsistent):
        doc.lookup_keys([world.patient.user_id])
    memory[world.api.base]["checkpoint"] = remembered
    doc.state.save_directory(memory)
    assert doc.lookup_keys([world.patient.user_id])[world.patient.user_id].devices


def test_cli_reads_and_verifies(world: World, conversation: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    state = world.root / "patient-cli"
    monkeypatch.setenv("SAFEHARBOR_PASSWORD", world.patient.password)
    monkeypatch.setenv("SAFEHARBOR_BACKUP_PASSWORD", BACKUP_PASSWORD)
    base = ["--gateway", world.api.base, "--state-dir", str(state), "--stream-url", world.stack.emulator_url]
    out: list[str] = []
    assert cli_main([*base, "login", world.patient.username], out=out.append) == EXIT_OK
    assert cli_main([*base, "keys", "restore"], out=out.append) == EXIT_OK
    assert cli_main([*base, "whoami"], out=out.append) == EXIT_OK
    assert cli_main([*base, "keys", "show"], out=out.append) == EXIT_OK
    assert cli_main([*base, "send", conversation["cid"], "Sent from the command line."], out=out.append) == EXIT_OK
    out.clear()
    cli_main([*base, "--json", "read", conversation["cid"]], out=out.append)
    rows = json.loads(out[-1])
    assert rows[-1]["verified"] and rows[-1]["text"] == "Sent from the command line."
    assert any(r["verified"] and "potassium" in r["text"] for r in rows)
    # Every key ever published for the patient, proven through the real gateway and directory: this new
    # device's own key, the phone's (and any other device's) listed for the patient to confirm, no alarm.
    out.clear()
    assert cli_main([*base, "--json", "keys", "monitor"], out=out.append) == EXIT_OK
    report = json.loads(out[-1])
    statuses = {(k["device_id"], k["status"]) for k in report["keys"]}
    phone = conversation["pat"].state.load_keyring(world.patient.user_id).device_id
    assert (report["device_id"], "this_device") in statuses and (phone, "other_device") in statuses
    assert not report["alarm"] and report["checkpoint_size"] >= len(report["keys"])


def test_auditor_verifies_the_audit_log(world: World, admin_token: str) -> None:
    auditor = _create_user(world.api, admin_token, "e2ee-audit", "auditor")
    client = world.client("auditor")
    world.login(client, auditor)
    report = client.audit_verify()
    assert report["ok"] is True and report["client_consistent"] is True
    assert report["client_checkpoint_size"] >= 1
    # Second run, while events keep arriving: consistent with the checkpoint remembered by the first.
    again = client.audit_verify()
    assert again["client_checkpoint_size"] >= report["client_checkpoint_size"]
    lines: list[str] = []
    code = cli_main(["--gateway", world.api.base, "--state-dir", str(client.state.path), "audit", "verify"],
                    out=lines.append)
    assert code == EXIT_OK and "audit log OK" in lines[-1]
    # Export through the real stack: kept only with a valid trailer whose checkpoint this client accepts.
    target = client.state.path / "export.cef"
    code = cli_main(["--gateway", world.api.base, "--state-dir", str(client.state.path), "--json", "audit", "export",
                     str(target), "--format", "cef"], out=lines.append)
    summary = json.loads(lines[-1])
    assert code == EXIT_OK and summary["count"] >= 1 and summary["checkpoint_size"] > summary["last_seq"]
    exported = target.read_bytes().splitlines(keepends=True)
    assert len(exported) == summary["count"] + 1 and all(line.startswith(b"CEF:0|") for line in exported)
    assert check_export("cef", exported, lambda note: int(note.split("\n")[1])).count == summary["count"]
    # A stream cut short is refused, and no file is left behind.
    real_get = client.api.http.get

    def cut_get(*args: Any, **kwargs: Any) -> Any:
        response = real_get(*args, **kwargs)
        chunks = response.iter_content
        response.iter_content = lambda chunk_size=1: (c for i, c in enumerate(chunks(chunk_size=64)) if i < 3)
        return response

    client.api.http.get = cut_get  # type: ignore[method-assign]
    cut_target = client.state.path / "cut.jsonl"
    with pytest.raises(AuditVerificationFailed):
        client.audit_export(cut_target)
    assert not cut_target.exists() and not list(client.state.path.glob("cut.jsonl*"))
    client.api.http.get = real_get  # type: ignore[method-assign]


def test_cli_guides_totp_enrolment_then_rotates_and_opens_a_channel(
    world: World, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyotp
    from safeharbor_client import cli as cli_mod

    nurse = _create_user(world.api, admin_token, "e2ee-cli-mfa", "clinician")  # never enrolled
    lines: list[str] = []
    steps = iter(range(int(time.time()) // 30, 10**9))  # confirm at this step, log in at the next (drift 1)

    def code_from_app() -> str:
        secret = next(line for line in lines if "secret:" in line).split("secret:")[1].split()[0]
        return str(pyotp.TOTP(secret).at(next(steps) * 30))

    monkeypatch.setattr(cli_mod.Cli, "otp", staticmethod(code_from_app))
    monkeypatch.setenv("SAFEHARBOR_PASSWORD", nurse.password)
    base = ["--gateway", world.api.base, "--state-dir", str(world.root / "nurse-cli"),
            "--stream-url", world.stack.emulator_url]
    assert cli_main([*base, "login", nurse.username], out=lines.append) == EXIT_OK
    assert any("Recovery codes" in line for line in lines) and "automatic logoff in" in lines[-1]
    me = cli_main([*base, "--json", "whoami"], out=lines.append)
    assert me == EXIT_OK and json.loads(lines[-1])["user"]["mfa_enrolled"] is True
    assert cli_main([*base, "--json", "keys", "init"], out=lines.append) == EXIT_OK
    first = json.loads(lines[-1])
    assert cli_main([*base, "--json", "keys", "rotate"], out=lines.append) == EXIT_OK
    rotated = json.loads(lines[-1])
    assert (rotated["device_id"], rotated["version"]) == (first["device_id"], 2)
    assert rotated["fingerprint"] != first["fingerprint"]
    assert cli_main([*base, "--json", "channels", "open", "patient-care", world.patient.user_id],
                    out=lines.append) == EXIT_OK
    channel = json.loads(lines[-1])
    assert channel["cid"].startswith("patient-care:") and world.patient.user_id in channel["members"]
    # The role rule holds on the command line too: a clinician cannot open a billing channel.
    assert cli_main([*base, "channels", "open", "billing", world.billing.user_id], out=lines.append) != EXIT_OK
