"""Bearer tokens (RFC 6750 / RFC 9725 style): parsed from the Authorization header, compared in
constant time, never logged."""

from __future__ import annotations

import hmac


def same_token(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authorized(header: str | None, expected: str | None) -> bool:
    if expected is None:
        return True
    token = bearer_token(header)
    return token is not None and same_token(token, expected)
