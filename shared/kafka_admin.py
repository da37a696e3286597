"""Creates the project's topics explicitly (auto-created topics get the broker's default)."""

from __future__ import annotations

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.topics import ALL_TOPICS, DEFAULT_PARTITIONS


async def ensure_topics(
    bootstrap_servers: str,
    topics: tuple[str, ...] = ALL_TOPICS,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, partitions, replication_factor) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process
        return missing
    finally:
        await admin.close()


def main(argv: list[str]) -> int:
    from shared.settings import CommonSettings

    if argv[:1] != ["create-topics"]:
        print("usage: python -m shared.kafka_admin create-topics", file=sys.stderr)
        return 2
    settings = CommonSettings()
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers))
    print(f"topics created: {', '.join(created) or 'none (all existed)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
