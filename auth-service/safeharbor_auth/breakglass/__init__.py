"""Break-glass: emergency, time-boxed access to one channel (clinician with MFA), reviewed by an admin."""
