"""Settings shared by every service; each service subclasses with its own env prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/complaints"
DEV_WEBHOOK_MASTER_KEY = "dev-only-webhook-master-key-change-me"


class CommonSettings(BaseSettings):
    """Variables every service reads without a prefix (CONTRACT section 1)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="DATABASE_URL")
    db_pool_min: int = Field(2, validation_alias="DB_POOL_MIN")
    db_pool_max: int = Field(10, validation_alias="DB_POOL_MAX")
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    # Idempotent producer (with acks=all): a retried send cannot write a message twice.
    kafka_enable_idempotence: bool = Field(True, validation_alias="KAFKA_ENABLE_IDEMPOTENCE")
    # Consumer tuning: quick failover on one machine; raise the timeouts for production.
    kafka_session_timeout_ms: int = Field(6000, validation_alias="KAFKA_SESSION_TIMEOUT_MS")
    kafka_heartbeat_interval_ms: int = Field(500, validation_alias="KAFKA_HEARTBEAT_INTERVAL_MS")
    kafka_rebalance_timeout_ms: int = Field(6000, validation_alias="KAFKA_REBALANCE_TIMEOUT_MS")
    kafka_fetch_max_wait_ms: int = Field(30, validation_alias="KAFKA_FETCH_MAX_WAIT_MS")
    kafka_max_batch: int = Field(200, validation_alias="KAFKA_MAX_BATCH")
    # What a consumer prefetches per partition (aiokafka's default is 1 MiB): a backlog
    # fills every assigned partition's buffer at once. A batch takes at most
    # KAFKA_MAX_BATCH records of about a kilobyte each, well under this per partition.
    kafka_max_partition_fetch_bytes: int = Field(
        262_144, gt=0, validation_alias="KAFKA_MAX_PARTITION_FETCH_BYTES"
    )
    kafka_max_poll_interval_ms: int = Field(300_000, validation_alias="KAFKA_MAX_POLL_INTERVAL_MS")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: str = Field("json", validation_alias="LOG_FORMAT")
    smtp_url: str | None = Field(None, validation_alias="SMTP_URL")
    # Per-tenant webhook secrets are derived from this key (shared by intake and notifier).
    webhook_master_key: str = Field(DEV_WEBHOOK_MASTER_KEY, validation_alias="WEBHOOK_MASTER_KEY")
    outbox_poll_interval_s: float = Field(0.5, validation_alias="OUTBOX_POLL_INTERVAL_S")
    # A relay leader that hangs (paused, network gone) loses leadership within this bound.
    outbox_leader_timeout_s: float = Field(10.0, validation_alias="OUTBOX_LEADER_TIMEOUT_S")
    outbox_batch_size: int = Field(500, validation_alias="OUTBOX_BATCH_SIZE")
    # A published row only tells when its event went out (debugging the relay); the event
    # itself stays on its topic for the topic's retention (7 days). A day of copies covers
    # an investigation and keeps the outbox, the busiest table, a day's envelopes, not a week's.
    outbox_retention_days: float = Field(1, ge=0, validation_alias="OUTBOX_RETENTION_DAYS")
    # Above the topics' retention: an event the broker could still redeliver stays known.
    inbox_retention_days: float = Field(30, ge=0, validation_alias="INBOX_RETENTION_DAYS")
    # Housekeeping (shared/housekeeping.py), by one instance per service: rows past
    # retention are deleted this often, and the churning tables VACUUMed this often, so
    # their size never depends on autovacuum (0: VACUUM only right after such a delete).
    housekeeping_purge_interval_s: float = Field(
        600, gt=0, validation_alias="HOUSEKEEPING_PURGE_INTERVAL_S"
    )
    housekeeping_vacuum_interval_s: float = Field(
        60, ge=0, validation_alias="HOUSEKEEPING_VACUUM_INTERVAL_S"
    )
    consumer_max_attempts: int = Field(5, validation_alias="CONSUMER_MAX_ATTEMPTS")
    consumer_retry_base_s: float = Field(0.2, validation_alias="CONSUMER_RETRY_BASE_S")


class ServiceSettings(CommonSettings):
    """Base for one service: the HTTP listener, with the service's own env prefix."""

    service_name: str = "service"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
