"""intake's SQL: tenants, keys, complaints and the read model. Adapter at the edge."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

Queryable = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str
    webhook_url: str
    jurisdiction: str
    locale: str


@dataclass(frozen=True)
class StoredKey:
    tenant: Tenant
    secret_hash: bytes
    expires_at: datetime | None


_TENANT_COLUMNS = "t.id, t.name, t.webhook_url, t.jurisdiction, t.locale"


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(row["id"], row["name"], row["webhook_url"], row["jurisdiction"], row["locale"])


async def insert_tenant(conn: asyncpg.Connection, tenant: Tenant) -> None:
    await conn.execute(
        "INSERT INTO tenants (id, name, webhook_url, jurisdiction, locale) "
        "VALUES ($1, $2, $3, $4, $5)",
        tenant.id,
        tenant.name,
        tenant.webhook_url,
        tenant.jurisdiction,
        tenant.locale,
    )


async def tenant_exists(conn: Queryable, tenant_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM tenants WHERE id = $1", tenant_id))


async def insert_api_key(
    conn: asyncpg.Connection, key_id: str, tenant_id: uuid.UUID, secret_hash: bytes
) -> None:
    await conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, secret_hash) VALUES ($1, $2, $3)",
        key_id,
        tenant_id,
        secret_hash,
    )


async def expire_other_keys(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, keep_key_id: str, expires_at: datetime
) -> int:
    result = await conn.execute(
        "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, $3), $3) "
        "WHERE tenant_id = $1 AND key_id <> $2",
        tenant_id,
        keep_key_id,
        expires_at,
    )
    return int(result.split()[-1])


async def find_key(conn: Queryable, key_id: str) -> StoredKey | None:
    row = await conn.fetchrow(
        f"SELECT {_TENANT_COLUMNS}, k.secret_hash, k.expires_at "
        "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_id = $1",
        key_id,
    )
    if row is None:
        return None
    return StoredKey(_tenant(row), bytes(row["secret_hash"]), row["expires_at"])


async def reserve_ticket_block(conn: Queryable) -> tuple[int, int]:
    """(first, size): a block of ticket sequence numbers only this caller will use."""
    row = await conn.fetchrow(
        "SELECT nextval('ticket_seq') AS first, increment_by AS size FROM pg_sequences "
        "WHERE schemaname = current_schema() AND sequencename = 'ticket_seq'"
    )
    if row is None:
        raise RuntimeError("ticket_seq is missing: intake's migrations have not run")
    return int(row["first"]), int(row["size"])


async def insert_complaint(
    conn: Queryable, values: dict[str, Any], outbox_row: tuple[Any, ...]
) -> bool:
    """Store the complaint, its first timeline entry and its outbox event in ONE statement
    (atomic without an explicit transaction: one round trip). False when the
    Idempotency-Key was used before: then nothing is written."""
    inserted = await conn.fetchval(
        """
        WITH new AS (
            INSERT INTO complaints (
                id, tenant_id, ticket_no, idempotency_key, request_hash, customer_id, customer,
                channel, description, amount, currency, transaction_ref, merchant, occurred_at,
                category_hint, evidence, received_at, first_response_due,
                ack_first_response_due)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                    $17, $18, $18)
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING id, received_at
        ), timeline AS (
            INSERT INTO complaint_timeline (complaint_id, at, status, detail)
            SELECT id, received_at, 'received', 'Complaint received.' FROM new
        ), event AS (
            INSERT INTO outbox (event_id, topic, message_key, message)
            SELECT $19, $20, $21, $22 FROM new
        )
        SELECT count(*) FROM new
        """,
        values["id"],
        values["tenant_id"],
        values["ticket_no"],
        values["idempotency_key"],
        values["request_hash"],
        values["customer_id"],
        values["customer"],
        values["channel"],
        values["description"],
        values["amount"],
        values["currency"],
        values["transaction_ref"],
        values["merchant"],
        values["occurred_at"],
        values["category_hint"],
        values["evidence"],
        values["received_at"],
        values["first_response_due"],
        *outbox_row,
    )
    return bool(inserted)


async def find_by_idempotency_key(
    conn: Queryable, tenant_id: uuid.UUID, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        # The due time as first answered (migrated rows triaged before 0003: the read model's).
        "SELECT id, ticket_no, request_hash, received_at, "
        "COALESCE(ack_first_response_due, first_response_due) AS ack_first_response_due "
        "FROM complaints WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant_id,
        key,
    )


async def add_timeline(
    conn: asyncpg.Connection, complaint_id: uuid.UUID, at: datetime, status: str, detail: str
) -> None:
    await conn.execute(
        "INSERT INTO complaint_timeline (complaint_id, at, status, detail) VALUES ($1, $2, $3, $4)",
        complaint_id,
        at,
        status,
        detail,
    )


_VIEW_COLUMNS = (
    "id, ticket_no, status, category, priority, channel, customer_id, amount, currency, "
    "transaction_ref, merchant, received_at, first_response_due, resolution_due, updated_at, "
    "outcome, company_response"
)


async def get_complaint(
    conn: Queryable, tenant_id: uuid.UUID, ticket_no: str
) -> asyncpg.Record | None:
    """The complaint with its timeline and resolutions, in one round trip.

    Scoped by tenant: another tenant's ticket is indistinguishable from a missing one.
    """
    return await conn.fetchrow(
        f"""
        SELECT {_VIEW_COLUMNS},
            array(SELECT row(t.at, t.status, t.detail) FROM complaint_timeline t
                  WHERE t.complaint_id = c.id ORDER BY t.at, t.id) AS timeline,
            array(SELECT row(r.resolution_id, r.kind, r.amount, r.currency, r.status,
                             r.recorded_at, r.compensation_type, r.reverses, r.decided_by,
                             r.approved_at,
                             -- reversed once a reversal pointing here is in effect (a
                             -- pending one is not); whichever arrived first
                             (SELECT x.resolution_id FROM complaint_resolutions x
                              WHERE x.reverses = r.resolution_id
                                AND x.complaint_id = r.complaint_id
                                AND x.status <> 'pending_approval'
                              ORDER BY x.recorded_at, x.resolution_id LIMIT 1))
                  FROM complaint_resolutions r
                  WHERE r.complaint_id = c.id
                  ORDER BY r.recorded_at, r.resolution_id) AS resolutions,
            c.clocks
        FROM complaints c WHERE c.tenant_id = $1 AND c.ticket_no = $2
        """,
        tenant_id,
        ticket_no,
    )


async def list_complaints(
    conn: Queryable,
    tenant_id: uuid.UUID,
    *,
    customer_id: str | None,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT {_VIEW_COLUMNS} FROM complaints
        WHERE tenant_id = $1
          AND ($2::text IS NULL OR customer_id = $2)
          AND ($3::text IS NULL OR status = $3)
          AND ($4::timestamptz IS NULL OR (received_at, id) < ($4, $5::uuid))
        ORDER BY received_at DESC, id DESC
        LIMIT $6
        """,
        tenant_id,
        customer_id,
        status,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )


