"""The tenant-facing HTTP API (CONTRACT section 3).

No `from __future__ import annotations` here: FastAPI resolves the handlers' annotations,
and the dependency aliases built inside build_router must be real objects.
"""

import base64
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from services.intake import api_docs as docs
from services.intake import followups, repository
from services.intake.accept import IdempotencyConflict, TicketNumbers, accept_complaint
from services.intake.auth import TenantAuthenticator
from services.intake.domain import (
    ComplaintIn,
    FeedbackIn,
    FeedbackNotAccepted,
    MessageIn,
    Status,
    is_ticket_no,
    nul_errors,
    request_fingerprint,
    valid_idempotency_key,
)
from services.intake.repository import Tenant
from services.intake.settings import IntakeSettings
from shared.http_bodies import FastJSONResponse, read_json_body
from shared.http_bodies import parse_model as shared_parse_model
from shared.metrics import ServiceMetrics
from shared.problems import Problem
from shared.ratelimit import TokenBuckets

MAX_PAGE = 100
ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_model(model: type[ModelT], data: Any) -> ModelT:
    """The shared parse, then what PostgreSQL cannot store: a string holding U+0000."""
    parsed = shared_parse_model(model, data)
    if errors := nul_errors(data):
        raise Problem(422, "The request is not valid.", errors=errors)
    return parsed


def check_idempotency_key(key: str | None, *, required: bool) -> str | None:
    if key is None and not required:
        return None
    if key is None or not valid_idempotency_key(key):
        raise Problem(
            400,
            "The Idempotency-Key header must be 1-128 visible ASCII characters"
            + (" and is required." if required else "."),
            errors=[{"field": "Idempotency-Key", "message": "1-128 visible ASCII characters"}],
        )
    return key


def encode_cursor(received_at: datetime, complaint_id: uuid.UUID) -> str:
    raw = f"{received_at.isoformat()}|{complaint_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, complaint_id = raw.split("|")
        position = datetime.fromisoformat(at)
        # Naive or out-of-range (a forged cursor) must fail here, not in the database.
        position = position.replace(tzinfo=position.tzinfo or UTC).astimezone(UTC)
        return position, uuid.UUID(complaint_id)
    except (ValueError, OverflowError):
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
        "amount": _money(row["amount"]),
        "currency": row["currency"],
        "transaction_ref": row["transaction_ref"],
        "merchant": row["merchant"],
        "received_at": _iso(row["received_at"]),
        "first_response_due": _iso(row["first_response_due"]),
        "resolution_due": _iso(row["resolution_due"]),
        "updated_at": _iso(row["updated_at"]),
        "outcome": row["outcome"],
        "company_response": row["company_response"],
        "links": {"self": f"/v1/complaints/{row['ticket_no']}"},
    }


def complaint_view(row: asyncpg.Record) -> dict[str, Any]:
    """The summary plus resolutions, clocks and timeline (rows of repository.get_complaint)."""
    return {
        **complaint_summary(row),
        "resolutions": [resolution_view(r) for r in row["resolutions"]],
        "clocks": list(row["clocks"] or []),  # stored as the wallet app is shown them
        "timeline": [
            {"at": _iso(at), "status": status, "detail": detail}
            for at, status, detail in row["timeline"]
        ],
    }


def resolution_view(r: tuple[Any, ...]) -> dict[str, Any]:
    """One ledger entry as the customer's app shows it: its status says whether it is in
    effect (pending_approval never is), `reversed` whether a reversal undid it. Who
    decided is "agent" or "auto", never an agent's id."""
    (
        resolution_id,
        kind,
        amount,
        currency,
        status,
        recorded_at,
        compensation_type,
        reverses,
        decided_by,
        approved_at,
        reversed_by,
    ) = r
    return {
        "id": str(resolution_id),
        "kind": kind,
        "amount": _money(amount),
        "currency": currency,
        "compensation_type": compensation_type,
        "status": status,
        "decided_by": decided_by,
        "recorded_at": _iso(recorded_at),
        "approved_at": _iso(approved_at),
        "reverses": str(reverses) if reverses else None,
        "reversed": reversed_by is not None,
        "reversed_by": str(reversed_by) if reversed_by else None,
    }


def _money(amount: Any) -> str | None:
    return str(amount) if amount is not None else None


def _accepted(body: dict[str, Any], *, replayed: bool) -> FastJSONResponse:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return FastJSONResponse(body, status_code=202, headers=headers)


_NOT_FOUND = Problem(404, "No such complaint.")
_TICKET_PATH = Path(
    description="The ticket number from the 202 answer to POST /v1/complaints",
    examples=[docs.TICKET_EXAMPLE],
)
_FOLLOWUP_ERRORS = docs.problem_responses(400, 401, 404, 409, 413, 415, 422, 429, 503)


