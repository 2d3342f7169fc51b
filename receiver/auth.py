"""Bearer-token authentication of ingest routes (``RELAY_INGEST_TOKENS``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

UNAUTHENTICATED: object = object()


def tenant_for(header: str | None, tokens: Mapping[str, str | None]) -> str | object | None:
    """The tenant of the request's token; ``UNAUTHENTICATED`` when it has no valid token.

    Every configured token is compared, in constant time, so that timing tells nothing about
    which one nearly matched.
    """
    if not tokens:
        return None
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return UNAUTHENTICATED
    candidate = presented.strip().encode()
    result: str | object | None = UNAUTHENTICATED
    for token, tenant in tokens.items():
        if hmac.compare_digest(candidate, token.encode()):
            result = tenant
    return result