async def lock_complaint(
    conn: asyncpg.Connection, complaint_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, status FROM complaints WHERE id = $1 FOR UPDATE", complaint_id
    )


async def lock_complaints(
    conn: asyncpg.Connection, complaint_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Every one of these complaints that exists, locked until the transaction ends; in
    id order, the order every batch takes its locks in."""
    return await conn.fetch(
        "SELECT id, status FROM complaints WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        complaint_ids,
    )


async def add_timelines(
    conn: asyncpg.Connection, entries: list[tuple[uuid.UUID, datetime, str, str]]
) -> None:
    """Timeline lines (complaint_id, at, status, detail), in one statement and in order."""
    if not entries:
        return
    ids, ats, statuses, details = (list(column) for column in zip(*entries, strict=True))
    await conn.execute(
        "INSERT INTO complaint_timeline (complaint_id, at, status, detail) "
        "SELECT complaint_id, at, status, detail FROM unnest("
        "$1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) "
        "WITH ORDINALITY AS t(complaint_id, at, status, detail, n) ORDER BY n",
        ids,
        ats,
        statuses,
        details,
    )


async def update_read_models(conn: asyncpg.Connection, updates: list[dict[str, Any]]) -> None:
    """Many complaints' view columns in one statement; each dict holds `id`, `status`
    and any of the other read-model fields (a field left out keeps its value)."""
    if not updates:
        return
    columns = {name: [u.get(name) for u in updates] for name in ("id", *_VIEW_UPDATE_ORDER)}
    await conn.execute(
        """
        UPDATE complaints c SET
            status = v.status,
            category = coalesce(v.category, c.category),
            priority = coalesce(v.priority, c.priority),
            first_response_due = coalesce(v.first_response_due, c.first_response_due),
            resolution_due = coalesce(v.resolution_due, c.resolution_due),
            updated_at = now()
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                    $6::timestamptz[])
            AS v(id, status, category, priority, first_response_due, resolution_due)
        WHERE c.id = v.id
        """,
        *columns.values(),
    )


_VIEW_UPDATE_ORDER = ("status", "category", "priority", "first_response_due", "resolution_due")
_READ_MODEL_FIELDS = frozenset(_VIEW_UPDATE_ORDER)


async def update_read_model(
    conn: asyncpg.Connection, complaint_id: uuid.UUID, **fields: Any
) -> None:
    unknown = set(fields) - _READ_MODEL_FIELDS
    if not fields or unknown:
        raise ValueError(f"unexpected read-model fields: {sorted(unknown)}")
    # Column names come from the fixed set above, never from input.
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
    await conn.execute(
        f"UPDATE complaints SET {assignments}, updated_at = now() WHERE id = $1",
        complaint_id,
        *fields.values(),
    )


async def upsert_resolution(conn: asyncpg.Connection, values: dict[str, Any]) -> None:
    """Insert a ledger entry, or bring news of one already here.

    Safe in any order: a status only moves forward (pending_approval, recorded,
    approved: an approval read before the entry it approves is not undone by it),
    recorded_at is the earliest event's time, and a value already known is kept."""
    await conn.execute(
        """
        INSERT INTO complaint_resolutions
            (resolution_id, complaint_id, kind, amount, currency, status, recorded_at,
             compensation_type, reverses, decided_by, approved_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                CASE WHEN $6 = 'approved' THEN $7::timestamptz END)
        ON CONFLICT (resolution_id) DO UPDATE SET
            status = CASE WHEN array_position($11::text[], EXCLUDED.status)
                               > array_position($11::text[], complaint_resolutions.status)
                          THEN EXCLUDED.status ELSE complaint_resolutions.status END,
            recorded_at = LEAST(complaint_resolutions.recorded_at, EXCLUDED.recorded_at),
            approved_at = COALESCE(complaint_resolutions.approved_at, EXCLUDED.approved_at),
            amount = COALESCE(complaint_resolutions.amount, EXCLUDED.amount),
            currency = COALESCE(complaint_resolutions.currency, EXCLUDED.currency),
            compensation_type = COALESCE(complaint_resolutions.compensation_type,
                                         EXCLUDED.compensation_type),
            reverses = COALESCE(complaint_resolutions.reverses, EXCLUDED.reverses),
            decided_by = COALESCE(complaint_resolutions.decided_by, EXCLUDED.decided_by)
        """,
        values["resolution_id"],
        values["complaint_id"],
        values["kind"],
        values["amount"],
        values["currency"],
        values["status"],
        values["recorded_at"],
        values.get("compensation_type"),
        values.get("reverses"),
        values.get("decided_by"),
        _RESOLUTION_STATUS_ORDER,
    )


