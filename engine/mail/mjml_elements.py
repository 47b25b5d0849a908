"""MJML's elements and their attributes, so that `<mj-buton>` or `<mj-text colour="red">` is a
located error in `validate`: MRML, the compiler, drops an element it does not know without a
word (and the link in it) and ignores an unknown attribute. The table follows the MJML 4
documentation (https://documentation.mjml.io)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from engine.errors import Problem
from engine.mail.rendering import did_you_mean

PADDING = "padding padding-top padding-right padding-bottom padding-left"
BORDER = "border border-top border-right border-bottom border-left border-radius"
FONT = "font-family font-size font-style font-weight line-height letter-spacing color text-decoration text-transform"
BACKGROUND = (
    "background-color background-position background-position-x background-position-y background-repeat "
    "background-size background-url"
)
SECTION = f"{BACKGROUND} {BORDER} {PADDING} direction full-width text-align gap"
LINK = "href rel target title name"
ICONS = (
    "icon-align icon-height icon-position icon-unwrapped-alt icon-unwrapped-url icon-width icon-wrapped-alt "
    "icon-wrapped-url"
)

ATTRIBUTES: dict[str, str] = {
    "mj-head": "",
    "mj-body": "width background-color",
    "mj-attributes": "",
    "mj-all": "*",
    "mj-class": "*",
    "mj-breakpoint": "width",
    "mj-font": "name href",
    "mj-html-attributes": "",
    "mj-selector": "path",
    "mj-html-attribute": "name",
    "mj-preview": "",
    "mj-title": "",
    "mj-style": "inline",
    "mj-raw": "position",
    "mj-include": "path type css-inline",
    "mj-accordion": f"border {FONT} {ICONS} {PADDING} container-background-color",
    "mj-accordion-element": f"background-color border {FONT} {ICONS}",
    "mj-accordion-title": f"background-color {FONT} {PADDING}",
    "mj-accordion-text": f"background-color {FONT} {PADDING}",
    "mj-button": (
        f"align background-color {BORDER} container-background-color {FONT} height inner-padding {PADDING} "
        f"{LINK} text-align vertical-align width"
    ),
    "mj-carousel": (
        f"align border-radius container-background-color icon-width left-icon right-icon thumbnails tb-border "
        f"tb-border-radius tb-hover-border-color tb-selected-border-color tb-width {PADDING}"
    ),
    "mj-carousel-image": f"alt {LINK} src thumbnails-src border-radius tb-border tb-border-radius",
    "mj-column": (
        f"background-color inner-background-color {BORDER} inner-border inner-border-top inner-border-right "
        f"inner-border-bottom inner-border-left inner-border-radius {PADDING} vertical-align width direction"
    ),
    "mj-divider": f"align border-color border-style border-width container-background-color {PADDING} width",
    "mj-group": "background-color direction vertical-align width",
    "mj-hero": (
        f"background-color background-height background-position background-url background-width border-radius "
        f"height mode {PADDING} vertical-align container-background-color inner-background-color inner-padding "
        "inner-padding-top inner-padding-right inner-padding-bottom inner-padding-left width"
    ),
    "mj-image": (
        f"align alt {BORDER} container-background-color fluid-on-mobile height {LINK} {PADDING} sizes src srcset "
        "usemap width"
    ),
    "mj-navbar": (
        "align base-url hamburger ico-align ico-close ico-color ico-font-family ico-font-size ico-line-height "
        "ico-open ico-padding ico-padding-top ico-padding-right ico-padding-bottom ico-padding-left "
        "ico-text-decoration ico-text-transform"
    ),
    "mj-navbar-link": f"{FONT} {LINK} {PADDING}",
    "mj-section": SECTION,
    "mj-wrapper": SECTION,
    "mj-social": (
        f"align border-radius container-background-color {FONT} icon-height icon-padding icon-size inner-padding "
        f"mode {PADDING} table-layout text-padding"
    ),
    "mj-social-element": (
        f"align alt background-color border-radius {FONT} {LINK} icon-height icon-padding icon-position "
        f"icon-size {PADDING} sizes src srcset text-padding vertical-align"
    ),
    "mj-spacer": f"container-background-color height {PADDING}",
    "mj-table": (
        f"align border cellpadding cellspacing container-background-color {FONT} {PADDING} role table-layout width"
    ),
    "mj-text": f"align container-background-color {FONT} height {PADDING} vertical-align",
}
EVERYWHERE = {"mj-class", "css-class"}
ALLOWED = {tag: set(names.split()) | EVERYWHERE for tag, names in ATTRIBUTES.items()}

TAG = re.compile(
    r"<(?P<tag>mj-[\w-]+)(?P<attributes>(?:\s+[^\s=>/]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*/?>"
)
ATTRIBUTE = re.compile(r"([^\s=>/]+)(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?")
DEFAULTS = re.compile(r"<mj-attributes\b.*?</mj-attributes>", re.DOTALL)
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def mjml_problems(source: str, file: str) -> Iterator[Problem]:
    """Each unknown mj-* element and each attribute an element does not take, at its line.
    Inside <mj-attributes> any attribute may be given a default, so only names are checked there."""
    defaults = [(m.start(), m.end()) for m in DEFAULTS.finditer(source)]
    blanked = JINJA.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)  # Jinja may hold '>' or '='
    for match in TAG.finditer(blanked):
        tag, line = match.group("tag"), blanked.count("\n", 0, match.start()) + 1
        column = match.start() - blanked.rfind("\n", 0, match.start())
        if tag not in ALLOWED:
            yield Problem(file, line, column, f"unknown MJML element <{tag}>{did_you_mean(tag, ALLOWED)}")
            continue
        if "*" in ALLOWED[tag] or any(start <= match.start() < end for start, end in defaults):
            continue
        for name in ATTRIBUTE.findall(match.group("attributes")):
            if name not in ALLOWED[tag]:
                yield Problem(
                    file, line, column, f"<{tag}> has no attribute '{name}'{did_you_mean(name, ALLOWED[tag])}"
                )
