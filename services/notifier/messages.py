"""Customer-facing texts in the customer's locale (zh-CN and en). Pure functions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

DEFAULT_LOCALE = "zh-CN"

CATEGORY_LABELS: Mapping[str, Mapping[str, str]] = {
    "fraud": {"zh-CN": "盗刷/诈骗", "en": "unauthorised transaction or scam"},
    "duplicate_charge": {"zh-CN": "重复扣款", "en": "duplicate charge"},
    "account_frozen": {"zh-CN": "账户冻结", "en": "frozen account"},
    "transfer_delay": {"zh-CN": "转账未到账", "en": "transfer not received"},
    "top_up_withdrawal": {"zh-CN": "充值/提现", "en": "top-up or withdrawal"},
    "refund": {"zh-CN": "退款", "en": "refund"},
    "privacy": {"zh-CN": "个人信息保护", "en": "privacy"},
    "fees": {"zh-CN": "费用", "en": "fees"},
    "payment_failure": {"zh-CN": "支付失败", "en": "failed payment"},
    "account_access": {"zh-CN": "登录/认证", "en": "account access"},
    "terms_marketing": {"zh-CN": "条款/营销活动", "en": "terms or promotions"},
    "app_usability": {"zh-CN": "应用使用问题", "en": "app usability"},
    "customer_service": {"zh-CN": "客户服务", "en": "customer service"},
    "other": {"zh-CN": "其他", "en": "other"},
}

RESOLUTION_LABELS: Mapping[str, Mapping[str, str]] = {
    "refund": {"zh-CN": "退款", "en": "a refund"},
    "compensation": {"zh-CN": "补偿", "en": "compensation"},
    "explanation": {"zh-CN": "答复说明", "en": "an explanation"},
    "rejection": {"zh-CN": "不予支持的答复", "en": "a decision not to uphold the complaint"},
}

# Due times are shown in the customer's clock, with the zone named.
_ZONES = {"zh-CN": (ZoneInfo("Asia/Shanghai"), "北京时间"), "en": (ZoneInfo("UTC"), "UTC")}

_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "complaint.acknowledged": {
        "zh-CN": "您的投诉已受理，工单号 {ticket_no}。我们将于 {first_response_due}前给您答复，"
        "预计 {resolution_due}前处理完毕。",
        "en": "We have received your complaint, ticket {ticket_no}. We will reply by "
        "{first_response_due} and expect to resolve it by {resolution_due}.",
    },
    "complaint.acknowledged.duplicate": {
        "zh-CN": "您的投诉已受理，工单号 {ticket_no}。该问题已在工单 {duplicate_of_ticket_no} "
        "中处理，我们将于 {first_response_due}前给您答复。",
        "en": "We have received your complaint, ticket {ticket_no}. The same issue is already "
        "being handled under ticket {duplicate_of_ticket_no}; we will reply by "
        "{first_response_due}.",
    },
    "complaint.triaged": {
        "zh-CN": "工单 {ticket_no} 已归类为「{category}」，优先级 {priority}，专人正在处理。",
        "en": "Ticket {ticket_no} is classified as {category} (priority {priority}) and "
        "is being handled.",
    },
    "complaint.resolution_recorded": {
        "zh-CN": "工单 {ticket_no} 的处理结果：{kind}{amount_text}。",
        "en": "Outcome of ticket {ticket_no}: {kind}{amount_text}.",
    },
    "complaint.resolved": {
        "zh-CN": "工单 {ticket_no} 已处理完毕。",
        "en": "Ticket {ticket_no} is resolved.",
    },
    "complaint.sla_breached": {
        "zh-CN": "很抱歉，工单 {ticket_no} 的处理超出了承诺时间，我们预计于 {new_estimate}前完成。",
        "en": "We are sorry: ticket {ticket_no} is taking longer than promised. "
        "We now expect to finish by {new_estimate}.",
    },
    "complaint.survey": {
        "zh-CN": "工单 {ticket_no} 已处理完毕，请为本次服务打分（1-5 分）。",
        "en": "Ticket {ticket_no} is resolved. Please rate our handling from 1 to 5.",
    },
}


def supported_locale(locale: str | None) -> str:
    if locale in _ZONES:
        return locale  # type: ignore[return-value]
    if locale and locale.lower().startswith("zh"):
        return "zh-CN"
    if locale and locale.lower().startswith("en"):
        return "en"
    return DEFAULT_LOCALE


def render(template: str, locale: str, data: Mapping[str, Any]) -> str:
    """The text of `template` ("complaint.triaged", ...) for the customer, in `locale`."""
    locale = supported_locale(locale)
    values = {key: _display(key, value, locale) for key, value in data.items()}
    values.setdefault("amount_text", _amount_text(data, locale))
    return _TEMPLATES[template][locale].format_map(_Blank(values))


def _display(key: str, value: Any, locale: str) -> str:
    if value is None:
        return ""
    if key.endswith("_due") or key == "new_estimate":
        return format_time(datetime.fromisoformat(str(value)), locale)
    if key == "category":
        return CATEGORY_LABELS.get(str(value), {}).get(locale, str(value))
    if key == "kind":
        return RESOLUTION_LABELS.get(str(value), {}).get(locale, str(value))
    return str(value)


def _amount_text(data: Mapping[str, Any], locale: str) -> str:
    if data.get("amount") is None:
        return ""
    amount = f"{data['amount']} {data.get('currency') or ''}".strip()
    return f"，金额 {amount}" if locale == "zh-CN" else f" of {amount}"


def format_time(at: datetime, locale: str) -> str:
    zone, zone_name = _ZONES[supported_locale(locale)]
    local = at.astimezone(zone)
    return (
        f"{local:%Y-%m-%d %H:%M}（{zone_name}）"
        if locale == "zh-CN"
        else (f"{local:%Y-%m-%d %H:%M} {zone_name}")
    )


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""
