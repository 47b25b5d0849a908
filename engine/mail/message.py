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
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from engine.config.settings import Config
from engine.mail.rendering import RenderedEmail

CRLF = "\r\n"
# A boundary beginning "=_" can occur in neither a quoted-printable nor a base64 body.
BOUNDARY_PREFIX = "=_lifecycle_"
MAX_LINE = 998  # RFC 5322: a longer header line must be folded
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
    return " ".join(CONTROL.sub(" ", str(value)).split())


def header(name: str, value: str) -> str:
    """One header field on one logical line; encoded words only where ASCII will not do."""
    value = one_line(value)
    if value.isascii() and len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}"
    encoded = Header(value, "us-ascii" if value.isascii() else "utf-8", header_name=name)
    return f"{name}: {encoded.encode(linesep=CRLF)}"


def mailbox(name: str | None, address: str) -> str:
    """`"Name" <address>`: the name quoted, or an encoded word when it is not ASCII."""
    name, address = one_line(name or ""), one_line(address)
    if not name:
        return address
    if name.isascii():
        shown = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        shown = Header(name, "utf-8").encode(linesep=CRLF)
    return f"{shown} <{address}>"


@dataclass(frozen=True)
class Piece:
    """A piece of a text part, encoded: UTF-8 with CRLF lines, and as quoted-printable."""

    data: bytes
    high: int  # bytes that are not ASCII
    quoted: bytes


@lru_cache(maxsize=4096)
def encoded(piece: str) -> Piece:
    """A template's constant pieces come back in every email: each is encoded once."""
    data = piece.replace("\r\n", "\n").replace("\r", "\n").replace("\n", CRLF).encode("utf-8")
    quoted = binascii.b2a_qp(data, istext=True)
    if b"\n" not in data:  # with no line break to copy, b2a_qp ends its soft line breaks with a bare LF
        quoted = quoted.replace(b"=\n", b"=\r\n")
    return Piece(data, len(data) - len(data.translate(None, HIGH_BYTES)), quoted)


def body_part(subtype: str, pieces: Sequence[str]) -> str:
    """A text/* part in UTF-8: quoted-printable when mostly ASCII (English, HTML markup), else
    base64 (Arabic text), whichever is shorter. Quoted-printable pieces are joined by soft line
    breaks, so the pieces Jinja renders can be encoded separately."""
    parts = [encoded(piece) for piece in pieces if piece]
    size, high = sum(len(p.data) for p in parts), sum(p.high for p in parts)
    if high * 6 < size:  # a high byte takes 3 characters in quoted-printable; base64 adds a third
        encoding, payload = "quoted-printable", b"=\r\n".join(p.quoted for p in parts)
    else:
        encoding, payload = "base64", base64.encodebytes(b"".join(p.data for p in parts)).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}" + payload.decode("ascii")
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
    domain = config.from_.email.rpartition("@")[2] or "localhost"
    message_id = make_msgid(idstring=f"send{send_id}", domain=domain)
    headers = {"X-Lifecycle-Campaign": campaign, "X-Lifecycle-Send-Id": str(send_id)}
    if config.reply_to:
        headers["Reply-To"] = config.reply_to
    if marketing and unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    boundary = BOUNDARY_PREFIX + secrets.token_hex(12)
    lines = [
        f"From: {mailbox(config.from_.name, config.from_.email)}",
        f"To: {mailbox(to_name, to)}",
        header("Subject", rendered.subject),
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id}",
        *(header(name, value) for name, value in headers.items()),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        body_part("plain", [rendered.text]),
        f"--{boundary}",
        body_part("html", rendered.html_pieces or [rendered.html]),
        f"--{boundary}--",
        "",
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
        raw=CRLF.join(lines).encode("utf-8"),
        to_name=one_line(to_name) if to_name else None,
    )
