"""notifier planning and texts for the resolution service's events of issue 10: agent
messages, requests for information, legal extensions, approvals and reversals."""

from __future__ import annotations

import uuid
from typing import Any

from services.notifier.messages import render
from services.notifier.planning import plan
from shared.events import TypedEnvelope, new_event

AGENT_ID = str(uuid.uuid4())
TICKET = "WC-20261123-000001"


def _event(event_type: str, **payload: object) -> TypedEnvelope[Any]:
    return new_event(
        event_type,
        producer="resolution",
        tenant_id=uuid.uuid4(),
        complaint_id=uuid.uuid4(),
        ticket_no=TICKET,
        correlation_id=uuid.uuid4(),
        payload=payload,
    ).typed()


def _message(text: str, *, request_information: bool) -> TypedEnvelope[Any]:
    return _event(
        "complaint.agent_message",
        message_id=str(uuid.uuid4()),
        text=text,
        request_information=request_information,
        agent_id=AGENT_ID,
    )


def test_an_agent_message_is_delivered_with_its_text_and_without_the_agent() -> None:
    [note] = plan(_message("We have asked the merchant.", request_information=False))
    assert note.type == "complaint.agent_message"
    assert note.template == "complaint.agent_message"
    assert note.data == {"text": "We have asked the merchant.", "request_information": False}
    assert AGENT_ID not in repr(note)

    data = {"ticket_no": TICKET, **note.data}
    zh = render(note.template, "zh-CN", data)
    en = render(note.template, "en", data)
    assert zh == f"客服就工单 {TICKET} 给您留言：We have asked the merchant."
    assert (
        en == f"A message from our support team about ticket {TICKET}: We have asked the merchant."
    )


def test_a_request_for_information_asks_the_customer_to_reply() -> None:
    [note] = plan(_message("请提供银行对账单。", request_information=True))
    assert note.type == "complaint.agent_message"  # one type: data says it asks
    assert note.data == {"text": "请提供银行对账单。", "request_information": True}
    data = {"ticket_no": TICKET, **note.data}
    assert render(note.template, "zh-CN", data) == (
        f"处理工单 {TICKET} 需要您补充信息：请提供银行对账单。 请在应用内回复。"
    )
    assert "Please reply in the app." in render(note.template, "en", data)
    # An agent's braces are text, not template fields.
    odd = render(note.template, "en", {"ticket_no": TICKET, "text": "{ticket_no} {x}"})
    assert "{ticket_no} {x}" in odd


def test_awaiting_customer_brings_no_second_notice() -> None:
    # The request for information above already told the customer; the status change
    # resolution emits with it must not say it again.
    assert (
        plan(
            _event(
                "complaint.status_changed",
                status="awaiting_customer",
                previous_status="in_progress",
                actor=AGENT_ID,
            )
        )
        == []
    )


def test_a_legal_extension_is_notified_with_the_new_due_date() -> None:
    [note] = plan(
        _event(
            "complaint.clock_extended",
            clock="legal_final",
            previous_due_at="2026-12-08T02:00:00+00:00",
            due_at="2026-12-23T02:00:00+00:00",
            approved_by=AGENT_ID,
            reason="Waiting for the merchant's records.",
        )
    )
    assert (note.type, note.template) == ("complaint.clock_extended", "complaint.clock_extended")
    assert note.data == {
        "clock": "legal_final",
        "previous_due_at": "2026-12-08T02:00:00+00:00",
        "due_at": "2026-12-23T02:00:00+00:00",
    }
    data = {"ticket_no": TICKET, **note.data}
    zh = render(note.template, "zh-CN", data)
    en = render(note.template, "en", data)
    assert "2026-12-23 10:00（北京时间）" in zh and "2026-12-08 10:00（北京时间）" in zh
    assert "法定处理期限" in zh
    assert en == (
        f"As the rules allow, the regulatory final answer deadline for ticket {TICKET} has "
        "been extended from 2026-12-08 02:00 UTC to 2026-12-23 02:00 UTC."
    )


def test_pending_waits_and_its_approval_is_sent_as_resolution_recorded() -> None:
    resolution_id = str(uuid.uuid4())
    fields = {
        "resolution_id": resolution_id,
        "kind": "refund",
        "amount": "900.00",
        "currency": "CNY",
        "decided_by": AGENT_ID,
    }
    assert plan(_event("resolution.recorded", status="pending_approval", **fields)) == []
    [note] = plan(_event("resolution.approved", status="approved", approved_by=AGENT_ID, **fields))
    assert note.type == "complaint.resolution_recorded"
    assert note.data == {
        "resolution_id": resolution_id,
        "kind": "refund",
        "amount": "900.00",
        "currency": "CNY",
        "refund_working_days": {"min": 3, "max": 7},
    }
    assert AGENT_ID not in repr(note)


def test_a_compensation_names_its_type_and_a_reversal_what_it_reverses() -> None:
    [coupon] = plan(
        _event(
            "resolution.recorded",
            resolution_id=str(uuid.uuid4()),
            kind="compensation",
            amount="10.00",
            currency="CNY",
            compensation_type="coupon",
            status="recorded",
        )
    )
    assert coupon.data["compensation_type"] == "coupon"
    data = {"ticket_no": TICKET, **coupon.data}
    assert render(coupon.template, "zh-CN", data).endswith("补偿（优惠券），金额 ¥10.00。")
    assert render(coupon.template, "en", data).endswith("compensation (coupon) of CN¥10.00.")

    reversed_id = str(uuid.uuid4())
    [reversal] = plan(
        _event(
            "resolution.recorded",
            resolution_id=str(uuid.uuid4()),
            kind="reversal",
            amount="10.00",
            currency="CNY",
            reverses=reversed_id,
            status="recorded",
        )
    )
    assert reversal.data["reverses"] == reversed_id
    assert "a correction of an earlier outcome" in render(
        reversal.template, "en", {"ticket_no": TICKET, **reversal.data}
    )


def test_an_assignment_is_not_news_for_the_customer() -> None:
    assert plan(_event("case.assigned", agent_id=AGENT_ID, assigned_by=AGENT_ID)) == []


def test_the_existing_notices_are_unchanged() -> None:
    refund = plan(
        _event(
            "resolution.recorded",
            resolution_id=str(uuid.uuid4()),
            kind="refund",
            amount="86.50",
            currency="CNY",
            status="recorded",
        )
    )
    assert set(refund[0].data) == {
        "resolution_id",
        "kind",
        "amount",
        "currency",
        "refund_working_days",
    }
    data = {"ticket_no": TICKET, **refund[0].data}
    assert render("complaint.resolution_recorded", "zh-CN", data) == (
        f"工单 {TICKET} 的处理结果：退款，金额 ¥86.50。"
        "款项预计在 3 至 7 个工作日内退回您的原支付账户。"
    )
    breached = plan(
        _event(
            "complaint.sla_breached",
            clock="resolution",
            due_at="2026-11-26T02:00:00+00:00",
            new_estimate="2026-11-27T02:00:00+00:00",
            priority="P2",
        )
    )
    assert [n.type for n in breached] == ["complaint.sla_breached"]
    assert "2026-11-27 02:00 UTC" in render(
        "complaint.sla_breached", "en", {"ticket_no": TICKET, **breached[0].data}
    )
