"""What the customer reads: every notification planning emits, rendered from the template
files in every locale, with no variable missing; HTML escaped, text as written; amounts
and dates per locale and time zone; the fallback locale; the same bytes every time."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2 import meta

from services.notifier import messages, rendering
from services.notifier.planning import PlannedNotification, acknowledgement, plan
from services.notifier.refund_timing import RefundTimingSettings
from shared.event_payloads import ComplaintReceived
from shared.events import TypedEnvelope, new_event

TICKET = "WC-20261123-000042"
TENANT = uuid.uuid4()
COMPLAINT = uuid.uuid4()
AGENT = str(uuid.uuid4())
# Variables render() puts into every template's context itself.
CONTEXT_NAMES = {"ticket_no", "locale", "time_zone", "labels", "subject"}


def _event(event_type: str, **payload: object) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=TENANT,
        complaint_id=COMPLAINT,
        ticket_no=TICKET,
        correlation_id=uuid.uuid4(),
        payload=payload,
    ).typed()


def _clock(name: str, due_at: str, state: str = "running") -> dict[str, str]:
    return {"name": name, "due_at": due_at, "state": state}


def lifecycle() -> list[TypedEnvelope[Any]]:
    """One complaint's events from opening to reopening, as resolution sends them, plus
    the variants (duplicate, compensation, reversal, bare events without optional
    fields) that choose other templates or branches."""
    opened = {
        "status": "triaged",
        "previous_status": "received",
        "category": "duplicate_charge",
        "priority": "P2",
        "first_response_due": "2026-11-23T02:00:00+00:00",
        "resolution_due": "2026-11-26T02:00:00+00:00",
        "actor": "system",
    }
    money = {"amount": "86.50", "currency": "CNY", "status": "recorded"}
    return [
        _event("complaint.status_changed", reason="case_opened", **opened),
        _event(
            "complaint.status_changed",
            reason="duplicate_linked",
            duplicate_of_ticket_no="WC-20261120-000007",
            **opened,
        ),
        _event("complaint.status_changed", status="triaged", reason="case_opened"),
        _event("complaint.status_changed", status="triaged", reason="duplicate_linked"),
        _event(
            "complaint.agent_message",
            message_id=str(uuid.uuid4()),
            text="We have asked the merchant for the transaction record.",
            agent_id=AGENT,
        ),
        _event(
            "complaint.agent_message",
            message_id=str(uuid.uuid4()),
            text="请提供银行对账单。",
            request_information=True,
            agent_id=AGENT,
        ),
        _event("resolution.recorded", resolution_id=str(uuid.uuid4()), kind="refund", **money),
        _event(
            "resolution.recorded",
            resolution_id=str(uuid.uuid4()),
            kind="compensation",
            compensation_type="coupon",
            **money,
        ),
        _event(
            "resolution.recorded",
            resolution_id=str(uuid.uuid4()),
            kind="reversal",
            reverses=str(uuid.uuid4()),
            **money,
        ),
        _event("resolution.recorded", resolution_id=str(uuid.uuid4()), kind="explanation"),
        _event(
            "complaint.sla_breached",
            clock="resolution",
            due_at="2026-11-26T02:00:00+00:00",
            new_estimate="2026-11-27T02:00:00+00:00",
            priority="P2",
        ),
        _event("complaint.sla_breached", clock="first_response"),
        _event(
            "complaint.clock_extended",
            clock="legal_final",
            previous_due_at="2026-12-08T02:00:00+00:00",
            due_at="2026-12-23T02:00:00+00:00",
            approved_by=AGENT,
            reason="Waiting for the merchant's records.",
        ),
        _event(
            "complaint.status_changed",
            status="resolved",
            previous_status="in_progress",
            reason="agent",
            outcome="monetary_relief",
            actor=AGENT,
        ),
        _event("complaint.status_changed", status="resolved", reason="agent"),
        _event(
            "complaint.status_changed",
            status="reopened",
            previous_status="resolved",
            reason="customer_feedback",
            note="Customer rated the handling 1/5. Reopened.",
            actor="customer",
            clocks=[_clock("resolution", "2026-12-01T02:00:00+00:00")],
        ),
        _event("complaint.status_changed", status="reopened", reason="agent"),
    ]


REFUNDS = RefundTimingSettings(refund_working_days="3-7")


def planned() -> list[PlannedNotification]:
    """The acknowledgements (from complaint.received, with and without intake's promise),
    then every notification of the lifecycle."""
    received = {
        "customer": {"id": "u-1"},
        "channel": "app",
        "description": "charged twice",
        "received_at": "2026-11-23T00:00:00+00:00",
        "tenant": {"webhook_url": "https://tenant.example/hooks"},
    }
    promised = {**received, "first_response_due": "2026-11-24T00:00:00+00:00"}
    acks = [acknowledgement(ComplaintReceived.model_validate(r)) for r in (promised, received)]
    return acks + [n for event in lifecycle() for n in plan(event, refunds=REFUNDS)]


def _template_keys() -> set[str]:
    suffix = ".txt.j2"
    return {
        name.split("/", 1)[1].removesuffix(suffix)
        for name in rendering.TEMPLATES
        if name.endswith(suffix)
    }


def test_planning_emits_exactly_the_templates_there_are_files_for() -> None:
    emitted = {n.template for n in planned()}
    assert emitted == _template_keys()
    for locale in rendering.LOCALES:
        for key in emitted:
            for part in ("subject", "txt", "html"):
                assert f"{locale}/{key}.{part}.j2" in rendering.TEMPLATES


@pytest.mark.parametrize("locale", rendering.LOCALES)
def test_every_planned_notification_renders_in_every_locale(locale: str) -> None:
    for n in planned():
        out = rendering.render(n.template, locale, n.data, ticket_no=TICKET)
        assert TICKET in out.subject and "\n" not in out.subject
        assert TICKET in out.text
        assert out.html.startswith("<!DOCTYPE html>") and f'lang="{locale}"' in out.html
        assert "  " not in out.text and "None" not in out.text and "{" not in out.text


@pytest.mark.parametrize("locale", rendering.LOCALES)
def test_the_webhooks_text_alone_is_the_full_renderings_text(locale: str) -> None:
    for n in planned():
        for zone in (None, "Europe/Berlin"):
            full = rendering.render(n.template, locale, n.data, ticket_no=TICKET, time_zone=zone)
            text = rendering.render_text(
                n.template, locale, n.data, ticket_no=TICKET, time_zone=zone
            )
            assert text == full.text


def test_no_template_reads_a_variable_planning_never_gives() -> None:
    # StrictUndefined catches a missing variable only on the branch that runs; this reads
    # every branch: each name a template uses is render's own or a key planning emits.
    keys: dict[str, set[str]] = {}
    for n in planned():
        keys.setdefault(n.template, set()).update(n.data)
    env = rendering._ENV
    for name in rendering.TEMPLATES:
        template = name.split("/", 1)[1].rsplit(".", 2)[0]
        # The HTML frame (_base) reads render's own names only.
        allowed = CONTEXT_NAMES | (set() if "/_" in name else keys[template])
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
        used = meta.find_undeclared_variables(env.parse(source))
        assert used <= allowed, (name, used - allowed)


def test_a_missing_variable_is_an_error_not_a_blank() -> None:
    with pytest.raises(jinja2.UndefinedError):
        rendering.render("complaint.agent_message", "en", {}, ticket_no=TICKET)
    with pytest.raises(jinja2.UndefinedError):
        rendering.render("complaint.clock_extended", "zh-CN", {"clock": "x"}, ticket_no=TICKET)
    with pytest.raises(jinja2.TemplateNotFound):
        rendering.render("complaint.nothing", "en", {}, ticket_no=TICKET)


def test_html_is_escaped_and_the_text_keeps_the_agents_words() -> None:
    words = 'See <script>alert("x")</script> & {{ ticket_no }} {x}'
    out = rendering.render("complaint.agent_message", "en", {"text": words}, ticket_no=TICKET)
    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; {{ ticket_no }} {x}" in out.html
    assert out.text.endswith(f": {words}")  # the webhook message and e-mail text part
    assert "<script>" not in out.subject


@pytest.mark.parametrize(
    ("locale", "currency", "expected"),
    [
        ("zh-CN", "CNY", "¥86.50"),
        ("en", "CNY", "CN¥86.50"),
        ("en", "USD", "$86.50"),
        ("zh-CN", "USD", "US$86.50"),
        ("en", "USD", "$1,234,567.50"),
        ("en", "PTS", "100 PTS"),  # not a currency: a number and its unit
    ],
)
def test_amounts_are_written_per_locale_and_currency(
    locale: str, currency: str, expected: str
) -> None:
    amount = {"$1,234,567.50": "1234567.5", "100 PTS": "100"}.get(expected, "86.50")
    data = {"kind": "compensation", "amount": amount, "currency": currency}
    text = rendering.render("complaint.resolution_recorded", locale, data, ticket_no=TICKET).text
    assert expected in text


def test_a_refund_says_when_the_money_arrives() -> None:
    data = {"kind": "refund", "amount": "86.50", "currency": "CNY"}
    zh = rendering.render(
        "complaint.resolution_recorded",
        "zh-CN",
        {**data, "refund_working_days": {"min": 3, "max": 7}},
        ticket_no=TICKET,
    ).text
    en = rendering.render(
        "complaint.resolution_recorded",
        "en",
        {**data, "refund_working_days": {"min": 2, "max": 2}},
        ticket_no=TICKET,
    ).text
    assert zh == (
        f"工单 {TICKET} 的处理结果：退款，金额 ¥86.50。"
        "款项预计在 3 至 7 个工作日内退回您的原支付账户。"
    )
    assert en == (
        f"Outcome of ticket {TICKET}: a refund of CN¥86.50. "
        "The money should reach your account within 2 working days."
    )


def test_dates_are_in_the_customers_time_zone_when_known() -> None:
    data = {"first_response_due": "2026-11-23T02:00:00+00:00"}
    ack = "complaint.acknowledged"

    def text(locale: str, zone: str | None) -> str:
        return rendering.render(ack, locale, data, ticket_no=TICKET, time_zone=zone).text

    # Unknown zone: the locale's clock (Beijing for zh-CN, UTC for en).
    assert "2026-11-23 10:00（北京时间）" in text("zh-CN", None)
    assert "2026-11-23 02:00 UTC" in text("en", None)
    assert "2026-11-22 21:00 Eastern Standard Time" in text("en", "America/New_York")
    assert "2026-11-23 02:00（格林尼治标准时间）" in text("zh-CN", "Europe/London")
    assert "2026-11-23 10:00 China Standard Time" in text("en", "Asia/Shanghai")
    # A zone name that is not one: the locale's clock, never a failed delivery.
    assert text("en", "Mars/Olympus") == text("en", None)
    assert text("en", "../../etc") == text("en", None)


@pytest.mark.parametrize(
    ("locale", "fallback", "used"),
    [
        ("en", "zh-CN", "en"),
        ("en-GB", None, "en"),
        ("zh-TW", "en", "zh-CN"),
        ("zh_Hans_CN", None, "zh-CN"),
        ("fr", "en", "en"),  # the customer's is not ours: the tenant's
        ("fr", "en-US", "en"),
        (None, "en", "en"),
        ("fr", "de", "zh-CN"),  # neither: zh-CN
        (None, None, "zh-CN"),
        ("", "", "zh-CN"),
    ],
)
def test_the_locale_falls_back_to_the_tenants_then_zh_cn(
    locale: str | None, fallback: str | None, used: str
) -> None:
    assert rendering.supported_locale(locale, fallback) == used


def test_an_unsupported_locale_renders_in_zh_cn() -> None:
    data = {"text": "你好"}
    fr = rendering.render("complaint.agent_message", "fr", data, ticket_no=TICKET)
    zh = rendering.render("complaint.agent_message", "zh-CN", data, ticket_no=TICKET)
    assert fr == zh and 'lang="zh-CN"' in fr.html


def test_the_texts_the_other_suites_rely_on() -> None:
    data = {
        "first_response_due": "2026-11-23T02:00:00+00:00",
        "resolution_due": "2026-11-26T02:00:00+00:00",
    }
    en = rendering.render("complaint.acknowledged", "en", data, ticket_no=TICKET)
    zh = rendering.render("complaint.acknowledged", "zh-CN", data, ticket_no=TICKET)
    assert en.text == (
        f"We have received your complaint, ticket {TICKET}. We will reply by 2026-11-23 02:00 UTC."
    )
    triaged = rendering.render("complaint.triaged", "en", data, ticket_no=TICKET)
    assert triaged.text == (
        f"Ticket {TICKET} is being handled by our team. We will reply by "
        "2026-11-23 02:00 UTC and expect to resolve it by 2026-11-26 02:00 UTC."
    )
    assert f"工单号 {TICKET}" in zh.text and "北京时间" in zh.text
    # The first texts' interface still gives the same text (delivery.py's webhook body).
    assert messages.render("complaint.acknowledged", "en", {"ticket_no": TICKET, **data}) == (
        en.text
    )
    assert messages.supported_locale("fr", "en") == "en"


def test_outcomes_and_the_survey_read_as_words() -> None:
    resolved = rendering.render(
        "complaint.resolved", "en", {"outcome": "explanation"}, ticket_no=TICKET
    )
    assert resolved.text == f"Ticket {TICKET} is resolved: we have explained what happened."
    survey = {"scale": [1, 5], "feedback_path": f"/v1/complaints/{TICKET}/feedback"}
    en = rendering.render("complaint.survey", "en", survey, ticket_no=TICKET)
    zh = rendering.render("complaint.survey", "zh-CN", survey, ticket_no=TICKET)
    assert "rate us 1-5 in the app" in en.text
    assert "应用内" in zh.text and "1-5 分" in zh.text
    assert "/v1/" not in en.text + zh.text  # the endpoint is the app's, not the customer's


def test_a_subject_is_one_line_whatever_the_data() -> None:
    out = rendering.render(
        "complaint.triaged", "en", {"category": "other"}, ticket_no="WC-1\r\nBcc: x@example.com"
    )
    assert "\n" not in out.subject and "\r" not in out.subject


def test_the_same_inputs_give_the_same_bytes_in_any_process() -> None:
    script = (
        "import dataclasses, json, sys\n"
        "from services.notifier import rendering\n"
        "out = [dataclasses.asdict(rendering.render(t, l, d, ticket_no=n, time_zone=z))\n"
        "       for t, l, d, n, z in json.loads(sys.stdin.read())]\n"
        "print(json.dumps(out, ensure_ascii=False, sort_keys=True))\n"
    )
    cases = [
        [n.template, locale, n.data, TICKET, zone]
        for n in planned()
        for locale in rendering.LOCALES
        for zone in (None, "America/New_York")
    ]
    stdin = json.dumps(cases)
    root = Path(__file__).resolve().parents[2]
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    here = json.dumps(
        [
            dataclasses.asdict(rendering.render(t, loc, d, ticket_no=n, time_zone=z))
            for t, loc, d, n, z in cases
        ],
        ensure_ascii=False,
        sort_keys=True,
    )
    assert runs == {here + "\n"}
