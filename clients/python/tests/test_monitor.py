"""`monitor_keys` / `safeharbor keys monitor`: every key ever published for the user, proven and classified,
against the real keydir-service (in-process, see ministack.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from ministack import MiniStack, logged_in, make
from safeharbor_client.cli import EXIT_KEY_ALARM, EXIT_OK, EXIT_UNVERIFIED
from safeharbor_client.cli import main as cli_main
from safeharbor_client.client import ALARM, OTHER_DEVICE, THIS_DEVICE, SafeHarborClient
from safeharbor_client.errors import DirectoryProofInvalid
from safeharbor_client.keys import DeviceKeyPair, build_record


def monitor_cli(stack: MiniStack, client: SafeHarborClient, *extra: str) -> tuple[int, str]:
    out: list[str] = []
    code = cli_main(["--gateway", stack.gateway_url, "--state-dir", str(client.state.path), *extra, "keys",
                     "monitor"], out=out.append)
    return code, "\n".join(out)


def statuses(client: SafeHarborClient) -> list[tuple[str, int, str]]:
    return [(k.device_id, k.version, k.status) for k in client.monitor_keys().keys]


def test_clean_run_lists_every_version_made_here(stack: MiniStack, root: Path) -> None:
    stack.add_user("mia", "patient")
    phone = logged_in(stack, root, "mia-phone", "mia")
    device = phone.init_keys().pair.device_id
    phone.rotate_keys()
    report = phone.monitor_keys()
    assert [(k.device_id, k.version, k.status) for k in report.keys] == [(device, 1, THIS_DEVICE),
                                                                         (device, 2, THIS_DEVICE)]
    assert report.alarms == [] and report.device_id == device
    assert report.checkpoint_size == phone._directory().last_checkpoint.size  # type: ignore[union-attr]
    assert [k.fingerprint for k in report.keys][-1] == phone.show_keys()[0]["fingerprint"]
    code, text = monitor_cli(stack, phone)
    assert code == EXIT_OK
    assert text.splitlines()[0].split() == ["device", "version", "fingerprint", "created", "status", "revoked"]
    assert text.count("this device") == 2 and "ALARM" not in text


def test_second_device_listed_as_other_device_and_revocation_shown(stack: MiniStack, root: Path) -> None:
    stack.add_user("noa", "patient")
    phone = logged_in(stack, root, "noa-phone", "noa")
    laptop = logged_in(stack, root, "noa-laptop", "noa")
    phone_id = phone.init_keys().pair.device_id
    laptop_id = laptop.init_keys().pair.device_id
    assert statuses(phone) == [(phone_id, 1, THIS_DEVICE), (laptop_id, 1, OTHER_DEVICE)]
    assert statuses(laptop) == [(phone_id, 1, OTHER_DEVICE), (laptop_id, 1, THIS_DEVICE)]
    code, text = monitor_cli(stack, phone)
    assert code == EXIT_OK and "other device: confirm" in text and "Other devices: check each" in text
    phone.revoke_device(laptop_id, "lost")
    report = phone.monitor_keys()
    laptop_key = next(k for k in report.keys if k.device_id == laptop_id)
    assert laptop_key.revoked_at is not None and laptop_key.revocation_reason == "lost"
    assert all(k.revoked_at is None for k in report.keys if k.device_id == phone_id)
    code, text = monitor_cli(stack, phone, "--json")
    rows = {row["device_id"]: row for row in json.loads(text)["keys"]}
    assert code == EXIT_OK and rows[laptop_id]["revocation_reason"] == "lost" and rows[phone_id]["revoked_at"] is None


def test_alarm_for_a_key_this_device_never_made(stack: MiniStack, root: Path) -> None:
    """Someone with this device's stolen v1 private key (and the user's session) rotates the device to a key
    pair of their own, straight at the key directory: the directory accepts it (the rotation signature is
    valid), only the device can tell the key is not its own."""
    stack.add_user("lea", "patient")
    phone = logged_in(stack, root, "lea-phone", "lea")
    stolen = phone.init_keys().pair
    thief = DeviceKeyPair.generate(user_id=stolen.user_id, device_id=stolen.device_id, version=2)
    token = phone.state.load_session()["access_token"]  # type: ignore[index]
    answer = requests.post(stack.keydir_url + "/v1/keys", json=build_record(thief, previous=stolen),
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 201, answer.text
    report = phone.monitor_keys()
    assert [(k.version, k.status) for k in report.keys] == [(1, THIS_DEVICE), (2, ALARM)]
    assert report.alarms[0].key.record["sig_pub"] == thief.sig_pub
    code, text = monitor_cli(stack, phone)
    assert code == EXIT_KEY_ALARM
    assert "ALARM: not made here" in text and f"claim this device ({stolen.device_id})" in text
    # Another device of the same user sees the rotated device as another device, for the user to confirm.
    tablet = logged_in(stack, root, "lea-tablet", "lea")
    assert {k.status for k in tablet.monitor_keys().keys} == {OTHER_DEVICE}


def test_tampered_proof_or_record_refused(stack: MiniStack, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.add_user("ida", "patient")
    phone = logged_in(stack, root, "ida-phone", "ida")
    phone.init_keys()
    phone.rotate_keys()  # two leaves of her own: every inclusion proof has hashes to tamper with
    phone.monitor_keys()

    def tampering(change: Any) -> SafeHarborClient:
        session = requests.Session()

        def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
            if response.request.method == "GET" and "/audit" in (response.request.url or ""):
                body = response.json()
                change(body["leaves"][0])
                response._content = json.dumps(body).encode()
            return response

        session.hooks["response"].append(hook)
        return make(stack, root, "ida-phone", http=session)

    def flip_proof(leaf: dict[str, Any]) -> None:
        first = bytearray(bytes.fromhex(leaf["inclusion_proof"][0]))
        first[0] ^= 1
        leaf["inclusion_proof"][0] = first.hex()

    def other_time(leaf: dict[str, Any]) -> None:
        leaf["record"]["created_at"] = "2020-01-01T00:00:00.000000Z"

    for change in (flip_proof, other_time):
        with pytest.raises(DirectoryProofInvalid):
            tampering(change).monitor_keys()
    # The CLI says VERIFICATION FAILED (exit 4), not "alarm" or "ok".
    tampered = tampering(flip_proof).http
    monkeypatch.setattr(requests, "Session", lambda: tampered)
    code, _ = monitor_cli(stack, phone)
    monkeypatch.undo()
    assert code == EXIT_UNVERIFIED
    assert {k.status for k in phone.monitor_keys().keys} == {THIS_DEVICE}  # honest answers still accepted