def build_router(
    settings: IntakeSettings,
    pool_getter: Callable[[], asyncpg.Pool],
    authenticator_getter: Callable[[], TenantAuthenticator],
    metrics: ServiceMetrics,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["complaints"])
    buckets = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
    tickets = TicketNumbers()
    bearer = HTTPBearer(auto_error=False, description="The tenant's API key: `Bearer wck_...`")

    async def authorized_tenant(authorization: str | None) -> Tenant:
        """The tenant whose API key `authorization` carries (else 401), within its rate
        (else 429)."""
        tenant = await authenticator_getter().authenticate(authorization)
        wait_s = buckets.take(str(tenant.id))
        if wait_s > 0:
            raise Problem(
                429,
                "Rate limit exceeded for this tenant.",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return tenant

    async def current_tenant(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Tenant:
        # A dependency, so it runs before parameter validation: 401 comes first.
        return await authorized_tenant(f"Bearer {credentials.credentials}" if credentials else None)

    TenantDep = Annotated[Tenant, Depends(current_tenant)]
    IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)]

    @router.post(
        "/complaints",
        status_code=202,
        response_model=docs.ComplaintAccepted,
        response_description="Accepted: stored, and on its way to triage",
        summary="File a complaint",
        description=(
            "Stores the complaint and answers at once with its ticket number; triage, "
            "the case and the customer's notifications follow asynchronously. Unknown "
            "fields are rejected; `amount` is a decimal string, never a number."
        ),
        responses={
            202: {"headers": docs.REPLAYED_HEADER},
            **docs.problem_responses(400, 401, 409, 413, 415, 422, 429, 503),
        },
        openapi_extra={
            **docs.request_body(ComplaintIn, docs.COMPLAINT_EXAMPLES),
            **docs.idempotency_header(required=True),
            **docs.BEARER_SECURITY,
        },
    )
    async def create_complaint(request: Request) -> FastJSONResponse:
        # The route every complaint takes, served plainly (app.py: serve_plainly): it
        # takes the Request alone and reads its headers itself, with no dependencies.
        tenant = await authorized_tenant(request.headers.get("authorization"))
        key = check_idempotency_key(request.headers.get("idempotency-key"), required=True)
        assert key is not None
        data = await read_json_body(request, settings.max_body_bytes)
        complaint = parse_model(ComplaintIn, data)
        if errors := complaint.semantic_errors():
            raise Problem(422, "The request is not valid.", errors=errors)
        correlation_id = _correlation_id(request)
        try:
            # What is logged meanwhile names the request's correlation id (its events do).
            with structlog.contextvars.bound_contextvars(correlation_id=str(correlation_id)):
                async with pool_getter().acquire(timeout=5) as conn:
                    accepted = await accept_complaint(
                        conn,
                        tenant=tenant,
                        complaint=complaint,
                        idempotency_key=key,
                        fingerprint=request_fingerprint(data),
                        first_response_hours=settings.provisional_first_response_hours,
                        correlation_id=correlation_id,
                        tickets=tickets,
                    )
        except IdempotencyConflict:
            raise Problem(
                409, "This Idempotency-Key was already used with a different body."
            ) from None
        if not accepted.replayed:
            metrics.complaints_received.labels(complaint.channel.value).inc()
        return _accepted(accepted.to_json(), replayed=accepted.replayed)

    @router.get(
        "/complaints/{ticket_no}",
        response_model=docs.ComplaintView,
        response_description="The complaint, its resolutions, clocks and timeline",
        summary="A complaint as this tenant sees it now",
        description=(
            "Status, category, priority, due times, resolutions (a pending one is not "
            "paid; a reversal marks the entry it undoes), the outcome once resolved, the "
            "case's clocks and the timeline, oldest first. Kept current from the other "
            "services' events: no other service is called. No agent is named. Another "
            "tenant's ticket is a 404, exactly like a missing one."
        ),
        responses=docs.problem_responses(401, 404, 429, 503),
    )
    async def get_complaint(
        tenant: TenantDep, ticket_no: Annotated[str, _TICKET_PATH]
    ) -> FastJSONResponse:
        if not is_ticket_no(ticket_no):
            raise _NOT_FOUND
        row = await repository.get_complaint(pool_getter(), tenant.id, ticket_no)
        if row is None:
            raise _NOT_FOUND
        return FastJSONResponse(complaint_view(row))

    @router.get(
        "/complaints",
        response_model=docs.ComplaintPage,
        response_description="One page of complaints",
        summary="This tenant's complaints, newest first",
        description="Filter by customer and status; follow `next_cursor` for the next page.",
        responses=docs.problem_responses(401, 422, 429, 503),
    )
    async def list_complaints(
        tenant: TenantDep,
        # An empty value means "no filter" (`?customer_id=&status=` from a URL template).
        customer_id: Annotated[
            str | None,
            Query(
                max_length=128,
                pattern=r"^[^\x00-\x1f\x7f]*$",
                description="Only this customer's complaints",
            ),
        ] = None,
        status: Annotated[
            Status | Literal[""] | None, Query(description="Only complaints in this status")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=512, description="`next_cursor` of the previous page")
        ] = None,
    ) -> FastJSONResponse:
        rows = await repository.list_complaints(
            pool_getter(),
            tenant.id,
            customer_id=customer_id or None,
            status=status or None,
            before=decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
        )
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1]["received_at"], page[-1]["id"]) if len(rows) > limit else None
        )
        return FastJSONResponse(
            {"items": [complaint_summary(r) for r in page], "next_cursor": next_cursor}
        )

    async def followup_request(
        request: Request,
        tenant: Tenant,
        ticket_no: str,
        idempotency_key: str | None,
        model: type[ModelT],
    ) -> tuple[followups.Request, ModelT]:
        """Checks shared by messages and feedback, in the order of POST /v1/complaints;
        the ticket last, so a malformed one answers like any other missing ticket."""
        key = check_idempotency_key(idempotency_key, required=False)
        data = await read_json_body(request, settings.max_body_bytes)
        body = parse_model(model, data)
        if not is_ticket_no(ticket_no):
            raise _NOT_FOUND
        followup = followups.Request(
            tenant=tenant,
            ticket_no=ticket_no,
            idempotency_key=key,
            fingerprint=request_fingerprint(data, scope=ticket_no),
            correlation_id=_correlation_id(request),
        )
        return followup, body

    @router.post(
        "/complaints/{ticket_no}/messages",
        status_code=202,
        response_model=docs.MessageAccepted,
        response_description="Accepted: recorded and passed on",
        summary="Add a customer follow-up message",
        description=(
            "Recorded on the complaint's timeline and passed to the case handler as "
            "`complaint.message_added`. The complaint's status is the case handler's to "
            "change: a message does not change it here."
        ),
        responses={202: {"headers": docs.REPLAYED_HEADER}, **_FOLLOWUP_ERRORS},
        openapi_extra={
            **docs.request_body(MessageIn, docs.MESSAGE_EXAMPLES),
            **docs.idempotency_header(required=False),
        },
    )
    async def add_message(
        request: Request,
        tenant: TenantDep,
        ticket_no: Annotated[str, _TICKET_PATH],
        idempotency_key: IdempotencyKey = None,
    ) -> FastJSONResponse:
        followup, message = await followup_request(
            request, tenant, ticket_no, idempotency_key, MessageIn
        )
        try:
            async with pool_getter().acquire(timeout=5) as conn:
                accepted = await followups.add_message(conn, followup, message)
        except followups.ComplaintNotFound:
            raise _NOT_FOUND from None
        except followups.IdempotencyKeyReused:
            raise _key_reused() from None
        return _accepted(accepted.to_json(), replayed=accepted.replayed)

    @router.post(
        "/complaints/{ticket_no}/feedback",
        status_code=202,
        response_model=docs.FeedbackAccepted,
        response_description="Accepted: recorded (and the complaint reopened for 1 or 2)",
        summary="Record the customer's satisfaction with the resolution",
        description=(
            "Accepted once the complaint is `resolved` or `closed` (409 before). A score "
            "of 1 or 2 reopens it: its status here becomes `reopened` and the case "
            "handler receives `complaint.feedback_received` with `reopen: true`."
        ),
        responses={202: {"headers": docs.REPLAYED_HEADER}, **_FOLLOWUP_ERRORS},
        openapi_extra={
            **docs.request_body(FeedbackIn, docs.FEEDBACK_EXAMPLES),
            **docs.idempotency_header(required=False),
        },
    )
    async def add_feedback(
        request: Request,
        tenant: TenantDep,
        ticket_no: Annotated[str, _TICKET_PATH],
        idempotency_key: IdempotencyKey = None,
    ) -> FastJSONResponse:
        followup, feedback = await followup_request(
            request, tenant, ticket_no, idempotency_key, FeedbackIn
        )
        try:
            async with pool_getter().acquire(timeout=5) as conn:
                accepted = await followups.add_feedback(conn, followup, feedback)
        except followups.ComplaintNotFound:
            raise _NOT_FOUND from None
        except followups.IdempotencyKeyReused:
            raise _key_reused() from None
        except FeedbackNotAccepted as exc:
            raise Problem(
                409,
                f"Feedback is accepted once the complaint is resolved or closed; it is {exc}.",
            ) from None
        return _accepted(accepted.to_json(), replayed=accepted.replayed)

    return router


def _key_reused() -> Problem:
    return Problem(409, "This Idempotency-Key was already used with a different body or ticket.")


def _correlation_id(request: Request) -> uuid.UUID:
    """The caller's `X-Correlation-Id` when it is a UUID, else a new one; it travels with
    the complaint's events (envelope and Kafka headers) to the webhook."""
    header = request.headers.get("x-correlation-id")
    if header:
        try:
            return uuid.UUID(header)
        except ValueError:
            pass
    return uuid.uuid4()
