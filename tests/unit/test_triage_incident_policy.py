"""Incident rules without a database."""

from __future__ import annotations

from datetime import timedelta

from services.triage.incident_policy import IncidentPolicy, merchant_key

POLICY = IncidentPolicy(
    window=timedelta(minutes=30),
    baseline=timedelta(hours=24),
    merchant_min_complaints=5,
    category_min_complaints=20,
    spike_factor=3.0,
)


def test_merchant_cluster_needs_the_minimum() -> None:
    assert not POLICY.merchant_cluster(4)
    assert POLICY.merchant_cluster(5)


def test_category_spike_is_relative_to_the_usual_volume() -> None:
    # 48 half-hour windows in the baseline: 480 complaints = 10 per window as usual.
    assert not POLICY.category_spike(complaints_in_window=25, complaints_in_baseline=480)
    assert POLICY.category_spike(complaints_in_window=31, complaints_in_baseline=480)
    # Below the absolute minimum, never an incident, however quiet it was before.
    assert not POLICY.category_spike(complaints_in_window=19, complaints_in_baseline=0)
    assert POLICY.category_spike(complaints_in_window=20, complaints_in_baseline=0)


def test_merchant_names_are_normalised() -> None:
    assert merchant_key("  Example   MART ") == merchant_key("example mart") == "example mart"
    assert merchant_key("") is None and merchant_key(None) is None
