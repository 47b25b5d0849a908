"""A bounce message read: who failed, whether for good, and what it says about the send it answers.

flufl.bounce (GNU Mailman's bounce detectors) finds the failed recipients in delivery status
notifications (RFC 3464) and in the common formats that are not (Exim, qmail, Yahoo, Microsoft and
more), and tells failures from delay warnings. It does not say whether the address itself is bad:
that comes from the recipient's enhanced status code (RFC 3463), the DSN's `Status` field or, in a
bounce of plain text, the first code of its text.

Hard means the address will not recover (no such mailbox or domain: it is suppressed); a message
that failed for good for another reason (a full mailbox, a block or a spam verdict, a message too
large, a queue that expired) is soft, and so is every 4.x.x. A failure without any code is hard,
as flufl.bounce calls it permanent."""

from __future__ import annotations

import email
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from flufl.bounce import all_failures

# RFC 3463 enhanced status codes: class.subject.detail (not a piece of an IP address or version).
STATUS = re.compile(r"(?<![\w.])([245])\.([0-9]{1,3})\.([0-9]{1,3})(?!\.?[0-9])")
# Where a bounce of plain text starts quoting the message it returns: codes after it are not its own.
QUOTED_COPY = re.compile(
    r"^-{2,}.*(?:copy of the message|original message|below this line)", re.IGNORECASE | re.MULTILINE
)
# Failed for good, but not because of the address: the mailbox is full (5.2.2), the sender's own
# address is refused (5.1.7, 5.1.8), the queue expired (5.4.7); the mail system (5.3.x), the
# content (5.6.x) and security or policy (5.7.x: blocks, spam verdicts, DMARC).
NOT_THE_ADDRESS = {"2.2", "1.7", "1.8", "4.7"}
NOT_THE_ADDRESS_SUBJECTS = {"3", "6", "7"}
# Where the bounce says which address it was sent to: a VERP address names the send.
ADDRESSED_TO = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
# flufl.bounce logs every detector it runs, and a traceback when one fails on a message it never saw
# the like of: `read_bounce` reports that failure itself, once, as Unreadable.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

SEND_ID_HEADER = re.compile(r"^X-Lifecycle-Send-Id:[ \t]*([0-9]{1,18})[ \t]*$", re.IGNORECASE | re.MULTILINE)


class Unreadable(ValueError):
    """The message cannot be read as a bounce at all."""


@dataclass(frozen=True)
class Failure:
    """One recipient the bounce says failed for good, with its status code when it gives one."""

    recipient: str
    status: str | None
    hard: bool

    @property
    def kind(self) -> str:
        """What the send's delivery record says (Delivery.kind), like `hard bounce 5.1.1`."""
        return f"{'hard' if self.hard else 'soft'} bounce" + (f" {self.status}" if self.status else "")


@dataclass(frozen=True)
class Bounce:
    """What one message in the bounce mailbox says."""

    key: str  # the same for copies of one bounce: its Message-ID, or a digest of its bytes without one
    at: datetime | None  # its Date, when usable
    addressed_to: tuple[str, ...]  # the addresses it was sent to: VERP ones name the send
    original_send_id: int | None  # X-Lifecycle-Send-Id of the message it returns, if it quotes it
    failures: tuple[Failure, ...]
    delayed: tuple[str, ...]  # recipients of a delay warning: still being tried, not bounced

    @property
    def is_bounce(self) -> bool:
        return bool(self.failures or self.delayed)


def is_hard(status: str) -> bool:
    klass, subject, detail = status.split(".")
    if klass != "5":
        return False
    return subject not in NOT_THE_ADDRESS_SUBJECTS and f"{subject}.{detail}" not in NOT_THE_ADDRESS


def read_bounce(raw: bytes) -> Bounce:
    """The message as a bounce; raises Unreadable when the detectors cannot make sense of it."""
    message = email.message_from_bytes(raw)
    try:
        temporary, permanent = all_failures(message)
        statuses = dsn_statuses(message)
        text = own_text(message)
        returned = returned_headers(message)
    except Exception as exc:  # a detector meeting a shape it never saw: this message fails alone
        raise Unreadable(f"{type(exc).__name__}: {exc}") from exc
    in_text = STATUS.search(QUOTED_COPY.split(text, maxsplit=1)[0])
    failures = []
    for recipient in sorted(_addresses(permanent)):
        status = statuses.get(recipient) or (in_text.group(0) if in_text else None)
        failures.append(Failure(recipient, status, is_hard(status) if status else True))
    sent_id = SEND_ID_HEADER.search(returned or text)
    return Bounce(
        key=(message.get("Message-ID") or "").strip() or hashlib.sha256(raw).hexdigest(),
        at=_date(message.get("Date")),
        addressed_to=tuple(
            dict.fromkeys(a for _, a in getaddresses([str(v) for h in ADDRESSED_TO for v in message.get_all(h, [])]))
        ),
        original_send_id=int(sent_id.group(1)) if sent_id else None,
        failures=tuple(failures),
        delayed=tuple(sorted(_addresses(temporary) - _addresses(permanent))),
    )


def dsn_statuses(message: Message) -> dict[str, str]:
    """Each recipient's Status in the message's delivery-status parts, by original and final recipient."""
    statuses: dict[str, str] = {}
    for part in own_parts(message):
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            status = STATUS.search(str(block.get("Status", "")))
            if status is None:
                continue
            for field in ("Original-Recipient", "Final-Recipient", "X-Actual-Recipient"):
                _, _, address = str(block.get(field, "")).partition(";")
                if address.strip():
                    statuses.setdefault(_normal(address), status.group(0))
    return statuses


def own_parts(message: Message) -> Iterator[Message]:
    """The bounce's own parts, not those of the message it returns."""
    yield message
    if message.get_content_maintype() == "multipart" and message.is_multipart():
        for part in message.get_payload():
            if isinstance(part, Message):
                yield from own_parts(part)


def own_text(message: Message) -> str:
    """The text the bounce itself writes (the returned message is left out, except when quoted inline)."""
    texts = []
    for part in own_parts(message):
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(texts)


def returned_headers(message: Message) -> str:
    """The header of the message the bounce returns (message/rfc822 or text/rfc822-headers), or ''."""
    for part in own_parts(message):
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        original = part.get_payload(0) if kind == "message/rfc822" and part.is_multipart() else None
        if isinstance(original, Message):
            return "\n".join(f"{name}: {value}" for name, value in original.items())
    return ""


def _addresses(found: frozenset[bytes]) -> set[str]:
    return {_normal(address.decode("ascii", "replace")) for address in found}


def _normal(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


def _date(value: str | None) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment is not None and moment.tzinfo is not None else None
