"""The RFC 5322 message every sender emits (interfaces.md, "What an email looks like")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

from .config import Config
from .rendering import RenderedEmail


# RFC 5322 allows 998 characters a line: long List-Unsubscribe URLs stay unencoded and unfolded.
POLICY = SMTP.clone(max_line_length=998)


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


def one_line(value: str) -> str:
    """No raw newline from data reaches a header: CR, LF and other breaks fold to a space."""
    return " ".join(str(value).split())


def build_email(config: Config, *, send_id: int, campaign: str, marketing: bool, to: str,
                to_name: str | None, rendered: RenderedEmail, unsubscribe_url: str | None,
                now: datetime) -> OutgoingEmail:
    domain = config.from_.email.rpartition("@")[2] or "localhost"
    message_id = make_msgid(idstring=f"send{send_id}", domain=domain)
    headers = {"X-Lifecycle-Campaign": campaign, "X-Lifecycle-Send-Id": str(send_id)}
    if config.reply_to:
        headers["Reply-To"] = config.reply_to
    if marketing and unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message = EmailMessage(policy=POLICY)
    message["From"] = formataddr((one_line(config.from_.name or ""), config.from_.email))
    message["To"] = formataddr((one_line(to_name or ""), one_line(to)))
    message["Subject"] = one_line(rendered.subject)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name] = one_line(value)
    message.set_content(rendered.text, charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return OutgoingEmail(send_id=send_id, campaign=campaign, to=one_line(to), from_email=config.from_.email,
                         from_name=config.from_.name, subject=one_line(rendered.subject), html=rendered.html,
                         text=rendered.text, message_id=message_id, headers=headers, raw=message.as_bytes())
