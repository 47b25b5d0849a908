"""The RFC 5322 message every sender emits (interfaces.md, "What an email looks like").

The bytes are written directly rather than through `email.message.EmailMessage`: its header
policies and content managers cost about 2 ms a message, a hundred times the Jinja render.
What is written is plain and fixed: a multipart/alternative of a text and an HTML part, UTF-8,
each quoted-printable or base64 (whichever is shorter); header values folded onto one line, and
RFC 2047-encoded only when they are not ASCII (or too long). tests/test_rendering.py parses the
bytes back with the standard library to show they say what was meant.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from typing import NamedTuple

from engine.config.settings import Config
from engine.mail.rendering import RenderedEmail

CRLF = "\r\n"
# A boundary beginning "=_" can occur in neither a quoted-printable nor a base64 body.
BOUNDARY_PREFIX = "=_lifecycle_"
MAX_LINE = 998  # RFC 5322: a longer header line must be folded
FOLD_AT = 78  # RFC 5322: header lines should be folded at 78 characters where they can be
QP_LINE = 76  # RFC 2045: quoted-printable lines, the "=" of a soft line break included
HIGH_BYTES = bytes(range(128, 256))
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass
class OutgoingEmail:
    """A rendered message ready for a sender, with the fields providers want separately."""

    send_id: int
    campaign: str
    to: str
    from_email: str
    from_name: str | None
    subject: str
    html: str
    text: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    to_name: str | None = None


def one_line(value: str) -> str:
    """No raw newline or control character from data reaches a header: CR, LF and other breaks
    fold to a space, and so do NUL, ESC, DEL and the C1 controls (which a terminal or a mail client
    may act on)."""
    value = str(value)
    if value.isprintable() and "  " not in value and value[:1] != " " != value[-1:]:
        return value  # no control character, no break, no space to fold: most values, as they are
    return " ".join(CONTROL.sub(" ", value).split())


def fold(line: str) -> str:
    """A header line folded (CRLF before a space) wherever it would pass 78 characters, never
    between the field's name and its first word; a run without a space stays whole, so a line
    only stays long where it cannot be folded."""
    if len(line) <= FOLD_AT:
        return line
    name, first, *words = line.split(" ")
    lines, current = [], f"{name} {first}"
    for word in words:
        if len(current) + 1 + len(word) > FOLD_AT:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return CRLF.join(lines)


def fits(lines: str) -> bool:
    return len(lines) <= MAX_LINE or all(len(line) <= MAX_LINE for line in lines.split(CRLF))


def encoded_words(value: str, name: str = "") -> str:
    """RFC 2047 encoded words (UTF-8 in base64) for a header value, one a line, each line within
    78 characters (the first also holds the field's `name`); a character is never split between
    two words. Written here: the standard library's Header takes 50 µs for a name in Arabic."""
    words, start, used = [], 0, 0
    room = word_bytes(FOLD_AT - len(f"{name}: ") if name else FOLD_AT)
    for i, char in enumerate(value):
        size = len(char.encode())
        if used + size > room and i > start:
            words.append(value[start:i])
            start, used, room = i, 0, word_bytes(FOLD_AT - 1)  # the next line begins with a space
        used += size
    words.append(value[start:])
    return (CRLF + " ").join(f"=?utf-8?b?{base64.b64encode(word.encode()).decode('ascii')}?=" for word in words)


def word_bytes(line: int) -> int:
    """The most UTF-8 bytes one encoded word holds on a line of `line` characters (RFC 2047: a word
    is at most 75 characters, 12 of them its frame)."""
    return (min(line, 75) - len("=?utf-8?b??=")) // 4 * 3


@lru_cache(maxsize=1024)
def header(name: str, value: str) -> str:
    """One header field, folded at 78 characters where there is a space to fold at; encoded words
    (which can be split anywhere) when the value is not ASCII or a run of it passes 998. Made once
    for each value: most of a campaign's headers (and a newsletter's subject) are the same in every
    email."""
    value = one_line(value)
    if value.isascii():
        line = fold(f"{name}: {value}")
        if fits(line):
            return line
    return f"{name}: {encoded_words(value, name)}"


def date_header(now: datetime) -> str:
    """The Date header, formatted once for the messages of one second (it costs as much as the
    rest of the headers); the offset is in the key, as equal instants in two zones compare equal."""
    return _date_header(now.replace(microsecond=0), now.utcoffset())


@lru_cache(maxsize=8)
def _date_header(second: datetime, offset: timedelta | None) -> str:
    return f"Date: {format_datetime(second)}"


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox(name: str | None, address: str) -> str:
    """`"Name" <address>` on one line, for the providers' APIs that take it as a field: the name
    quoted, or an encoded word when it is not ASCII."""
    name, address = one_line(name or ""), one_line(address)
    if not name:
        return address
    shown = quoted(name) if name.isascii() else encoded_words(name)
    return f"{shown} <{address}>"


@lru_cache(maxsize=1024)
def address_header(name: str, display: str | None, address: str) -> str:
    """`Name: "Display" <address>`: the display name quoted, or as encoded words when it is not
    ASCII or too long to fold, the address on a line of its own when it would pass 78."""
    display, address = one_line(display or ""), one_line(address)
    if not display:
        return f"{name}: {address}"
    if display.isascii():
        line = fold(f"{name}: {quoted(display)} <{address}>")
        if fits(line):
            return line
    line = f"{name}: {encoded_words(display, name)}"
    last = line.rpartition(CRLF)[2]
    return f"{line}{' ' if len(last) + len(address) + 3 <= FOLD_AT else CRLF + ' '}<{address}>"


class Piece(NamedTuple):
    """A piece of a text part, encoded: UTF-8 with CRLF lines, and as quoted-printable."""

    data: bytes
    high: int  # bytes that are not ASCII
    quoted: bytes


@lru_cache(maxsize=8192)
def encoded(piece: str) -> Piece:
    """A template's constant pieces come back in every email, and a first name in many: each is
    encoded once (the room is for the links, which come once each)."""
    text = str(piece)  # Jinja's escaped pieces are Markup, whose replace() escapes what it is given
    data = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", CRLF).encode("utf-8")
    quoted = binascii.b2a_qp(data, istext=True)
    if b"\n" not in data:  # with no line break to copy, b2a_qp ends its soft line breaks with a bare LF
        quoted = quoted.replace(b"=\n", b"=\r\n")
    head, newline, last = quoted.rpartition(b"\r\n")
    if len(last) >= QP_LINE:  # the "=" that joins it to the next piece would make it 77
        cut = QP_LINE - 1
        cut -= 1 if last[cut - 1] == ord("=") else 2 if last[cut - 2] == ord("=") else 0  # not inside "=XX"
        quoted = head + newline + last[:cut] + b"=\r\n" + last[cut:]
    return Piece(data, len(data) - len(data.translate(None, HIGH_BYTES)), quoted)


def body_part(subtype: str, pieces: Sequence[str]) -> bytes:
    """A text/* part in UTF-8: quoted-printable when mostly ASCII (English, HTML markup), else
    base64 (Arabic text), whichever is shorter. Quoted-printable pieces are joined by soft line
    breaks, so the pieces Jinja renders can be encoded separately."""
    parts = list(map(encoded, filter(None, pieces)))
    data, high, quoted = zip(*parts, strict=True) if parts else ((), (), ())
    if sum(high) * 6 < sum(map(len, data)):  # a high byte takes 3 characters in quoted-printable; base64 adds a third
        encoding, payload = b"quoted-printable", b"=\r\n".join(quoted)
    else:
        encoding, payload = b"base64", base64.encodebytes(b"".join(data)).replace(b"\n", b"\r\n")
    return b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: %s\r\n\r\n%s' % (
        subtype.encode(),
        encoding,
        payload,
    )


