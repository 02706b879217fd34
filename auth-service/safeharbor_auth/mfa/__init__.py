"""MFA: TOTP enrolment and confirmation, recovery codes, checking a second factor."""
