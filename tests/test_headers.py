"""Text from customers never reaches a message header raw: line breaks, NUL, ESC, DEL and the other
control characters fold to a space in the recipient's name, the address and the subject."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_rendering import message_for

from engine.mail.message import CONTROL, address_header, date_header, header, one_line
from engine.mail.rendering import RenderedEmail

CONTROLS = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Ann\x00Lee", "Ann Lee"),
        ("Ann\x1b[2J\x1b]0;owned\x07Lee", "Ann [2J ]0;owned Lee"),
        ("Ann\x7f\x85\x9bLee", "Ann Lee"),
        ("Ann\r\nBcc: x@example.com", "Ann Bcc: x@example.com"),
        ("  Ann \u2028 Lee\t", "Ann Lee"),
        ("آن لي", "آن لي"),
    ],
)
def test_one_line_folds_every_control_character_to_a_space(text, expected):
    assert one_line(text) == expected


# Text whose every kind of space, break and control character is likely, next to ordinary letters.
AWKWARD = st.text(st.sampled_from(" \t\r\n\x00\x1b\x7f\x85\x9b\xa0\u2028\u3000aZéآ") | st.characters())


@given(AWKWARD)
def test_one_line_leaves_as_it_is_only_what_the_long_way_would(text):
    assert one_line(text) == " ".join(CONTROL.sub(" ", text).split())


@given(AWKWARD.filter(lambda text: not any(0xD800 <= ord(c) < 0xE000 for c in text)))
def test_any_subject_and_name_read_back_as_written_on_short_lines(text):
    head = f"{header('Subject', text)}\r\n{address_header('To', text, 'ann@example.com')}\r\n\r\n"
    message = message_from_bytes(head.encode(), policy=policy.default)
    assert str(message["Subject"]) == one_line(text)
    if one_line(text):  # the standard library's reader puts a space between two words of a name (RFC 2047: none)
        assert message["To"].addresses[0].display_name.replace(" ", "") == one_line(text).replace(" ", "")
    lines = head.split("\r\n")
    assert all(len(line) <= (78 if "=?utf-8?" in line else 998) for line in lines)


def test_the_date_of_one_second_is_written_once_per_zone():
    utc = datetime(2026, 3, 1, 10, 0, 5, 1, tzinfo=UTC)
    riyadh = utc.astimezone(timezone(timedelta(hours=3)))
    assert date_header(utc) == date_header(utc.replace(microsecond=999_999)) == "Date: Sun, 01 Mar 2026 10:00:05 +0000"
    assert date_header(riyadh) == "Date: Sun, 01 Mar 2026 13:00:05 +0300"


@pytest.mark.parametrize("field", ["to_name", "subject"])
def test_no_control_character_from_data_reaches_the_header_bytes(project, field):
    evil = "Eve" + CONTROLS + "Bcc: victim@example.com"
    rendered = RenderedEmail(evil if field == "subject" else "Hello", "<p>x</p>", "x")
    email, message = message_for(project, rendered, **({"to_name": evil} if field == "to_name" else {}))
    head = email.raw.partition(b"\r\n\r\n")[0]
    assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", head.replace(b"\r\n", b""))
    assert message["Bcc"] is None and not message.defects
    shown = message["To"].addresses[0].display_name if field == "to_name" else str(message["Subject"])
    assert shown == "Eve Bcc: victim@example.com"
    assert not re.search("[\x00-\x1f\x7f-\x9f]", email.subject + (email.to_name or ""))
