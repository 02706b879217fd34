"""MFA's HTTP views."""
from __future__ import annotations

from flask import Response
from safeharbor_common.tokens import SCOPE_FULL, SCOPE_MFA_ENROLLMENT
from safeharbor_common.web import api_doc, json_body

from ..http import AUTH_API, auth_context, json_response, live, live_session
from . import schemas, service

bp = AUTH_API
FULL_OR_ENROLMENT = (SCOPE_FULL, SCOPE_MFA_ENROLLMENT)


@bp.post("/v1/auth/mfa/totp/enroll")
@api_doc(summary="Start TOTP enrolment", response_model=schemas.TotpEnrollResponse)
@live_session(scopes=FULL_OR_ENROLMENT)
def totp_enroll() -> Response:
    _, user = live()
    return json_response(service.totp_enroll(ctx=auth_context(), user=user))


@bp.post("/v1/auth/mfa/totp/confirm")
@api_doc(summary="Confirm TOTP enrolment with a code; returns recovery codes once",
         request_model=schemas.TotpConfirmRequest, response_model=schemas.TotpConfirmResponse)
@live_session(scopes=FULL_OR_ENROLMENT)
def totp_confirm() -> Response:
    body = json_body(schemas.TotpConfirmRequest)
    session, user = live()
    return json_response(service.totp_confirm(ctx=auth_context(), session=session, user=user, code=body.code))
