"""audit-service's typed errors: all SafeHarborError, so the shared handler maps them to HTTP once."""

from __future__ import annotations

from safeharbor_common.errors import SafeHarborError, ServiceUnavailable, Unprocessable


class BadWebhookSignature(Unprocessable):
    default_message = "The webhook signature does not verify."


class WebhooksNotConfigured(ServiceUnavailable):
    default_message = "Stream webhooks are not configured."


class LogStateError(SafeHarborError):
    """The stored log is not in a state the sequencer can extend (e.g. head and entries disagree)."""

    status, code, default_message = 503, "service_unavailable", "The audit log is unavailable."


class RetentionViolation(SafeHarborError):
    status, code, default_message = 409, "conflict", "Entries younger than the retention period cannot be removed."
