"""The contract's closed vocabularies as the OpenAPI documents show them (CONTRACT
sections 3 and 5): complaint categories, in triage's precedence order, and channels.

The services keep their own copies (triage's rules, intake's `Channel`, resolution's
queue filter); tests/unit/test_openapi_documents.py checks they all agree with these.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

CATEGORIES: tuple[str, ...] = (
    "fraud",
    "duplicate_charge",
    "account_frozen",
    "transfer_delay",
    "top_up_withdrawal",
    "refund",
    "privacy",
    "fees",
    "payment_failure",
    "account_access",
    "terms_marketing",
    "app_usability",
    "customer_service",
    "other",
)
CHANNELS: tuple[str, ...] = (
    "app",
    "web",
    "phone",
    "email",
    "chat",
    "social_media",
    "regulator",
    "consumer_association",
)

CATEGORY_DESCRIPTION = (
    "Triage's category; when several apply, the first of this list wins: " + ", ".join(CATEGORIES)
)
CATEGORY_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(CATEGORIES)}
CHANNEL_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(CHANNELS)}

# A str on the wire, documented as the enum.
Category = Annotated[str, WithJsonSchema(CATEGORY_SCHEMA)]
ChannelName = Annotated[str, WithJsonSchema(CHANNEL_SCHEMA)]
