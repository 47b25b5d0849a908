"""What every provider's webhook does with a post: refuse it unless the provider's check says it
is the provider's own (403), parse it into provider-neutral events (400 when it cannot be), record
them off the event loop and answer `{"recorded", "suppressed"}`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from engine.delivery.events import ProviderEvent, record_events
from engine.web.services import Services, services

# Is the post (headers, raw body) the provider's own?
Verify = Callable[[Services, Mapping[str, str], bytes], bool]
# The provider's post as neutral events; raises BadPost for a body the provider would never send.
Parse = Callable[[bytes], list[ProviderEvent]]


# A send id as a provider echoes it back: digits only, never more than a bigint holds.
SEND_ID = re.compile(r"[0-9]{1,18}")


def send_id_of(value: Any) -> int | None:
    """The send id the sender attached (a number, or a string of digits), or None for anything else."""
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    return int(text) if SEND_ID.fullmatch(text) else None


def unix_time(value: Any) -> datetime | None:
    """A unix timestamp (with or without a fraction) as an aware time, if it is a usable one."""
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class BadPost(ValueError):
    """A verified post whose body is not what the provider sends."""


def endpoint(provider: str, verify: Verify, parse: Parse) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def receive(request: Request) -> JSONResponse:
        s = services(request)
        body = await request.body()
        if not verify(s, request.headers, body):
            raise HTTPException(403, f"missing, invalid or stale {provider} signature")
        try:
            events = parse(body)
        except BadPost as exc:
            raise HTTPException(400, str(exc)) from None
        recorded, suppressed = await s.run(record_events, s.engine, events)
        return JSONResponse({"recorded": recorded, "suppressed": suppressed})

    return receive
