"""The tenant-facing HTTP API (CONTRACT section 3)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Any, TypeVar

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from services.intake import repository
from services.intake.accept import IdempotencyConflict, accept_complaint
from services.intake.auth import TenantAuthenticator
from services.intake.domain import ComplaintIn, Status, request_fingerprint
from services.intake.repository import Tenant
from services.intake.settings import IntakeSettings
from shared import jsonutil
from shared.metrics import ServiceMetrics
from shared.problems import Problem, field_errors
from shared.ratelimit import TokenBuckets

MAX_PAGE = 100
ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The body as JSON, with the contract's errors: 415, 413, 400."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise Problem(415, "Content-Type must be application/json.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise Problem(413, f"The body exceeds {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, f"The body exceeds {max_bytes} bytes.")
        chunks.append(chunk)
    try:
        return jsonutil.loads(b"".join(chunks))
    except ValueError as exc:
        raise Problem(400, f"The body is not valid JSON: {exc}") from None


def parse_model(model: type[ModelT], data: Any) -> ModelT:
    if not isinstance(data, dict):
        raise Problem(422, "The body must be a JSON object.", errors=[])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(
            422, "The request is not valid.", errors=field_errors(list(exc.errors()))
        ) from None


def encode_cursor(received_at: datetime, complaint_id: uuid.UUID) -> str:
    raw = f"{received_at.isoformat()}|{complaint_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, complaint_id = raw.split("|")
        return datetime.fromisoformat(at), uuid.UUID(complaint_id)
    except (ValueError, UnicodeDecodeError):
        raise Problem(
            422, "Invalid cursor.", errors=[{"field": "cursor", "message": "invalid"}]
        ) from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def complaint_summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "complaint_id": str(row["id"]),
        "ticket_no": row["ticket_no"],
        "status": row["status"],
        "category": row["category"],
        "priority": row["priority"],
        "channel": row["channel"],
        "customer_id": row["customer_id"],
        "amount": str(row["amount"]) if row["amount"] is not None else None,
        "currency": row["currency"],
        "transaction_ref": row["transaction_ref"],
        "merchant": row["merchant"],
        "received_at": _iso(row["received_at"]),
        "first_response_due": _iso(row["first_response_due"]),
        "resolution_due": _iso(row["resolution_due"]),
        "updated_at": _iso(row["updated_at"]),
        "links": {"self": f"/v1/complaints/{row['ticket_no']}"},
    }


COMPLAINT_EXAMPLE = {
    "customer": {"id": "u-829", "locale": "zh-CN", "email": "a@example.com"},
    "channel": "app",
    "description": "同一笔订单被扣了两次款，请退回多扣的86.50元。",
    "amount": "86.50",
    "currency": "CNY",
    "transaction_ref": "T20261122-0001",
    "merchant": "Example Mart",
    "occurred_at": "2026-11-22T10:15:00+08:00",
    "category_hint": "duplicate_charge",
}


def build_router(
    settings: IntakeSettings,
    pool_getter: Any,
    authenticator_getter: Any,
    metrics: ServiceMetrics,
) -> APIRouter:
    router = APIRouter(prefix="/v1")
    buckets = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)

    async def tenant_of(authorization: str | None) -> Tenant:
        authenticator: TenantAuthenticator = authenticator_getter()
        tenant = await authenticator.authenticate(authorization)
        wait_s = buckets.take(str(tenant.id))
        if wait_s > 0:
            raise Problem(
                429,
                "Rate limit exceeded for this tenant.",
                headers={"Retry-After": str(max(1, round(wait_s + 0.5)))},
            )
        return tenant

    @router.post(
        "/complaints",
        status_code=202,
        summary="File a complaint",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": ComplaintIn.model_json_schema(
                            ref_template="#/components/schemas/{model}"
                        ),
                        "example": COMPLAINT_EXAMPLE,
                    }
                },
            }
        },
    )
    async def create_complaint(
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        tenant = await tenant_of(authorization)
        if idempotency_key is None or not 1 <= len(idempotency_key) <= 128:
            raise Problem(
                400,
                "The Idempotency-Key header is required (1-128 characters).",
                errors=[{"field": "Idempotency-Key", "message": "required, 1-128 characters"}],
            )
        data = await read_json_body(request, settings.max_body_bytes)
        complaint = parse_model(ComplaintIn, data)
        if errors := complaint.semantic_errors():
            raise Problem(422, "The request is not valid.", errors=errors)
        correlation_id = _correlation_id(request)
        try:
            async with pool_getter().acquire(timeout=5) as conn:
                accepted = await accept_complaint(
                    conn,
                    tenant=tenant,
                    complaint=complaint,
                    idempotency_key=idempotency_key,
                    fingerprint=request_fingerprint(data),
                    first_response_hours=settings.provisional_first_response_hours,
                    correlation_id=correlation_id,
                )
        except IdempotencyConflict:
            raise Problem(
                409, "This Idempotency-Key was already used with a different body."
            ) from None
        if not accepted.replayed:
            metrics.complaints_received.labels(complaint.channel.value).inc()
        return JSONResponse(accepted.to_json(), status_code=202)

    @router.get("/complaints/{ticket_no}", summary="A complaint as this tenant sees it now")
    async def get_complaint(
        ticket_no: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        tenant = await tenant_of(authorization)
        pool = pool_getter()
        row = await repository.get_complaint(pool, tenant.id, ticket_no)
        if row is None:
            raise Problem(404, "No such complaint.")
        timeline = await repository.get_timeline(pool, row["id"])
        resolutions = await repository.get_resolutions(pool, row["id"])
        return {
            **complaint_summary(row),
            "resolutions": [
                {
                    "id": str(r["resolution_id"]),
                    "kind": r["kind"],
                    "amount": str(r["amount"]) if r["amount"] is not None else None,
                    "currency": r["currency"],
                    "status": r["status"],
                    "recorded_at": _iso(r["recorded_at"]),
                }
                for r in resolutions
            ],
            "timeline": [
                {"at": _iso(t["at"]), "status": t["status"], "detail": t["detail"]}
                for t in timeline
            ],
        }

    @router.get("/complaints", summary="This tenant's complaints, newest first")
    async def list_complaints(
        authorization: Annotated[str | None, Header()] = None,
        customer_id: Annotated[str | None, Query(max_length=128)] = None,
        status: Annotated[Status | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> dict[str, Any]:
        tenant = await tenant_of(authorization)
        rows = await repository.list_complaints(
            pool_getter(),
            tenant.id,
            customer_id=customer_id,
            status=status.value if status else None,
            before=decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1]["received_at"], page[-1]["id"]) if len(rows) > limit else None
        )
        return {"items": [complaint_summary(r) for r in page], "next_cursor": next_cursor}

    return router


def _correlation_id(request: Request) -> uuid.UUID:
    header = request.headers.get("x-correlation-id")
    if header:
        try:
            return uuid.UUID(header)
        except ValueError:
            pass
    return uuid.uuid4()
