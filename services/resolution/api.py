"""The agent HTTP API (CONTRACT section 6): the work queue, the case, and the commands.

Every route takes the agent from its Bearer token and works inside the agent's tenant:
another tenant's case is the same 404 as a missing one, body for body. The POST
handlers read their bodies themselves (415, 413, 400, then 422), and the commands
(commands.py) do the rest in one transaction each.

No `from __future__ import annotations` here: FastAPI resolves the handlers' annotations,
and the dependency aliases built inside build_router must be real objects.
"""

import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from services.resolution import api_docs as docs
from services.resolution import commands, queries
from services.resolution.auth import AgentAuthenticator
from services.resolution.case import Status
from services.resolution.commands import Agent
from services.resolution.queries import CursorCodec, QueueFilters
from services.resolution.requests import (
    AssignIn,
    Category,
    MessageIn,
    Priority,
    RecategoriseIn,
    ResolutionIn,
    StatusIn,
)
from services.resolution.settings import ResolutionSettings
from shared import jsonutil
from shared.http_bodies import FastJSONResponse, parse_model, read_json_body
from shared.metrics import ServiceMetrics
from shared.problems import Problem

ModelT = TypeVar("ModelT", bound=BaseModel)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    ResolutionIn,
    StatusIn,
    MessageIn,
    AssignIn,
    RecategoriseIn,
)

