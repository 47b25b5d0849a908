"""Rendering compiled once per template file, and the message every sender emits.

The compiled path (MJML once, Jinja per recipient) must produce what the slow path produces
(Jinja over MJML, then MJML, for every email): `test_every_shipped_template_renders_as_the_slow_way`
holds the two side by side for every shipped template, in both languages, with and without the
optional data their `{% if %}`s test."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from conftest import REPO
from hypothesis import given
from hypothesis import strategies as st
from mjml import mjml2html
from test_delivery import NEWS

from engine.campaigns.language import load_campaigns
from engine.config.settings import load_config
from engine.errors import TemplateError
from engine.mail.compose import compose
from engine.mail.links import Links
from engine.mail.message import build_email
from engine.mail.rendering import RenderedEmail, Renderer, is_rtl, right_to_left, template_context, tidy
from engine.mail.samples import build_samples
from engine.mail.validation import sample_event

LINKS = {
    "preferences": "https://shop.example/preferences/P1",
    "unsubscribe": "https://shop.example/unsubscribe/U1",
    "confirm": "https://shop.example/confirm/C1",
    # bound to the send (compose.send_links): rating buttons, and in emails to the team
    "rate": {score: f"https://shop.example/feedback/R1/{score}" for score in range(11)},
    "acknowledge": "https://shop.example/alerts/A1",
    "customer": "https://shop.example/dashboard",
}
NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)


def squeeze(html: str) -> str:
    return re.sub(r"\s+", "", html)


def slow_way(renderer: Renderer, name: str, context: dict) -> str:
    """What rendering was before: Jinja over the MJML for each recipient, then MJML."""
    source = renderer.markup.get_template(name).render(context)
    lang = renderer._language(name)
    return mjml2html(right_to_left(source, lang) if is_rtl(lang) else source, disable_comments=True)


def context_for(renderer: Renderer, **values) -> dict:
    return {
        "customer": {"first_name": "Ann", "email": "ann@example.com"},
        "event": None,
        "brand": renderer.config.brand.model_dump(),
        "links": LINKS,
        "locale": "en",
        "timezone": "UTC",
        **values,
    }


@pytest.fixture
def renderer(project) -> Renderer:
    return Renderer(load_config(project.root / "config.yaml"))


def write(project, name: str, source: str) -> None:
    (project.root / "templates" / "emails" / name).write_text(source, encoding="utf-8")


def shipped_cases() -> list:
    config = load_config(REPO / "config.yaml")
    return [
        pytest.param(campaign.name, step, content.template, locale, id=f"{content.template}-{locale}")
        for campaign in load_campaigns(config)
        for locale in config.locales
        for step, content in ((n, c) for n, s in enumerate(campaign.steps, 1) for c in s.choices())
    ]


@pytest.mark.parametrize("campaign_name, step, template, locale", shipped_cases())
@pytest.mark.parametrize("data", ["full", "bare"])
def test_every_shipped_template_renders_as_the_slow_way(monkeypatch, campaign_name, step, template, locale, data):
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    config = load_config(REPO / "config.yaml")
    campaign = next(c for c in load_campaigns(config) if c.name == campaign_name)
    person, event = build_samples(config, NOW).customer(locale), sample_event(campaign, config)
    if data == "bare":  # no name, no favourite product, an event with only what alerts need: the other branches
        person = {key: value for key, value in person.items() if key != "favourite_product"} | {"first_name": None}
        event = event and {"name": event["name"], "at": event["at"], "properties": {"score": 3}}
    renderer = Renderer(config)
    context = template_context(config, campaign, step, person, event, LINKS)
    context["locale"] = locale  # an email to the team is in the team's language: render each file anyway
    content = next(c for c in campaign.steps[step - 1].choices() if c.template == template)
    rendered = renderer.render(template, content.subject, context)
    assert squeeze(rendered.html) == squeeze(slow_way(renderer, renderer.template_file(template, locale), context))


def test_each_file_is_compiled_once_until_it_or_its_layout_changes(project, renderer):
    first = renderer.compile("plain.mjml")
    assert Renderer(renderer.config).compile("plain.mjml") is first  # shared by every renderer
    assert "step 1." in renderer.render("plain", "Hi", context_for(renderer, step={"number": 1})).html

    write(
        project, "plain.mjml", "{% extends '_layout.mjml' %}{% block content %}Changed {{ step.number }}{% endblock %}"
    )
    os.utime(project.root / "templates" / "emails" / "plain.mjml", ns=(1, 1))  # a different mtime, whatever the clock
    second = renderer.compile("plain.mjml")
    assert second is not first
    assert "Changed 2" in renderer.render("plain", "Hi", context_for(renderer, step={"number": 2})).html

    layout = project.root / "templates" / "emails" / "_layout.mjml"
    layout.write_text(layout.read_text().replace("Unsubscribe", "Leave"))
    os.utime(layout, ns=(2, 2))
    third = renderer.compile("plain.mjml")
    assert third is not second
    assert ">Leave</a>" in renderer.render("plain", "Hi", context_for(renderer, step={"number": 2})).html


def test_jinja_survives_mjml_in_attributes_and_text(project, renderer):
    write(
        project,
        "links.mjml",
        """<mjml><mj-body><mj-section><mj-column>
      <mj-button href="{{ brand.url ~ "/shop?c=" ~ customer.first_name|urlencode }}">Shop</mj-button>
      <mj-image src="{{ brand.url }}/{{ 'logo' }}.png" alt="{{ customer.first_name }} &amp; co" />
      <mj-text><a href="{{ links.unsubscribe }}">Unsubscribe</a> {{ "{{ literal }}" }}</mj-text>
    </mj-column></mj-section></mj-body></mjml>""",
    )
    html = renderer.render("links", "x", context_for(renderer)).html
    assert 'href="https://shop.example/shop?c=Ann"' in html
    assert 'src="https://shop.example/logo.png"' in html and 'alt="Ann &amp; co"' in html
    assert f'href="{LINKS["unsubscribe"]}"' in html
    assert "{{ literal }}" in html


def test_if_around_whole_sections_keeps_its_meaning(project, renderer):
    section = "<mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section>"
    write(
        project,
        "sections.mjml",
        "<mjml><mj-body><mj-wrapper>"
        + section.format("first")
        + "{% if customer.vip %}"
        + section.format("for {{ customer.first_name }} only")
        + "{% endif %}"
        + "{% for tip in customer.tips %}"
        + section.format("tip {{ tip }}")
        + "{% endfor %}"
        + "</mj-wrapper></mj-body></mjml>",
    )
    for vip, tips in ((True, ["a", "b"]), (False, [])):
        context = context_for(renderer, customer={"first_name": "Ann", "vip": vip, "tips": tips})
        html = renderer.render("sections", "x", context).html
        assert ("for Ann only" in html) is vip and html.count("tip ") == len(tips)
        assert squeeze(html) == squeeze(slow_way(renderer, "sections.mjml", context))
        text = renderer.render("sections", "x", context).text  # derived from the HTML, loop and all
        assert ("for Ann only" in text) is vip and text.count("tip ") == len(tips)


def test_customer_data_is_escaped_in_html_and_plain_in_text(project, renderer):
    write(
        project,
        "derived.mjml",
        """<mjml><mj-body><mj-section><mj-column>
      <mj-text>Hello {{ customer.first_name }}, <a href="{{ links.preferences }}">your preferences</a></mj-text>
      {% if customer.vip %}<mj-text>VIP</mj-text>{% endif %}
    </mj-column></mj-section></mj-body></mjml>""",
    )
    evil = '<script>alert("x")</script>'
    rendered = renderer.render(
        "derived", "Hi {{ customer.first_name }}", context_for(renderer, customer={"first_name": evil, "vip": False})
    )
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert f"Hello {evil}" in rendered.text  # the text part is not HTML: no entities in it
    assert f"your preferences ({LINKS['preferences']})" in rendered.text  # derived from the HTML, links kept as prose
    assert "VIP" not in rendered.text and "\n\n\n" not in rendered.text
    assert rendered.subject == f"Hi {evil}"


def test_a_txt_file_is_the_text_part(project, renderer):
    write(project, "plain.txt", "Plain {{ customer.first_name }} & {{ links.unsubscribe }}")
    rendered = renderer.render("plain", "x", context_for(renderer, step={"number": 1}))
    assert rendered.text == f"Plain Ann & {LINKS['unsubscribe']}"


def test_an_undefined_name_is_located_in_the_file_the_author_wrote(project, renderer):
    write(
        project,
        "broken.mjml",
        "{% extends '_layout.mjml' %}{% block content %}\nline two\n{{ customer.nickname }}{% endblock %}",
    )
    with pytest.raises(TemplateError) as caught:
        renderer.render("broken", "x", context_for(renderer))
    (problem,) = caught.value.problems
    assert problem.file.endswith("broken.mjml") and problem.line == 3 and "nickname" in problem.message


def test_the_sandbox_refuses_unsafe_attributes(project, renderer):
    write(
        project,
        "unsafe.mjml",
        "{% extends '_layout.mjml' %}{% block content %}{{ customer.__class__.__mro__ }}{% endblock %}",
    )
    with pytest.raises(TemplateError):
        renderer.render("unsafe", "x", context_for(renderer))


def test_syntax_errors_and_unsupported_tags_are_located(project, renderer):
    write(project, "bad.mjml", "{% extends '_layout.mjml' %}{% block content %}\n{% if customer.vip %}\n{% endblock %}")
    write(project, "macro.mjml", "{% extends '_layout.mjml' %}\n{% import 'x.mjml' as x %}")
    for name, line in (("bad", 3), ("macro", 2)):
        with pytest.raises(TemplateError) as caught:
            renderer.render(name, "x", context_for(renderer))
        (problem,) = caught.value.problems
        assert problem.file.endswith(f"{name}.mjml") and problem.line == line, problem


def test_a_tag_where_mjml_allows_no_text_is_explained(project, renderer):
    write(
        project,
        "head.mjml",
        "<mjml><mj-head>{% if customer.vip %}<mj-title>VIP</mj-title>{% endif %}</mj-head><mj-body></mj-body></mjml>",
    )
    with pytest.raises(TemplateError, match="keep them in text, in attribute values"):
        renderer.render("head", "x", context_for(renderer))


def test_locale_filters_for_dates_numbers_and_money(project, renderer):
    write(
        project,
        "numbers.mjml",
        "<mjml><mj-body><mj-section><mj-column><mj-text>"
        "{{ customer.expires|date }} | {{ customer.points|number }} | {{ 1234.5|money('EUR') }}"
        "</mj-text></mj-column></mj-section></mj-body></mjml>",
    )
    facts = {"first_name": "A", "expires": "2026-05-01", "points": 12345}
    english = renderer.render("numbers", "x", context_for(renderer, customer=facts)).html
    arabic = renderer.render("numbers", "x", context_for(renderer, customer=facts, locale="ar")).html
    assert "May 1, 2026 | 12,345 | €1,234.50" in english
    assert "1 مايو 2026 | 12,345 |" in arabic


def test_a_subject_that_reads_nothing_of_the_customer_is_rendered_once_per_language_and_zone(renderer):
    brand = renderer.config.brand_fields
    news, hello = "News from {{ brand.name }}, {{ '2026-03-01T23:30:00Z'|date }}", "Hi {{ customer.first_name }}"
    london = context_for(renderer, brand=brand, timezone="Europe/London")
    tokyo, arabic = {**london, "timezone": "Asia/Tokyo"}, {**london, "locale": "ar"}
    assert renderer.subject(news, london, "s") == "News from Shop, March 1, 2026"
    assert renderer.subject(news, tokyo, "s") == "News from Shop, March 2, 2026"
    assert renderer.subject(news, arabic, "s") == "News from Shop, 1 مارس 2026"
    assert len(renderer.shared_subjects) == 3
    assert renderer.subject(news, {**london, "customer": {"first_name": "Bo"}}, "s") == "News from Shop, March 1, 2026"
    assert renderer.subject(hello, london, "s") == "Hi Ann"
    assert renderer.subject(hello, {**london, "customer": {"first_name": "Bo"}}, "s") == "Hi Bo"
    other_brand = {**london, "brand": {**brand, "name": "Other"}}  # not the config's: rendered as it is
    assert renderer.subject(news, other_brand, "s") == "News from Other, March 1, 2026"
    assert len(renderer.shared_subjects) == 3


# -- right to left ---------------------------------------------------------------------------------


def test_arabic_is_right_to_left_all_the_way_down(monkeypatch):
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    renderer = Renderer(load_config(REPO / "config.yaml"))
    arabic = renderer.compile("welcome.ar.mjml").html.render(context_for(renderer, locale="ar"))
    english = renderer.compile("welcome.mjml").html.render(context_for(renderer))
    assert re.search(r'<html lang="ar" dir="rtl"', arabic)
    assert "direction:ltr" not in arabic and arabic.count("direction:rtl") >= 8
    assert "text-align:left" not in re.sub(r'class="mj-outlook-group-fix[^"]*" style="[^"]*"', "", arabic)
    assert "direction:rtl" not in english and 'dir="rtl"' not in english


def test_any_right_to_left_language_gets_it_without_asking(project, renderer):
    write(
        project,
        "plain.he.mjml",
        "<mjml><mj-body><mj-section><mj-column><mj-text>שלום</mj-text></mj-column></mj-section></mj-body></mjml>",
    )
    html = renderer.render("plain", "x", context_for(renderer, locale="he")).html
    assert '<html lang="he" dir="rtl"' in html and "direction:ltr" not in html
    assert "text-align:right" in html


def test_a_template_may_still_choose_its_own_alignment(project, renderer):
    write(
        project,
        "plain.ar.mjml",
        """<mjml><mj-head><mj-attributes><mj-text align="center" /></mj-attributes></mj-head>
      <mj-body><mj-section><mj-column><mj-text>مرحبا</mj-text></mj-column></mj-section></mj-body></mjml>""",
    )
    html = renderer.render("plain", "x", context_for(renderer, locale="ar")).html
    assert "text-align:center" in html and "direction:rtl" in html


# -- the message --------------------------------------------------------------------------------------


def message_for(project, rendered: RenderedEmail, **fields):
    config = load_config(project.root / "config.yaml")
    values = {
        "send_id": 42,
        "campaign": "welcome",
        "marketing": True,
        "to": "ann@example.com",
        "to_name": "Ann Lee",
        "rendered": rendered,
        "unsubscribe_url": LINKS["unsubscribe"],
        "now": NOW,
        **fields,
    }
    email = build_email(config, **values)
    return email, message_from_bytes(email.raw, policy=policy.default)


ARABIC_TEXT = "أهلاً بك يا آن!\nتم تأكيد بريدك الإلكتروني.\n"
ARABIC_HTML = (
    '<html lang="ar" dir="rtl"><body style="word-spacing:normal;"><table role="presentation" '
    'style="width:100%;direction:rtl;text-align:right;font-family:Tahoma, Arial, sans-serif;">'
    '<tr><td><p>أهلاً بك يا آن! <a href="https://shop.example/x?a=1&amp;b=2">رابط</a></p></td></tr>'
    "</table></body></html>"
)


def test_the_message_parses_back_to_what_was_meant(project):
    email, message = message_for(project, RenderedEmail("أهلاً بك في المتجر، آن!", ARABIC_HTML, ARABIC_TEXT))
    assert str(message["From"]) == "Shop <hello@shop.example>"
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [("Ann Lee", "ann@example.com")]
    assert str(message["Subject"]) == "أهلاً بك في المتجر، آن!"
    assert message["Date"].datetime == NOW
    assert re.fullmatch(r"<[^@>]+@shop\.example>", str(message["Message-ID"])) and email.message_id == str(
        message["Message-ID"]
    )
    assert str(message["MIME-Version"]) == "1.0"
    assert str(message["List-Unsubscribe"]) == f"<{LINKS['unsubscribe']}>"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert (str(message["X-Lifecycle-Campaign"]), str(message["X-Lifecycle-Send-Id"])) == ("welcome", "42")
    assert message.get_content_type() == "multipart/alternative" and not message.defects
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert plain.get_content().replace("\r\n", "\n") == ARABIC_TEXT
    assert html.get_content().replace("\r\n", "\n") == ARABIC_HTML
    assert plain["Content-Transfer-Encoding"] == "base64"  # mostly Arabic: base64 is shorter
    assert html["Content-Transfer-Encoding"] == "quoted-printable"  # mostly markup


def test_every_line_is_crlf_and_short(project):
    long_html = "<p>" + "word " * 500 + "é" * 100 + "</p>\n<p>.starts with a dot</p>"
    email, message = message_for(
        project,
        RenderedEmail("Hi " + "x " * 600, long_html, "From the start\n" + "y" * 300),
        unsubscribe_url="https://shop.example/unsubscribe/" + "t" * 300,
    )
    assert b"\n" not in email.raw.replace(b"\r\n", b"")
    head, _, body = email.raw.partition(b"\r\n\r\n")
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert message.get_body(("html",)).get_content().replace("\r\n", "\n") == long_html
    assert str(message["Subject"]) == " ".join(("Hi " + "x " * 600).split())
    assert str(message["List-Unsubscribe"]).endswith("t" * 300 + ">")


@given(st.lists(st.text(st.sampled_from("\n \ta"), max_size=6), max_size=6))
def test_a_derived_text_tidied_in_pieces_is_the_text_tidied_whole(pieces):
    text = "".join(pieces)
    assert "".join(tidy(tuple(pieces))) == re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def test_rendered_pieces_encode_as_the_whole(project, renderer):
    rendered = renderer.render("plain", "x", context_for(renderer, step={"number": 7}))
    assert len(rendered.html_pieces) > 3 and "".join(rendered.html_pieces) == rendered.html
    assert len(rendered.text_pieces) > 3 and "".join(rendered.text_pieces) == rendered.text
    _, message = message_for(project, rendered)
    assert message.get_body(("html",)).get_content().replace("\r\n", "\n") == rendered.html.replace("\r\n", "\n")
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered.text.replace("\r\n", "\n")


def test_each_link_is_sealed_once_and_only_when_read(project, monkeypatch):
    project.campaign("news", NEWS)
    config = load_config(project.root / "config.yaml")
    (campaign,) = load_campaigns(config)
    links, sealed = Links(config), []
    seal = links._seal
    monkeypatch.setattr(links, "_seal", lambda purpose, fields: sealed.append(purpose) or seal(purpose, fields))
    ann = {"customer_id": 7, "external_id": "c7", "email": "ann@example.com", "first_name": "Ann", "last_name": None}
    ann |= {"locale": "en", "timezone": "UTC", "created_at": NOW, "attributes": {}}
    email = compose(config, Renderer(config), links, campaign, 1, None, ann, None, send_id=1, now=NOW)
    assert sorted(sealed) == ["preferences", "unsubscribe"]  # the headers' unsubscribe link is the template's
    assert email.headers["List-Unsubscribe"] == f"<{links.base}/unsubscribe/{seal('unsubscribe', [7, 'news'])}>"


@pytest.mark.parametrize("field", ["to_name", "subject", "to"])
def test_no_header_can_be_injected_from_customer_data(project, field):
    evil = "Eve\r\nBcc: victim@example.com\nX-Evil: 1\u2028Reply-To: eve@evil.example"
    rendered = RenderedEmail(evil if field == "subject" else "Hello", "<p>x</p>", "x")
    fields = {"to_name": evil} if field == "to_name" else {"to": "eve@example.com" + evil} if field == "to" else {}
    email, message = message_for(project, rendered, **fields)
    head = email.raw.partition(b"\r\n\r\n")[0]
    for name in (b"Bcc", b"X-Evil", b"Reply-To"):
        assert not re.search(rb"\r\n" + name + rb":", head)
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert len(message.get_all("To")) == 1


@pytest.mark.parametrize("name", ['Dr. "Ann" O\'Neil, Jr. <boss>', 'آن "Ann" O\'Neil, Jr.'])
def test_names_with_quotes_and_non_ascii_names_stay_names(project, name):
    _, message = message_for(project, RenderedEmail("x", "<p>x</p>", "x"), to_name=name)
    (address,) = message["To"].addresses
    assert address.display_name == name and address.addr_spec == "ann@example.com"


def test_transactional_mail_has_no_unsubscribe_headers(project):
    _, message = message_for(project, RenderedEmail("x", "<p>x</p>", "x"), marketing=False)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None


# -- validate ---------------------------------------------------------------------------------------


def test_validate_fails_a_marketing_template_without_a_way_out_or_the_postal_address(project):
    project.campaign(
        "news",
        """
        topic: news
        trigger: {event: signed_up}
        steps: [{template: bare, subject: "News"}]
        """,
    )
    write(
        project,
        "bare.mjml",
        "<mjml><mj-body><mj-section><mj-column><mj-text>No way out</mj-text></mj-column></mj-section></mj-body></mjml>",
    )
    result = project.cli("validate", expect=1)
    assert (
        "bare.mjml:1:1: marketing template 'bare' (en) has no links.unsubscribe or links.preferences link"
        in result.output
    )

    write(
        project,
        "bare.mjml",
        "<mjml><mj-body><mj-section><mj-column><mj-text>"
        '<a href="{{ links.preferences }}">Preferences</a></mj-text>'
        "</mj-column></mj-section></mj-body></mjml>",
    )
    result = project.cli("validate", expect=1)
    assert "marketing template 'bare' (en) has no brand.address" in result.output
    assert "links.unsubscribe" not in result.output

    write(
        project,
        "bare.mjml",
        "<mjml><mj-body><mj-section><mj-column><mj-text>"
        '<a href="{{ links.preferences }}">Preferences</a> {{ brand.address }}</mj-text>'
        "</mj-column></mj-section></mj-body></mjml>",
    )
    project.cli("validate")
