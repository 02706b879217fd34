"""The storage-sensitive paths again on PostgreSQL: the apply lock under concurrency, versions, drift
episodes and the checker lease (skipped when no PostgreSQL is reachable)."""

from __future__ import annotations

import pytest

from . import test_api
from .test_api import (  # noqa: F401 - re-run these tests on PostgreSQL
    test_concurrent_puts_get_distinct_versions_and_stay_in_sync,
    test_drift_in_stream_is_detected_once_per_episode,
    test_lease_is_held_by_one_holder_until_it_expires,
    test_periodic_checker_records_drift_from_one_worker_only,
    test_put_applies_to_stream_and_reads_back,
    test_rollback_reapplies_a_previous_version_as_a_new_one,
    test_stream_error_is_502_and_no_version_claims_to_be_applied,
)

assert test_api


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url