_TICKET_NO = re.compile(r"^WC-\d{8}-\d{6,}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
# One body for both, so a missing case and another tenant's cannot be told apart.
CASE_NOT_FOUND = Problem(404, "No such case.")
RESOLUTION_NOT_FOUND = Problem(404, "No such resolution.")


# ------------------------------------------------------------------ request helpers


def check_idempotency_key(key: str | None) -> str:
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(
            400,
            "The Idempotency-Key header must be 1-128 visible ASCII characters and is required.",
            errors=[{"field": "Idempotency-Key", "message": "1-128 visible ASCII characters"}],
        )
    return key


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """sha256 of method, path and the canonical body: the same body whatever its key order
    or whitespace; the same key on another case or endpoint is a different request."""
    canonical = jsonutil.dumps_sorted(body)
    return hashlib.sha256(f"{method} {path}\n".encode() + canonical).hexdigest()


def is_ticket_no(value: str) -> bool:
    """A cheap 404 for what can never be a ticket (and no odd bytes reach the database)."""
    return bool(_TICKET_NO.fullmatch(value))


def _case_ticket(ticket_no: str) -> str:
    if not is_ticket_no(ticket_no):
        raise CASE_NOT_FOUND
    return ticket_no


def _resolution_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise RESOLUTION_NOT_FOUND from None


async def _case_command(call: Awaitable[Any], not_found: Problem = CASE_NOT_FOUND) -> Any:
    """A command on one case: its 404 (missing, or another tenant's) is always ours, so
    the two answers are the same body whatever the command's wording."""
    try:
        return await call
    except Problem as problem:
        if problem.status == 404:
            raise not_found from None
        raise


# ------------------------------------------------------------------ the routes

_TICKET_PATH = Path(
    description="The case's ticket number (the complaint's, from intake)",
    examples=[docs.TICKET_EXAMPLE],
)
_RESOLUTION_PATH = Path(
    description="The resolution's id (`id` of the 201 answer, or of a ledger entry)",
    examples=[docs.RESOLUTION_EXAMPLE],
)

AgentDependency = Callable[..., Awaitable[Agent]]


def agent_dependency(authenticator_getter: Callable[[], AgentAuthenticator]) -> AgentDependency:
    bearer = HTTPBearer(auto_error=False, description="The agent's token: `Bearer wca_...`")

    async def current_agent(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Agent:
        # A dependency, so it runs before parameter validation: 401 comes first.
        authorization = f"Bearer {credentials.credentials}" if credentials else None
        return await authenticator_getter().authenticate(authorization)

    return current_agent


def build_router(
    settings: ResolutionSettings,
    pool_getter: Callable[[], asyncpg.Pool],
    current_agent: AgentDependency,
    metrics: ServiceMetrics,
    clock: Callable[[], datetime],
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["cases"])
    cursors = CursorCodec(queries.cursor_key(settings.webhook_master_key))

    AgentDep = Annotated[Agent, Depends(current_agent)]
    IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)]
    Ticket = Annotated[str, _TICKET_PATH]

    # ---------------------------------------------------------------- reads

    @router.get(
        "/cases",
        response_model=docs.CasePage,
        response_description="One page of the work queue",
        summary="The work queue of this agent's tenant",
        description=(
            "Cases needing review first (triage was unsure), then by the most urgent due "
            "time of any running clock (cases with no running clock last), then by "
            "complaint id. Without `status`, the open cases (not `resolved` or `closed`). "
            "`assigned_to` takes an agent id, `me` or `none` (unassigned). An empty "
            "parameter means no filter. Follow `next_cursor` with the same filters."
        ),
        responses=docs.problem_responses(401, 422, 503),
    )
    async def work_queue(
        agent: AgentDep,
        status: Annotated[
            Status | Literal[""] | None, Query(description="Only cases in this status")
        ] = None,
        priority: Annotated[
            Priority | Literal[""] | None, Query(description="Only this priority")
        ] = None,
        category: Annotated[
            Category | Literal[""] | None, Query(description="Only this category")
        ] = None,
        breached: Annotated[
            bool | None, Query(description="true: only cases with a breached clock; false: none")
        ] = None,
        assigned_to: Annotated[
            str | None,
            Query(
                max_length=36,
                pattern=r"^(me|none|[0-9a-fA-F-]{32,36})?$",
                description="An agent id, `me` or `none`",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE, description="Page size")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=1024, description="`next_cursor` of the previous page")
        ] = None,
    ) -> FastJSONResponse:
        filters = QueueFilters(
            status=status or None,
            priority=priority or None,
            category=category or None,
            breached=breached,
            assigned_to=_assignee(assigned_to, agent),
        )
        scope = filters.scope(agent.tenant_id)
        after = cursors.decode(cursor, scope) if cursor else None
        items, position = await queries.work_queue(
            pool_getter(), agent.tenant_id, filters, limit=limit, after=after
        )
        next_cursor = cursors.encode(position, scope) if position else None
        return FastJSONResponse({"items": items, "next_cursor": next_cursor})

    @router.get(
        "/cases/{ticket_no}",
        response_model=docs.CaseView,
        response_description="The case with its history, clocks, ledger and messages",
        summary="One case, as an agent works it",
        description=(
            "The case fields, its history (oldest first), every clock with its due time and "
            "state, the ledger (append-only, with approval and reversal state; amounts are "
            "decimal strings), the duplicates linked to it, and the messages of the customer "
            "(with evidence) and of agents. Another tenant's ticket is a 404, exactly like a "
            "missing one."
        ),
        responses=docs.problem_responses(401, 404, 503),
    )
    async def get_case(agent: AgentDep, ticket_no: Ticket) -> FastJSONResponse:
        _case_ticket(ticket_no)
        async with pool_getter().acquire(timeout=5) as conn:
            case = await queries.case_detail(conn, agent.tenant_id, ticket_no)
        if case is None:
            raise CASE_NOT_FOUND
        return FastJSONResponse(case)

    # ---------------------------------------------------------------- the money

    @router.post(
        "/cases/{ticket_no}/resolutions",
        status_code=201,
        response_model=docs.ResolutionOut,
        response_description="Recorded (or waiting for an approver)",
        summary="Record a refund, compensation, explanation, rejection or reversal",
        description=(
            "Appends to the case's ledger; never changes an earlier entry (a correction is "
            "a `reversal` naming the entry). Money is a decimal string in the disputed "
            "currency; a refund never takes the refunds of the case above the disputed "
            "amount (422), whatever other agents record at the same moment. Above the "
            "approval threshold it waits in `pending_approval`. `Idempotency-Key` is "
            "required: the same key and body answer the same, another body is a 409."
        ),
        responses={
            201: {"headers": docs.REPLAYED_HEADER},
            **docs.problem_responses(400, 401, 404, 409, 413, 415, 422, 503),
        },
        openapi_extra={
            **docs.request_body("ResolutionIn", docs.RESOLUTION_EXAMPLES),
            **docs.idempotency_header(),
        },
    )
    async def record_resolution(
        request: Request,
        agent: AgentDep,
        ticket_no: Ticket,
        idempotency_key: IdempotencyKey = None,
    ) -> FastJSONResponse:
        key = check_idempotency_key(idempotency_key)
        data = await read_json_body(request, settings.max_body_bytes)
        body = parse_model(ResolutionIn, data)
        _case_ticket(ticket_no)
        fingerprint = request_fingerprint("POST", request.url.path, data)
        async with pool_getter().acquire(timeout=5) as conn:
            # The command counts resolutions_recorded_total once committed, never on replay.
            status_code, answer, replayed = await _case_command(
                commands.record_resolution(
                    conn,
                    settings,
                    agent,
                    ticket_no,
                    body,
                    key,
                    fingerprint,
                    clock(),
                    metrics=metrics,
                )
            )
        return _answer(answer, status_code, replayed=replayed)

    @router.post(
        "/resolutions/{resolution_id}/approve",
        response_model=docs.ResolutionOut,
        response_description="Approved: the refund may now be executed",
        summary="Approve a resolution waiting in pending_approval",
        description=(
            "By an agent with the approver role who did not record it (403 otherwise); "
            "409 when it is not waiting (already approved, reversed, or never needed "
            "approval). No body. With an `Idempotency-Key`, a replay answers the same; "
            "without one, a second approval is a 409."
        ),
        responses={
            200: {"headers": docs.REPLAYED_HEADER},
            **docs.problem_responses(400, 401, 403, 404, 409, 503),
        },
        openapi_extra=docs.idempotency_header(required=False),
    )
    async def approve_resolution(
        request: Request,
        agent: AgentDep,
        resolution_id: Annotated[str, _RESOLUTION_PATH],
        idempotency_key: IdempotencyKey = None,
    ) -> FastJSONResponse:
        # Optional here: approving is taken once by itself (a second approval is a 409);
        # a key adds the same answer on a replay.
        key = check_idempotency_key(idempotency_key) if idempotency_key is not None else None
        entry_id = _resolution_id(resolution_id)
        fingerprint = request_fingerprint("POST", request.url.path, None)
        async with pool_getter().acquire(timeout=5) as conn:

            def approve() -> Awaitable[dict[str, Any]]:
                return commands.approve_resolution(conn, settings, agent, entry_id, clock())

            if key is None:
                answer, replayed = await _case_command(_fresh(approve()), RESOLUTION_NOT_FOUND)
            else:
                answer, replayed = await _case_command(
                    _idempotent(conn, agent, key, fingerprint, approve), RESOLUTION_NOT_FOUND
                )
        return _answer(answer, 200, replayed=replayed)

    # ---------------------------------------------------------------- the case

    @router.post(
        "/cases/{ticket_no}/status",
        response_model=docs.StatusOut,
        response_description="The status changed",
        summary="Move the case through its states",
        description=(
            "triaged, in_progress, awaiting_customer, escalated, resolved, closed, reopened. "
            "Resolving takes an `outcome` (monetary_relief, non_monetary_relief, "
            "explanation, no_relief). An impossible transition is a 409 naming the allowed "
            "ones."
        ),
        responses=docs.problem_responses(401, 404, 409, 413, 415, 400, 422, 503),
        openapi_extra=docs.request_body("StatusIn", docs.STATUS_EXAMPLES),
    )
    async def change_status(
        request: Request, agent: AgentDep, ticket_no: Ticket
    ) -> FastJSONResponse:
        body = parse_model(StatusIn, await read_json_body(request, settings.max_body_bytes))
        _case_ticket(ticket_no)
        async with pool_getter().acquire(timeout=5) as conn:
            answer = await _case_command(
                commands.change_status(conn, agent, ticket_no, body, clock())
            )
        return FastJSONResponse(answer)

    @router.post(
        "/cases/{ticket_no}/messages",
        status_code=201,
        response_model=docs.MessageOut,
        response_description="Recorded; the notifier delivers it to the customer",
        summary="Write to the customer, or ask them for information",
        description=(
            "A message to the customer, delivered by the notifier. With "
            "`request_information: true` the case goes `awaiting_customer` and its internal "
            "clocks pause until the customer answers (then it is back `in_progress`)."
        ),
        responses=docs.problem_responses(400, 401, 404, 409, 413, 415, 422, 503),
        openapi_extra=docs.request_body("MessageIn", docs.MESSAGE_EXAMPLES),
    )
    async def send_message(
        request: Request, agent: AgentDep, ticket_no: Ticket
    ) -> FastJSONResponse:
        body = parse_model(MessageIn, await read_json_body(request, settings.max_body_bytes))
        _case_ticket(ticket_no)
        async with pool_getter().acquire(timeout=5) as conn:
            answer = await _case_command(
                commands.send_message(conn, agent, ticket_no, body, clock())
            )
        return FastJSONResponse(answer, status_code=201)

    @router.post(
        "/cases/{ticket_no}/claim",
        response_model=docs.AssignmentOut,
        response_description="The case is this agent's",
        summary="Take the case",
        description="Assigns the case to the calling agent. No body.",
        responses=docs.problem_responses(401, 404, 409, 503),
    )
    async def claim(agent: AgentDep, ticket_no: Ticket) -> FastJSONResponse:
        _case_ticket(ticket_no)
        async with pool_getter().acquire(timeout=5) as conn:
            answer = await _case_command(commands.claim(conn, agent, ticket_no, clock()))
        return FastJSONResponse(answer)

    @router.post(
        "/cases/{ticket_no}/assign",
        response_model=docs.AssignmentOut,
        response_description="The case is assigned",
        summary="Assign the case to an agent of the same tenant",
        description=(
            "`agent_id` must be an agent of this tenant (422 otherwise: agents of other "
            "tenants are not revealed)."
        ),
        responses=docs.problem_responses(400, 401, 404, 409, 413, 415, 422, 503),
        openapi_extra=docs.request_body("AssignIn", docs.ASSIGN_EXAMPLES),
    )
    async def assign(request: Request, agent: AgentDep, ticket_no: Ticket) -> FastJSONResponse:
        body = parse_model(AssignIn, await read_json_body(request, settings.max_body_bytes))
        _case_ticket(ticket_no)
        async with pool_getter().acquire(timeout=5) as conn:
            answer = await _case_command(
                commands.assign(conn, agent, ticket_no, body.agent_id, clock())
            )
        return FastJSONResponse(answer)

    @router.post(
        "/cases/{ticket_no}/category",
        response_model=docs.RecategoriseOut,
        response_description="The case's category and priority now; out of the review queue",
        summary="Correct triage's category (and priority)",
        description=(
            "The agent's correction of triage's decision: the case takes `category` (one of "
            "the 14 of CONTRACT section 5) and, when given, `priority`; `needs_review` is "
            "cleared, the history notes it, and `complaint.recategorised` is published for "
            "triage to learn from. Confirming triage's values on a case waiting for review "
            "is recorded the same way. Asking for the values the case already has (no "
            "review pending) changes nothing and publishes nothing (`changed: false`). The "
            "clocks keep their due times. An optional `Idempotency-Key` replays the first "
            "answer."
        ),
        responses={
            200: {"headers": docs.REPLAYED_HEADER},
            **docs.problem_responses(400, 401, 404, 409, 413, 415, 422, 503),
        },
        openapi_extra={
            **docs.request_body("RecategoriseIn", docs.RECATEGORISE_EXAMPLES),
            **docs.idempotency_header(
                required=False,
                optional_because="the same correction again changes nothing anyway",
            ),
        },
    )
    async def recategorise(
        request: Request,
        agent: AgentDep,
        ticket_no: Ticket,
        idempotency_key: IdempotencyKey = None,
    ) -> FastJSONResponse:
        key = check_idempotency_key(idempotency_key) if idempotency_key is not None else None
        data = await read_json_body(request, settings.max_body_bytes)
        body = parse_model(RecategoriseIn, data)
        _case_ticket(ticket_no)
        async with pool_getter().acquire(timeout=5) as conn:

            def correct() -> Awaitable[dict[str, Any]]:
                return commands.recategorise(conn, agent, ticket_no, body, clock())

            if key is None:
                answer, replayed = await _case_command(_fresh(correct()))
            else:
                fingerprint = request_fingerprint("POST", request.url.path, data)
                answer, replayed = await _case_command(
                    _idempotent(conn, agent, key, fingerprint, correct)
                )
        return _answer(answer, 200, replayed=replayed)

    return router


