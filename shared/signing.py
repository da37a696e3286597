"""Secrets and signatures: API keys stored as hashes, webhook HMACs, constant-time checks."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_KEY_PREFIX = "wck"


@dataclass(frozen=True)
class IssuedApiKey:
    key_id: str
    secret_hash: bytes
    plaintext: str  # shown once to the operator, never stored


def issue_api_key() -> IssuedApiKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedApiKey(key_id, hash_secret(secret), f"{API_KEY_PREFIX}_{key_id}_{secret}")


def split_api_key(presented: str) -> tuple[str, str] | None:
    """('key_id', 'secret') of a well-formed key, else None."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str) -> bytes:
    # The secret is 256 random bits, so a fast hash is enough: no dictionary to guess from.
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def derive_webhook_secret(master_key: str, tenant_id: str) -> str:
    """The tenant's webhook signing secret, derived so it never has to travel on Kafka."""
    return hmac.new(
        master_key.encode(), f"webhook:{tenant_id}".encode(), hashlib.sha256
    ).hexdigest()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Complaints-Signature header value (CONTRACT section 7)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_webhook(
    secret: str, timestamp: int, body: bytes, signature: str, now: int, tolerance_s: int = 300
) -> bool:
    """What a receiver does: reject stale timestamps, compare in constant time."""
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), signature)
