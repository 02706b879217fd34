from safeharbor_common.revocation import REDIS_CHANNEL, RevocationList  # noqa: F401  (moved to the common lib: every verifier reads the feed alike, issue 14)