# An unknown status (a newer producer's) ranks below all: NULL > n is never true.
_RESOLUTION_STATUS_ORDER = ["pending_approval", "recorded", "approved"]


async def set_outcome(
    conn: asyncpg.Connection,
    complaint_id: uuid.UUID,
    outcome: str | None,
    company_response: str | None,
) -> None:
    await conn.execute(
        "UPDATE complaints SET outcome = $2, company_response = $3, updated_at = now() "
        "WHERE id = $1",
        complaint_id,
        outcome,
        company_response,
    )


async def set_clocks(
    conn: asyncpg.Connection, complaint_id: uuid.UUID, clocks: list[dict[str, Any]], at: datetime
) -> bool:
    """The clocks of the newest event that carried any: events of different types may
    arrive out of order, and an older list must not replace a newer one."""
    updated = await conn.fetchval(
        """
        UPDATE complaints SET clocks = $2, clocks_at = $3, updated_at = now()
        WHERE id = $1 AND (clocks_at IS NULL OR clocks_at <= $3)
        RETURNING true
        """,
        complaint_id,
        clocks,  # the connection's jsonb codec encodes it
        at,
    )
    return bool(updated)


# ------------------------------------------------------------------ follow-ups


async def lock_tenant_complaint(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, ticket_no: str
) -> asyncpg.Record | None:
    """This tenant's complaint, locked until the transaction ends (None: not theirs or none).

    The lock orders follow-ups and read-model updates of one complaint, so a feedback
    check sees the status the update it races with leaves behind.
    """
    return await conn.fetchrow(
        "SELECT id, ticket_no, status FROM complaints "
        "WHERE tenant_id = $1 AND ticket_no = $2 FOR UPDATE",
        tenant_id,
        ticket_no,
    )


async def find_message(conn: Queryable, tenant_id: uuid.UUID, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, complaint_id, request_hash, received_at FROM complaint_messages "
        "WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant_id,
        key,
    )


async def insert_message(conn: asyncpg.Connection, values: dict[str, Any]) -> bool:
    """False when a concurrent request took the same Idempotency-Key first."""
    inserted = await conn.fetchval(
        """
        INSERT INTO complaint_messages (id, complaint_id, tenant_id, idempotency_key,
            request_hash, text, evidence, received_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
        RETURNING true
        """,
        values["id"],
        values["complaint_id"],
        values["tenant_id"],
        values["idempotency_key"],
        values["request_hash"],
        values["text"],
        values["evidence"],
        values["received_at"],
    )
    return bool(inserted)


async def find_feedback(conn: Queryable, tenant_id: uuid.UUID, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, complaint_id, request_hash, score, reopened, status_after, received_at "
        "FROM complaint_feedback WHERE tenant_id = $1 AND idempotency_key = $2",
        tenant_id,
        key,
    )


async def insert_feedback(conn: asyncpg.Connection, values: dict[str, Any]) -> bool:
    """False when a concurrent request took the same Idempotency-Key first."""
    inserted = await conn.fetchval(
        """
        INSERT INTO complaint_feedback (id, complaint_id, tenant_id, idempotency_key,
            request_hash, score, comment, reopened, status_after, received_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
        RETURNING true
        """,
        values["id"],
        values["complaint_id"],
        values["tenant_id"],
        values["idempotency_key"],
        values["request_hash"],
        values["score"],
        values["comment"],
        values["reopened"],
        values["status_after"],
        values["received_at"],
    )
    return bool(inserted)
