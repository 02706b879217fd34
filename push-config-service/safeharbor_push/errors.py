"""Typed domain errors of push-config-service, each one of the shared JSON error codes."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safeharbor_common.errors import (
    Conflict,
    NotFound,
    PhiInTemplate,
    SafeHarborError,
    ServiceUnavailable,
    Unprocessable,
    UpstreamError,
)


class TemplateRefused(PhiInTemplate):
    """The linter found problems; the body lists every finding."""

    def __init__(self, findings: Sequence[dict[str, Any]]) -> None:
        rules = sorted({str(f["rule"]) for f in findings})
        super().__init__(
            f"The template was refused: {len(findings)} finding(s) ({', '.join(rules)}).",
            extra={"findings": list(findings)},
        )


def _stream_extra(operation: str, stream_status: int | None, stream_code: int | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"operation": operation}
    if stream_status is not None:
        extra["stream_status"] = stream_status
    if stream_code is not None:
        extra["stream_code"] = stream_code
    return extra


class StreamFailure(SafeHarborError):
    """Any failed Stream call; nothing was recorded as applied. Catch this, raise one of the two below."""


class StreamUnavailable(StreamFailure, UpstreamError):
    """Stream answered, with an error or an unusable body: 502 `upstream_error`."""

    def __init__(self, operation: str, *, stream_status: int | None = None, stream_code: int | None = None) -> None:
        super().__init__(
            f"Stream did not accept the request ({operation}).",
            extra=_stream_extra(operation, stream_status, stream_code),
        )


class StreamUnreachable(StreamFailure, ServiceUnavailable):
    """Stream could not be reached (connection refused, reset, timeout): 503 `service_unavailable`."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"Stream could not be reached ({operation}); try again shortly.",
            extra=_stream_extra(operation, None, None),
        )


class ReadBackMismatch(UpstreamError):
    """Stream accepted the settings but reading them back shows something else."""

    def __init__(self, *, provider: str, kind: str) -> None:
        super().__init__(
            f"Stream's {provider} {kind} template read back differs from the one applied.",
            extra={"operation": "read_back", "provider": provider, "kind": kind},
        )


class VersionNotFound(NotFound):
    def __init__(self, *, provider: str, kind: str, version: int) -> None:
        super().__init__(f"No {provider} {kind} template version {version}.")


class VersionNotApproved(Unprocessable):
    def __init__(self, *, provider: str, kind: str, version: int) -> None:
        super().__init__(
            f"{provider} {kind} template version {version} was never applied; only approved versions can be "
            "rolled back to."
        )


class ApplyInProgress(Conflict):
    def __init__(self) -> None:
        super().__init__("Another push template change is being applied; retry shortly.")