def build_email(
    config: Config,
    *,
    send_id: int,
    campaign: str,
    marketing: bool,
    to: str,
    to_name: str | None,
    rendered: RenderedEmail,
    unsubscribe_url: str | None,
    now: datetime,
) -> OutgoingEmail:
    """`now` is the message's Date: the tick passes the wall clock, not its `--now`, since the
    date is when the message leaves, whatever day the tick is replaying."""
    domain = config.from_.email.rpartition("@")[2] or "localhost"
    message_id = make_msgid(idstring=f"send{send_id}", domain=domain)
    headers = {"X-Lifecycle-Campaign": campaign, "X-Lifecycle-Send-Id": str(send_id)}
    if config.reply_to:
        headers["Reply-To"] = config.reply_to
    if marketing:
        # RFC 2919 names the list (mail clients and filters group by it); Gmail's Feedback-ID
        # (campaign:stream:sender) lets its postmaster tools report complaints per campaign.
        headers["List-Id"] = f"<{campaign}.{domain}>"
        headers["Feedback-ID"] = f"{campaign}:marketing:{domain}"
        if unsubscribe_url:
            headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    else:
        headers["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation or out-of-office replies
    boundary = BOUNDARY_PREFIX + secrets.token_hex(12)
    head = [
        address_header("From", config.from_.name, config.from_.email),
        address_header("To", to_name, to),
        header("Subject", rendered.subject),
        date_header(now),
        f"Message-ID: {message_id}",
        *(header(name, value) for name, value in headers.items()),
        "MIME-Version: 1.0",
        fold(f'Content-Type: multipart/alternative; boundary="{boundary}"'),
        "",
    ]
    separator = f"--{boundary}".encode()
    raw = [
        CRLF.join(head).encode("utf-8"),
        separator,
        body_part("plain", rendered.text_pieces or [rendered.text]),
        separator,
        body_part("html", rendered.html_pieces or [rendered.html]),
        separator + b"--",
        b"",
    ]
    return OutgoingEmail(
        send_id=send_id,
        campaign=campaign,
        to=one_line(to),
        from_email=config.from_.email,
        from_name=config.from_.name,
        subject=one_line(rendered.subject),
        html=rendered.html,
        text=rendered.text,
        message_id=message_id,
        headers=headers,
        raw=b"\r\n".join(raw),
        to_name=one_line(to_name) if to_name else None,
    )
