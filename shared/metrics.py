"""Prometheus metrics of CONTRACT section 8, on a registry per app instance.

Labels never carry a customer identifier or free text: only closed vocabularies.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.complaints_received = Counter(
            "complaints_received_total", "Complaints accepted by intake", ["channel"], registry=r
        )
        self.complaints_triaged = Counter(
            "complaints_triaged_total", "Complaints triaged", ["category", "priority"], registry=r
        )
        self.resolutions_recorded = Counter(
            "resolutions_recorded_total", "Resolutions recorded", ["kind"], registry=r
        )
        self.notifications_sent = Counter(
            "notifications_sent_total",
            "Notification delivery attempts",
            ["type", "channel", "outcome"],
            registry=r,
        )
        self.events_consumed = Counter(
            "events_consumed_total",
            "Events consumed",
            ["service", "topic", "outcome"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "events_dead_lettered_total",
            "Events sent to a dead-letter topic",
            ["service", "topic"],
            registry=r,
        )
        self._outbox_pending = Gauge(
            "outbox_pending_events", "Outbox rows not yet published", ["service"], registry=r
        )
        self.outbox_pending = self._outbox_pending.labels(service=service)
        self.sla_breaches = Counter(
            "sla_breaches_total", "SLA clocks breached", ["priority"], registry=r
        )
        self.event_handling_seconds = Histogram(
            "event_handling_seconds",
            "Time to handle one consumed event",
            ["service", "topic"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.acknowledgement_seconds = Histogram(
            "complaint_acknowledgement_seconds",
            "From complaint received to acknowledgement delivered",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