def _assignee(value: str | None, agent: Agent) -> uuid.UUID | str | None:
    if not value:
        return None
    if value == "me":
        return agent.id
    if value == "none":
        return "none"
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Problem(
            422,
            "The request is not valid.",
            errors=[{"field": "assigned_to", "message": "an agent id, `me` or `none`"}],
        ) from None


def _answer(body: dict[str, Any], status_code: int, *, replayed: bool) -> FastJSONResponse:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return FastJSONResponse(body, status_code=status_code, headers=headers)


async def _fresh(command: Awaitable[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """A command without an Idempotency-Key: its answer, never a replay."""
    return await command, False


async def _idempotent(
    conn: asyncpg.Connection,
    agent: Agent,
    key: str,
    fingerprint: str,
    command: Callable[[], Awaitable[dict[str, Any]]],
) -> tuple[dict[str, Any], bool]:
    """Runs `command` once per (agent, key): a replay with the same fingerprint answers
    what the first call answered, another fingerprint is a 409. The command's own
    transaction nests in this one (a savepoint), so the answer and the key commit together;
    a refused command stores nothing and may be retried."""
    async with conn.transaction():
        # Two requests with one key at once: the second waits, then replays.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"idempotency|{agent.id}|{key}"
        )
        stored = await conn.fetchrow(
            "SELECT fingerprint, response FROM idempotency_keys WHERE agent_id = $1 AND key = $2",
            agent.id,
            key,
        )
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                raise KEY_REUSED
            return stored["response"], True
        answer = await command()
        await conn.execute(
            "INSERT INTO idempotency_keys (agent_id, key, fingerprint, status_code, response) "
            "VALUES ($1, $2, $3, 200, $4)",
            agent.id,
            key,
            fingerprint,
            answer,
        )
        return answer, False


KEY_REUSED = Problem(
    409, "This Idempotency-Key was already used with a different request (body or endpoint)."
)
