"""Topic names (CONTRACT section 4). A changed contract means a new `.v2` topic, never an edit."""

from __future__ import annotations

COMPLAINTS_RECEIVED = "complaints.received.v1"
COMPLAINTS_TRIAGED = "complaints.triaged.v1"
COMPLAINTS_RESOLUTION = "complaints.resolution.v1"
INCIDENTS = "incidents.v1"
NOTIFICATIONS = "notifications.v1"

MAIN_TOPICS: tuple[str, ...] = (
    COMPLAINTS_RECEIVED,
    COMPLAINTS_TRIAGED,
    COMPLAINTS_RESOLUTION,
    INCIDENTS,
    NOTIFICATIONS,
)

DEFAULT_PARTITIONS = 6


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


ALL_TOPICS: tuple[str, ...] = MAIN_TOPICS + tuple(dead_letter_topic(t) for t in MAIN_TOPICS)
