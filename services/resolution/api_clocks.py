"""The legal extension route: an approver extends a cn case's final-answer deadline.

No `from __future__ import annotations` here: FastAPI resolves the handlers' annotations,
and the dependency alias built inside build_clock_router must be a real object.
"""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Protocol

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from services.resolution import clock_store, clocks
from services.resolution.unit_of_work import ResolutionUnitOfWork
from shared.event_payloads import ComplaintClockExtended
from shared.events import new_event
from shared.http_bodies import parse_model, read_json_body
from shared.problems import PROBLEM_JSON, Problem

PRODUCER = "resolution"


class AgentLike(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def tenant_id(self) -> uuid.UUID: ...
    @property
    def approver(self) -> bool: ...


class ExtendIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "Merchant records requested from the bank"}]},
    )

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


class ClockOut(BaseModel):
    name: str
    round: int
    kind: str
    state: str
    due_at: str
    started_at: str
    paused_at: str | None
    remaining_s: float | None
    met_at: str | None
    breached_at: str | None
    new_estimate: str | None
    extensions: int


class ExtendOut(BaseModel):
    ticket_no: str
    clock: ClockOut
    previous_due_at: str
    due_at: str
    days: int
    approved_by: str
    reason: str


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {}}}


async def extend_legal_final(
    conn: asyncpg.Connection,
    agent: AgentLike,
    ticket_no: str,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    """The command behind the route: its own transaction on `conn`; Problem on refusal."""
    async with conn.transaction():
        case = await conn.fetchrow(
            "SELECT complaint_id, tenant_id, ticket_no, status, jurisdiction, received_at "
            "FROM cases WHERE ticket_no = $1 AND tenant_id = $2 FOR UPDATE",
            ticket_no,
            agent.tenant_id,
        )
        if case is None:
            raise Problem(404, "No such case.")  # the same words for a missing or foreign case
        if not agent.approver:
            raise Problem(403, "Only an agent with the approver role may extend a legal deadline.")
        try:
            done = await clock_store.extend_legal_final(
                conn,
                case["complaint_id"],
                case["jurisdiction"],
                case["received_at"],
                agent.id,
                reason,
                now,
            )
        except clocks.ExtensionRefused as refused:
            raise Problem(409, f"The deadline cannot be extended: {refused.reason}.") from None
        ext = done.extension
        await conn.execute(
            "INSERT INTO case_history (complaint_id, at, status, actor, note) "
            "VALUES ($1, $2, $3, $4, $5)",
            case["complaint_id"],
            now,
            case["status"],
            str(agent.id),
            f"Legal final-answer deadline extended to {ext.days} days: {reason}",
        )
        # The notice reaches the customer: an agent action the customer sees.
        await clock_store.agent_responded(conn, case["complaint_id"], now)
        uow = ResolutionUnitOfWork(conn)
        uow.emit(
            new_event(
                "complaint.clock_extended",
                producer=PRODUCER,
                tenant_id=case["tenant_id"],
                complaint_id=case["complaint_id"],
                ticket_no=case["ticket_no"],
                correlation_id=uuid.uuid4(),
                occurred_at=now,
                payload=ComplaintClockExtended(
                    clock=clocks.ClockName.LEGAL_FINAL.value,
                    previous_due_at=ext.previous_due_at,
                    due_at=ext.due_at,
                    approved_by=str(agent.id),
                    reason=reason,
                    clocks=await clock_store.views(conn, case["complaint_id"]),
                ),
            )
        )
        await uow.flush()
    return {
        "ticket_no": case["ticket_no"],
        "clock": done.clock,
        "previous_due_at": ext.previous_due_at.isoformat(),
        "due_at": ext.due_at.isoformat(),
        "days": ext.days,
        "approved_by": str(agent.id),
        "reason": reason,
    }


def build_clock_router(
    pool_getter: Callable[[], asyncpg.Pool],
    agent_dependency: Callable[..., Any],
    clock: Callable[[], datetime],
    max_body_bytes: int = 64 * 1024,
) -> APIRouter:
    router = APIRouter(tags=["clocks"])
    AgentDep = Annotated[AgentLike, Depends(agent_dependency)]

    @router.post(
        "/v1/cases/{ticket_no}/clocks/legal_final/extend",
        response_model=ExtendOut,
        summary="Extend a cn case's legal final-answer deadline (15 -> 30 -> 60 days)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ExtendIn"},
                        "examples": {
                            "merchant_records": {
                                "summary": "Waiting for the merchant's records",
                                "value": {"reason": "The merchant's settlement records are due."},
                            }
                        },
                    }
                },
            }
        },
        description=(
            "Only for jurisdiction `cn`, only by an agent with the approver role. Each call "
            "takes the next step of the ladder, counted from receipt; the customer is told "
            "through `complaint.clock_extended`."
        ),
        responses={
            400: _problem("The body is not valid JSON (or not UTF-8)."),
            413: _problem("The body is too large."),
            415: _problem("The body is not application/json."),
            401: _problem("No or an unknown agent token."),
            403: _problem("The agent does not hold the approver role."),
            404: _problem("No such case for this agent's tenant."),
            409: _problem(
                "Not a cn case, already at 60 days, the deadline already met or passed.",
            ),
            422: _problem("The body is not valid."),
            503: _problem("The database is unreachable for now; retry (Retry-After)."),
        },
    )
    async def extend(
        request: Request,
        agent: AgentDep,
        ticket_no: Annotated[str, Path(min_length=1, max_length=64)],
    ) -> dict[str, Any]:
        # Read by hand as every other agent route does: 415, 413, 400, then 422.
        body = parse_model(ExtendIn, await read_json_body(request, max_body_bytes))
        async with pool_getter().acquire() as conn:
            return await extend_legal_final(conn, agent, ticket_no, body.reason, clock())

    return router
