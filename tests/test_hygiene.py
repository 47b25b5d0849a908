"""Message hygiene: headers folded and free of control characters whatever the data, quoted-printable
within 76, the text part as prose, the headers each kind of mail needs, link tokens that reveal no
internal id (old ones still work), and the public_url rule of `validate`."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from email import message_from_bytes, policy
from email.parser import BytesHeaderParser

from conftest import customer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from test_web import Web

from engine.config.settings import Config
from engine.mail.message import build_email
from engine.mail.rendering import RenderedEmail

WELCOME = """
    name: welcome
    type: transactional
    trigger: {event: signed_up}
    steps: [{template: rich, subject: "Welcome {{ customer.first_name }}"}]
"""
NEWS = """
    name: news
    topic: news
    trigger: {event: signed_up}
    steps: [{template: rich, subject: "News for {{ customer.first_name }}"}]
"""
RICH = """<h1>Hello {{ customer.first_name }}</h1>
<p>This is <strong>important</strong> and <em>new</em>:
<a href="https://shop.example/a_b?x=1&amp;y=2">our offer</a>.</p>
<p>1. First point</p>
<p>Open <a href="{{ links.preferences }}">{{ links.preferences }}</a></p>
"""
CONFIG = Config.model_validate(
    {"from": {"email": "hello@shop.example", "name": "Shop"}, "reply_to": "help@shop.example"}
)
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
TOKEN = re.compile(r"https?://[^/\s)]+/(?:preferences|unsubscribe|confirm|feedback|alerts)/([A-Za-z0-9_.\-]+)")


def header_block(raw: bytes) -> list[str]:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8").split("\r\n")


def qp_lines(raw: bytes) -> list[bytes]:
    """The body lines of every quoted-printable part."""
    lines, quoted = [], False
    for line in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"):
        if line.startswith(b"Content-Transfer-Encoding:"):
            quoted = line.endswith(b"quoted-printable")
        elif line.startswith(b"--=_lifecycle_"):
            quoted = False
        elif quoted:
            lines.append(line)
    return lines


data_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300) | st.builds(
    lambda word, n, sep: sep.join([word] * n),
    st.text(st.characters(min_codepoint=33, max_codepoint=0x24F), min_size=1, max_size=40),
    st.integers(1, 300),
    st.sampled_from([" ", "", "\x00", "\x1b", "\x7f", "\r\n", "\t"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=data_text, subject=data_text, body=data_text, marketing=st.booleans())
def test_any_data_gives_folded_headers_without_control_characters_and_short_qp_lines(name, subject, body, marketing):
    email = build_email(
        CONFIG,
        send_id=9,
        campaign="welcome",
        marketing=marketing,
        to="ann@example.com",
        to_name=name,
        rendered=RenderedEmail(subject, f"<p>{body}</p>" * 3, body),
        unsubscribe_url="https://shop.example/unsubscribe/abc",
        now=dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC),
    )
    for line in header_block(email.raw):
        assert len(line) <= 998
        assert not CONTROL.search(line), line
        if len(line) > 78:  # only where there is no space to fold at
            assert len(line.strip().split(" ")) <= 2, line
    for line in qp_lines(email.raw):
        assert len(line) <= 76, line
    # Two parsers read the same message: the standard library's full one and its header parser.
    message = message_from_bytes(email.raw, policy=policy.default)
    assert not message.defects
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    shown = " ".join(re.sub("[\x00-\x1f\x7f-\x9f]", " ", name).split())
    # A long name goes as several encoded words on folded lines. RFC 2047 says to ignore the space
    # between two of them, but the standard library's address parser keeps it (where the first
    # ends in a space, the name reads two): names are compared without their spaces.
    assert "".join(message["To"].addresses[0].display_name.split()) == "".join(shown.split())
    assert str(message["Subject"]) == " ".join(re.sub("[\x00-\x1f\x7f-\x9f]", " ", subject).split())
    headers = BytesHeaderParser(policy=policy.default).parsebytes(email.raw)
    assert headers["Message-ID"] == email.message_id
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == body.replace("\r\n", "\n").replace(
        "\r", "\n"
    )


def tick_project(project):
    project.template("rich", RICH)
    project.campaign("welcome", WELCOME)
    project.campaign("news", NEWS)
    project.customers(*(customer(c) for c in ("ann", "bob", "cem")))
    project.events(
        *({"customer": c, "event": "signed_up", "at": "2026-03-01T09:00:00Z"} for c in ("ann", "bob", "cem"))
    )
    project.tick("2026-03-01T09:05:00Z")
    return project.outbox()


def test_the_text_part_is_prose_with_every_url_and_each_kind_of_mail_has_its_headers(project):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    messages = tick_project(project)
    assert {str(m["X-Lifecycle-Campaign"]) for m in messages} == {"welcome", "news"} and len(messages) == 6
    for message in messages:
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "](" not in text and "**" not in text and "__" not in text and not re.search(r"^#", text, re.M)
        assert "\\" not in text and not re.search(r" +$", text, re.M)  # no Markdown escapes or hard breaks
        assert "our offer (https://shop.example/a_b?x=1&y=2)" in text
        assert "1. First point" in text
        preferences = re.search(r'href="([^"]*/preferences/[^"]*)"', html).group(1)
        assert f"Open {preferences}\n" in text.replace("\r\n", "\n")  # a URL shown as its own text once
        assert "Unsubscribe (http://localhost:8000/unsubscribe/" in text
        assert message["Date"].datetime >= before  # when it left, not the tick's --now
        if str(message["X-Lifecycle-Campaign"]) == "welcome":
            assert str(message["Auto-Submitted"]) == "auto-generated"
            assert message["List-Id"] is None and message["Feedback-ID"] is None
        else:
            assert message["Auto-Submitted"] is None
            assert str(message["List-Id"]) == "<news.shop.example>"
            assert str(message["Feedback-ID"]) == "news:marketing:shop.example"


def decodings(token: str) -> list[bytes]:
    """The token as it is and as every decoding someone might try on it or its parts."""
    found = [token.encode()]
    for part in [token, *token.split(".")]:
        for decode in (base64.urlsafe_b64decode, base64.b64decode, base64.b32decode, bytes.fromhex):
            try:
                found.append(decode(part + "=" * (-len(part) % 4)) if decode is not bytes.fromhex else decode(part))
            except (binascii.Error, ValueError):
                continue
    return found


def test_link_tokens_reveal_no_internal_id_and_old_ones_still_work(project):
    messages = tick_project(project)
    ids = {external: internal for internal, external in project.query("SELECT id, external_id FROM customer")}
    tokens = {t for m in messages for t in TOKEN.findall(m.get_body(("html",)).get_content())}
    assert len(tokens) >= 9  # preferences, unsubscribe, rating links ...
    for token in tokens:
        assert "." not in token
        for decoded in decodings(token):
            for internal in ids.values():
                assert f"[{internal}," not in decoded.decode("latin-1"), token
    # A link of the first format, already in someone's inbox, still opens its page.
    web = Web(project)
    old = URLSafeSerializer("test-secret", salt="lifecycle.preferences").dumps([ids["ann"], None])
    assert re.fullmatch(r"WzE[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", old)  # readable: '[1, ...' in base64
    assert web.client.get(f"/preferences/{old}").status_code == 200
    new = web.links.token("preferences", ids["ann"])
    assert web.client.get(f"/preferences/{new}").status_code == 200
    assert web.links.read("preferences", old) == web.links.read("preferences", new) == (ids["ann"], None)


def test_validate_refuses_an_insecure_public_url_for_marketing_unless_the_environment_allows_it(project, monkeypatch):
    project.template("rich", RICH)
    project.campaign("news", NEWS)
    project.config(public_url="http://localhost:8000")
    allowed = project.cli("validate")
    assert "warning: public_url 'http://localhost:8000' is not https://" in allowed.output
    assert "LIFECYCLE_INSECURE_PUBLIC_URL=1" in allowed.output
    monkeypatch.delenv("LIFECYCLE_INSECURE_PUBLIC_URL")
    refused = project.cli("validate", expect=1).output
    line = next(
        n for n, text in enumerate((project.root / "config.yaml").read_text().splitlines(), 1) if "public_url" in text
    )
    assert re.search(rf"config\.yaml:{line}:\d+: public_url: 'http://localhost:8000' is not https://", refused)
    for url, ok in [
        ("https://127.0.0.1", False),
        ("https://localhost:8443", False),
        ("https://10.1.2.3", False),
        ("https://intranet", False),
        ("https://shop.example", True),
        ("https://203.0.114.7", True),
    ]:
        project.config(public_url=url)
        result = project.cli("validate", expect=0 if ok else 1)
        assert ("public_url" in result.output) is not ok, url
    # Transactional mail alone carries no unsubscribe link: the rule does not apply.
    (project.root / "campaigns" / "news.yaml").unlink()
    project.campaign("welcome", WELCOME)
    project.config(public_url="http://localhost:8000")
    assert "public_url" not in project.cli("validate").output
