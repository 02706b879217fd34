"""keydir-service's typed errors: all SafeHarborError, so the shared handler maps them to HTTP once."""
from __future__ import annotations

from safeharbor_common.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SafeHarborError,
    Unprocessable,
)


class InvalidKeyRecord(Unprocessable):
    """A well-formed record that fails a signature, chain or freshness check."""

    default_message = "The key record is not valid."


class NotYourKeys(Forbidden):
    default_message = "A key record may only name the caller's own user id."


class VersionConflict(Conflict):
    """Compare-and-swap on the device's version lost (a racing registration, or a stale client)."""

    def __init__(self, *, current_version: int) -> None:
        super().__init__(
            f"Version must be {current_version + 1} (the current version is {current_version}).",
            extra={"current_version": current_version},
        )


class DeviceRevoked(Conflict):
    default_message = "This device's keys are revoked; register a new device id."


class KeyReused(Unprocessable):
    default_message = "This public key is already registered to another user."


class TooManyDevices(Conflict):
    default_message = "The user has the maximum number of active devices."


class DeviceNotFound(NotFound):
    default_message = "No such device keys."


class UserKeysNotFound(NotFound):
    default_message = "No keys are published for this user."


class CheckpointNotFound(NotFound):
    default_message = "No checkpoint of that size was signed."


class BackupNotFound(NotFound):
    default_message = "No key backup is stored."


class BackupTooLarge(PayloadTooLarge):
    default_message = "The key backup is too large."


class FreshLoginRequired(Forbidden):
    """Backup retrieval needs a recent password login, not just a live session."""

    default_message = "Reading the key backup needs a recent login; log in again."

    def __init__(self) -> None:
        super().__init__(extra={"reason": "fresh_login_required"})


class BackupReadsLimited(RateLimited):
    default_message = "Too many key backup retrievals; try again later."


class AuditUnavailable(SafeHarborError):
    """The audit outbox refused an event: nothing sensitive is served unaudited."""

    status, code, default_message = 503, "service_unavailable", "Auditing is unavailable; try again later."


class LogStateError(SafeHarborError):
    """The stored log is not in a state the sequencer can extend (e.g. not migrated, head corrupt)."""

    status, code, default_message = 503, "service_unavailable", "The key directory log is unavailable."
