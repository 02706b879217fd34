"""auth-service's typed domain errors; each maps to the API's status and code through its base class."""
from __future__ import annotations

from safeharbor_common.errors import (
    Conflict,
    Forbidden,
    LockedOut,
    NotFound,
    RateLimited,
    SafeHarborError,
    ServiceUnavailable,
    Unprocessable,
    UpstreamError,
)


class DataKeyMismatch(SafeHarborError):
    """A stored secret does not decrypt: AUTH_DATA_KEY changed or the row was tampered with."""

    status, code, default_message = 500, "internal_error", "Stored secret cannot be decrypted."


class TooManyFailedLogins(LockedOut):
    """The account or the client address is locked after repeated failures."""


class LoginRateLimited(RateLimited):
    """Too many failed logins across the whole service in the current window."""

    default_message = "Too many login attempts right now; try again shortly."


class WeakPassword(Unprocessable):
    default_message = "The password does not meet the password policy."


class UsernameTaken(Conflict):
    default_message = "That username is already in use."


class UserNotFound(NotFound):
    default_message = "User not found."


class SessionNotFound(NotFound):
    default_message = "Session not found."


class BreakGlassNotFound(NotFound):
    default_message = "Break-glass session not found."


class LastAdmin(Conflict):
    default_message = "This would leave no active admin."


class SelfDeactivation(Conflict):
    default_message = "Admins cannot deactivate themselves."


class DeprovisioningPending(Conflict):
    default_message = "Deprovisioning of this user is still running; try again when it is done."


class MfaAlreadyEnrolled(Conflict):
    default_message = "Multi-factor authentication is already enrolled."


class NoPendingEnrollment(Conflict):
    default_message = "Start TOTP enrolment first."


class ChannelTypeNotAllowed(Forbidden):
    default_message = "Your role may not use this channel type."


class MemberNotFound(NotFound):
    default_message = "A member does not exist."


class MemberNotAllowed(Unprocessable):
    default_message = "A member is not active or may not use this channel type."


class UnknownChannelType(Unprocessable):
    default_message = "Unknown channel type."


class BreakGlassNotAllowed(Forbidden):
    default_message = "Break-glass access is for clinicians with MFA."


class StreamNotConfigured(ServiceUnavailable):
    default_message = "Stream is not configured."


class StreamUnavailable(ServiceUnavailable):
    default_message = "Stream is unavailable."


class StreamRejected(UpstreamError):
    default_message = "Stream answered with an error."
