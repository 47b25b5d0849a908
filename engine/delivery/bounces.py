"""Bounces of SMTP mail (`lifecycle bounces`, and the daemon each tick): one pass over the bounce
mailbox, each bounce recorded on the send it answers as a provider-neutral event.

An API provider reports bounces through its webhook; over SMTP they come back as mail to the
envelope sender (`bounces.address`, engine/senders/verp.py). Each message is read (engine/delivery/dsn.py)
and its send found by, in this order: the VERP address it was sent to (signed, so a forged one is
ignored), the `X-Lifecycle-Send-Id` of the message it returns when that send went to the failed
address, or the last send to the failed address. The events go through `record_events`, as a
webhook's do: the send is marked bounced, a hard bounce suppresses the address, and a bounce already
recorded (the same message read twice) is recorded once.

Each message is recorded in a transaction of its own and then moved out of the folder it was read
from (engine/delivery/mailboxes.py). One that is not a bounce or cannot be read fails alone: it is
logged and moved to the error folder. A database error stops the pass with the message left where
it was, for the next pass."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select

from engine.config.settings import Config
from engine.delivery.dsn import Bounce, Failure, Unreadable, read_bounce
from engine.delivery.events import EventType, ProviderEvent, record_events
from engine.delivery.mailboxes import Mailbox, Stored, open_mailboxes
from engine.mail.message import one_line
from engine.senders.verp import read_verp
from engine.store.tables import Customer, Send, table_of

log = logging.getLogger("lifecycle.bounces")
SEND = table_of(Send)
CUSTOMER = table_of(Customer)


@dataclass(frozen=True)
class SentMessage:
    """The send a bounce answers."""

    id: int
    to_email: str
    campaign: str
    step: int


@dataclass(frozen=True)
class Found:
    """One bounce found, as `lifecycle bounces` lists it."""

    kind: str
    email: str
    send: SentMessage | None

    def __str__(self) -> str:
        where = f"send {self.send.id} ({self.send.campaign} step {self.send.step})" if self.send else "no send found"
        return f"{self.kind}: {self.email}: {where}"


@dataclass
class BouncePass:
    """What one pass found, for the command's output and the daemon's log."""

    error_folder: str
    read: int = 0
    found: list[Found] = field(default_factory=list)
    recorded: int = 0  # bounces newly recorded on sends
    suppressed: int = 0  # addresses newly suppressed
    delays: int = 0  # delay warnings: the message is still being tried, nothing is recorded
    forged: int = 0  # VERP addresses whose signature is wrong, ignored
    rejected: list[str] = field(default_factory=list)  # why each message moved to the error folder

    def lines(self) -> list[str]:
        """Each bounce found, each message moved to the error folder and why, then the counts."""
        moved = [f"moved to {self.error_folder}: {why}" for why in self.rejected]
        return [str(found) for found in self.found] + moved + [self.summary()]

    def summary(self) -> str:
        hard = sum(f.kind.startswith("hard") for f in self.found)
        parts = [
            f"{self.read} message{'s' if self.read != 1 else ''} read",
            f"{len(self.found)} bounced ({hard} hard, {len(self.found) - hard} soft)",
            f"{self.recorded} recorded on sends",
            f"{self.suppressed} address{'es' if self.suppressed != 1 else ''} suppressed",
        ]
        if self.delays:
            parts.append(f"{self.delays} delay warning{'s' if self.delays != 1 else ''}")
        if self.forged:
            parts.append(f"{self.forged} forged VERP address{'es' if self.forged != 1 else ''} ignored")
        if self.rejected:
            parts.append(f"{len(self.rejected)} moved to {self.error_folder}")
        return "bounces: " + ", ".join(parts)

    def as_log(self) -> dict[str, int]:
        return {
            "read": self.read,
            "bounced": len(self.found),
            "recorded": self.recorded,
            "suppressed": self.suppressed,
            "delays": self.delays,
            "forged": self.forged,
            "rejected": len(self.rejected),
        }


def reads_bounces(config: Config) -> bool:
    return config.bounces is not None and (config.bounces.imap is not None or config.bounces.maildir is not None)


def process_bounces(config: Config, engine: Engine, now: datetime) -> BouncePass:
    """One pass over every configured bounce mailbox."""
    boxes = open_mailboxes(config)  # raises when none is configured
    assert config.bounces is not None
    config.secret_keys()  # VERP addresses are checked with it: a missing secret fails before any message is read
    result = BouncePass(config.bounces.error_folder)
    for box in boxes:
        with box:
            for message in box.messages():
                result.read += 1
                process_message(config, engine, box, message, now, result)
    return result


def process_message(
    config: Config, engine: Engine, box: Mailbox, message: Stored, now: datetime, result: BouncePass
) -> None:
    try:
        bounce = read_bounce(message.raw)
    except Unreadable as exc:
        _reject(box, message, result, f"cannot be read as a bounce: {exc}")
        return
    if not bounce.is_bounce:
        _reject(box, message, result, "not a bounce")
        return
    if not bounce.failures:
        result.delays += 1
    else:
        with engine.begin() as connection:
            events, found = events_of(config, connection, bounce, now, result)
            recorded, suppressed = record_events(connection, events)
        result.found.extend(found)
        result.recorded += recorded
        result.suppressed += suppressed
    box.done(message)


def events_of(
    config: Config, connection: Connection, bounce: Bounce, now: datetime, result: BouncePass
) -> tuple[list[ProviderEvent], list[Found]]:
    """The bounce as events: one for the send its VERP address names, or else one a failed address."""
    at = bounce.at if bounce.at is not None and bounce.at <= now else now
    for address in bounce.addressed_to:
        verp = read_verp(config, address)
        if verp is None:
            continue
        send_id, signed = verp
        if not signed:
            result.forged += 1
            log.warning("forged VERP address ignored", extra={"address": address, "bounce": bounce.key})
            continue
        send = _send(connection, send_id)
        if send is None:  # a test send (id 0) or one no longer stored: the bounce is about no send
            return _by_address(bounce, at, lambda failure: None)
        failure = next((f for f in bounce.failures if f.hard), bounce.failures[0])
        return [_event(bounce, failure, send.to_email, send.id, at)], [Found(failure.kind, send.to_email, send)]
    return _by_address(
        bounce,
        at,
        lambda failure: (
            _returned_send(connection, bounce.original_send_id, failure.recipient)
            or _last_send_to(connection, failure.recipient, now)
        ),
    )


def _by_address(
    bounce: Bounce, at: datetime, send_of: Callable[[Failure], SentMessage | None]
) -> tuple[list[ProviderEvent], list[Found]]:
    """One event a failed address, about the send `send_of` finds for it (if any)."""
    events, found = [], []
    for failure in bounce.failures:
        send = send_of(failure)
        events.append(_event(bounce, failure, failure.recipient, send.id if send else None, at))
        found.append(Found(failure.kind, failure.recipient, send))
    return events, found


def _event(bounce: Bounce, failure: Failure, email: str, send_id: int | None, at: datetime) -> ProviderEvent:
    digest = hashlib.sha256(f"{bounce.key}\n{failure.recipient}".encode()).hexdigest()
    return ProviderEvent(
        type=EventType.BOUNCED,
        provider_kind=failure.kind,
        send_id=send_id,
        provider_event_id=f"bounce:{digest}",
        at=at,
        email=email,
        hard=failure.hard,
    )


SEND_FIELDS = (SEND.c.id, SEND.c.to_email, SEND.c.campaign, SEND.c.step)


def _send(connection: Connection, send_id: int) -> SentMessage | None:
    return _first(connection, select(*SEND_FIELDS).where(SEND.c.id == send_id, SEND.c.sent_at.is_not(None)))


def _returned_send(connection: Connection, send_id: int | None, recipient: str) -> SentMessage | None:
    """The send the returned message names, if it went to this address: the header alone is not trusted."""
    send = _send(connection, send_id) if send_id is not None else None
    return send if send is not None and (send.to_email or "").lower() == recipient else None


def _last_send_to(connection: Connection, email: str, now: datetime) -> SentMessage | None:
    """The last send that went to this address before now (customer's email index, then their sends by time)."""
    query = (
        select(*SEND_FIELDS)
        .join(CUSTOMER, CUSTOMER.c.id == SEND.c.customer_id)
        .where(CUSTOMER.c.email == email, SEND.c.to_email == email, SEND.c.sent_at <= now)
        .order_by(SEND.c.sent_at.desc(), SEND.c.id.desc())
        .limit(1)
    )
    return _first(connection, query)


def _first(connection: Connection, query: Select[Any]) -> SentMessage | None:
    row = connection.execute(query).first()
    return SentMessage(*row) if row is not None else None


def _reject(box: Mailbox, message: Stored, result: BouncePass, why: str) -> None:
    subject = BytesHeaderParser().parsebytes(message.raw).get("Subject")
    about = f"message {message.key} of {box.name}" + (f" (Subject: {one_line(str(subject))})" if subject else "")
    log.warning("message moved to the error folder: %s", why, extra={"mail": about})
    result.rejected.append(f"{about}: {why}")
    box.reject(message)
