"""The integration harness's TOTP codes stay valid when the request lands in the next 30-second window.

The server accepts its own step and one either way. The harness used the previous step first (to keep later
steps for later logins); near a window's end that code was two steps old once the request arrived, and CI
failed the e2ee module's setup with `mfa_invalid`."""
from __future__ import annotations

import pyotp
import pytest
from conftest import Api

ARRIVES_LATER_S = 10.0  # how much later a request may reach auth-service on a busy machine


@pytest.mark.parametrize("seconds_into_window", [0.5, 15.0, 29.5])
def test_a_code_is_still_valid_one_window_later(monkeypatch: pytest.MonkeyPatch, seconds_into_window: float) -> None:
    secret = pyotp.random_base32()
    start = 1_800_000_000 - 1_800_000_000 % 30 + seconds_into_window
    monkeypatch.setattr("time.time", lambda: start)
    code = Api("http://127.0.0.1:9")._next_code(f"harness-{seconds_into_window}", secret)
    late = start + ARRIVES_LATER_S
    assert pyotp.TOTP(secret).verify(code, for_time=late, valid_window=1)
