"""Every failure the SDK reports: one base class, one subclass per thing a caller may want to tell apart.

Three families:
- `ApiError`: the SafeHarbor API answered with its JSON error (`code`, `message`, `request_id` kept);
  `LoginRequired` and its subclasses mean "ask the user to log in again".
- `EnvelopeError`: a message that must not be shown as authentic, each reason a distinct class
  (tampered, wrong or missing signature, replayed, re-addressed, not for us, ...).
- Key, backup and directory errors: local key state, password backups, transparency checks.
Messages never carry message text or other PHI (ids only).
"""
from __future__ import annotations

from typing import Any


class SafeHarborClientError(Exception):
    """Base class of every error the SDK raises."""

    code: str = "client_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- API and transport ----------------------------------------------------------------------------


class ApiError(SafeHarborClientError):
    """The API answered with an error (`status`, `code`, `request_id` from its JSON error body)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.details = dict(details or {})

    def __str__(self) -> str:
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status} {self.code}: {self.message}{rid}"


class TransportError(SafeHarborClientError):
    """The server could not be reached or answered something that is not the API's JSON."""

    code = "transport_error"


class LoginRequired(ApiError):
    """There is no usable session: log in (again)."""

    def __init__(self, message: str = "Log in first.", **kwargs: Any) -> None:
        kwargs.setdefault("status", 401)
        kwargs.setdefault("code", "login_required")
        super().__init__(message, **kwargs)


class SessionExpired(LoginRequired):
    """The session passed its idle timeout or absolute lifetime (automatic logoff)."""


class SessionRevoked(LoginRequired):
    """The session was ended by logout, an administrator or deactivation."""


class InvalidCredentials(ApiError):
    """Unknown user or wrong password (the API does not say which)."""


class MfaRequired(ApiError):
    """The password was right; a one-time code is needed."""


class MfaInvalid(ApiError):
    """The one-time code was wrong or already used."""


class MfaEnrollmentRequired(ApiError):
    """The role needs MFA and the user has not enrolled: only enrolment works."""


class Forbidden(ApiError):
    """Authenticated but not allowed (role rules, channel types, another user's keys)."""


class FreshLoginRequired(Forbidden):
    """Reading the key backup needs a recent password login: log in again, then restore at once."""


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """A version race or duplicate (e.g. someone registered the same key version first)."""


class Unprocessable(ApiError):
    """Well-formed but refused (bad signature, weak password, ...)."""


class RateLimited(ApiError):
    """429 `rate_limited` or `locked_out`; `retry_after` in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    """502/503: a service or Stream is down."""


class StreamApiError(SafeHarborClientError):
    """Stream (or the emulator) refused a user request; `stream_code` is Stream's numeric code."""

    code = "stream_error"

    def __init__(self, message: str, *, status: int, stream_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.stream_code = stream_code


# -- envelopes ------------------------------------------------------------------------------------


class EnvelopeError(SafeHarborClientError):
    """A message that must not be shown as authentic plaintext."""

    code = "envelope_error"

    def __init__(self, message: str, *, message_id: str | None = None) -> None:
        super().__init__(message)
        self.message_id = message_id


class EnvelopeMalformed(EnvelopeError):
    """Not an envelope at all: bad JSON, missing or wrong-typed fields, bad encodings."""

    code = "envelope_malformed"


class UnsupportedEnvelope(EnvelopeMalformed):
    """An envelope version or suite this SDK does not know."""

    code = "envelope_unsupported"


class EnvelopeTooLarge(EnvelopeError):
    """The envelope would not fit in a Stream message (too many recipient devices or a long text)."""

    code = "envelope_too_large"


class EnvelopeTampered(EnvelopeError):
    """The envelope was changed after sealing: its authenticated encryption does not open."""

    code = "envelope_tampered"


class SignatureMissing(EnvelopeError):
    """The envelope carries no sender signature."""

    code = "signature_missing"


class SignatureInvalid(EnvelopeError):
    """The sender signature does not verify with the sender's key (a forgery or a wrong key)."""

    code = "signature_invalid"


class SenderKeyNotValid(SignatureInvalid):
    """The key the envelope names is unknown, revoked, or was not the sender's key at the message time."""

    code = "sender_key_not_valid"


class SenderMismatch(EnvelopeError):
    """Stream says one user posted it, the signed envelope names another (a re-post under another name)."""

    code = "sender_mismatch"


class ReplayDetected(EnvelopeError):
    """A message id seen before under another Stream message, or a timestamp outside the freshness window."""

    code = "replay_detected"


class MisaddressedMessage(EnvelopeError):
    """A valid envelope sealed for another channel than the one it was read from (re-addressed)."""

    code = "misaddressed_message"


class RecipientKeysMissing(EnvelopeError):
    """Some channel members have no published device keys: they could not read the message."""

    code = "recipient_keys_missing"

    def __init__(self, message: str, *, user_ids: list[str]) -> None:
        super().__init__(message)
        self.user_ids = user_ids


class NotARecipient(EnvelopeError):
    """None of this user's device keys is among the envelope's recipients."""

    code = "not_a_recipient"


# -- local keys and backups -----------------------------------------------------------------------


class KeysNotInitialized(SafeHarborClientError):
    """This device has no keys yet: run `keys init` (or `keys restore` on a second device)."""

    code = "keys_not_initialized"


class KeyRecordInvalid(SafeHarborClientError):
    """A key record's self-signature, rotation signature or chain link does not verify."""

    code = "key_record_invalid"


class BackupError(SafeHarborClientError):
    code = "backup_error"


class BackupPasswordInvalid(BackupError):
    """The password does not open the backup (or the backup was changed)."""

    code = "backup_password_invalid"


class WeakBackupPassword(BackupError):
    code = "weak_backup_password"


# -- key directory transparency -------------------------------------------------------------------


class DirectoryError(SafeHarborClientError):
    code = "directory_error"


class DirectoryProofInvalid(DirectoryError):
    """A checkpoint signature or an inclusion proof does not verify."""

    code = "directory_proof_invalid"


class DirectoryInconsistent(DirectoryError):
    """The directory's log is not an extension of the last checkpoint this client verified (a fork)."""

    code = "directory_inconsistent"
