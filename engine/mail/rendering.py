"""Rendering: MJML compiled to HTML once per template file, then only Jinja per recipient.

An email template is MJML with Jinja in it. Turning MJML into HTML is the same work for every
recipient, so it happens once per file (again only when a file it uses changes):

  1. structure: Jinja resolves `extends`, `block` and `include`, while every other tag
     (`{{ … }}`, `{% if %}`, `{% for %}`, `{% set %}`, ...) stands in the text as an inert
     placeholder, so nothing about a recipient is decided yet;
  2. MJML: mjml2html (MRML) compiles that into HTML; a right-to-left language gets
     right-to-left defaults for every wrapper, section, column and text block first;
  3. the placeholders get their Jinja tags back and the HTML becomes a sandboxed, autoescaping,
     strict Jinja template. The plain text part is derived once the same way (html2text over the
     placeholder HTML, links kept) unless `NAME.txt` exists.

Per recipient only step 3's templates run. MRML keeps text that stands between MJML elements in
its place among the element's children, so an `{% if %}` around a whole `<mj-text>` or section
keeps its meaning (tests/test_rendering.py compares every shipped template with the slow way:
Jinja first, then MJML). Where MJML allows no text (inside <mj-head>, <mj-social>, ...) a tag
is an MJML error, and a statement split by MJML (half in an attribute it drops) a Jinja one.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import html2text
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
    pass_context,
    pass_eval_context,
)
from jinja2 import TemplateError as JinjaError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape
from mjml import mjml2html

from engine.campaigns.language import Campaign, Subject
from engine.config.settings import Config
from engine.errors import Problem, TemplateError, display_path

RTL_LOCALES = {"ar", "he", "fa", "ur"}
# What a subject may read and be the same for every customer of one language and time zone: the
# config's `brand` (template_context) and the context's own text (the filters read the last two).
SHARED_NAMES = frozenset({"brand", "direction", "locale", "timezone"})

# Tags resolved when a file is compiled; every other tag runs per recipient.
STRUCTURE_TAGS = {"extends", "block", "endblock", "include"}
# `{{ super() }}` and `{{ self.name() }}` render blocks, which is structure too.
STRUCTURE_NAMES = {"super", "self"}
# Imported macros would put MJML into the HTML after MJML has run: there is no sound place for them.
UNSUPPORTED_TAGS = {"import", "from", "macro"}

PLACEHOLDER = re.compile(r"JINJATAG(\d+)X")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
BLANK_LINES = re.compile(r"\n{3,}")
JINJA_DELIMITERS = ("{{", "{%", "{#")
HOLDING_BACK_HINT = (
    "; while MJML compiles, Jinja tags stand in the text as it is written, so keep them in "
    "text, in attribute values, or between the elements of <mj-body>"
)


@dataclass
class RenderedEmail:
    subject: str
    html: str
    text: str
    # The HTML and the text as Jinja produced them, piece by piece: the template's constant pieces
    # recur in every email, so the message encodes each of them once (message.body_part).
    html_pieces: tuple[str, ...] = ()
    text_pieces: tuple[str, ...] = ()


def is_rtl(locale: str) -> bool:
    return locale.split("-")[0].split("_")[0] in RTL_LOCALES


# -- locale-aware filters ----------------------------------------------------------------------


def _locale(ctx: Context) -> str:
    locale: str = ctx.get("locale") or "en"
    return locale


def _as_datetime(value: str | datetime | date) -> datetime | date:
    """Attributes hold dates as ISO text; a bare date stays a date."""
    if isinstance(value, str):
        text = value.strip()
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value


# A filter as written: the template's context, the value, then the filter's own arguments.
Filter = Callable[..., str]


def _filter(kind: str) -> Callable[[Filter], Filter]:
    """A locale-aware filter that fails like Jinja does: an undefined value is an undefined-name
    error, and a value it cannot read is a template error naming the filter, never a crash."""

    def decorate(function: Filter) -> Filter:
        @pass_context
        @wraps(function)
        def apply(ctx: Context, value: Any, *args: Any) -> str:
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            try:
                return function(ctx, value, *args)
            except Exception:  # babel raises many kinds (decimal's InvalidOperation, UnknownLocaleError, ...)
                raise TemplateRuntimeError(f"the {kind} filter cannot read {value!r}") from None

        return apply

    return decorate


@_filter("date")
def _date_filter(ctx: Context, value: Any, format: str = "long") -> str:
    value = _as_datetime(value)
    if isinstance(value, datetime):
        value = value.astimezone(ZoneInfo(ctx.get("timezone") or "UTC")) if value.tzinfo else value
        value = value.date()
    return format_date(value, format=format, locale=_locale(ctx))


@_filter("datetime")
def _datetime_filter(ctx: Context, value: Any, format: str = "medium") -> str:
    value = _as_datetime(value)
    if not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return format_datetime(value, format=format, tzinfo=ZoneInfo(ctx.get("timezone") or "UTC"), locale=_locale(ctx))


@_filter("number")
def _number_filter(ctx: Context, value: Any) -> str:
    return format_decimal(value, locale=_locale(ctx))


@_filter("money")
def _money_filter(ctx: Context, value: Any, currency: str = "USD") -> str:
    return format_currency(value, currency, locale=_locale(ctx))


# -- the sandbox: data keys first, names suggested, a budget ------------------------------------

# Loop iterations one render may run, all loops together: far beyond any real email, far below a hang.
LOOP_LIMIT = 10_000
# The longest string or list `*` may build, and the largest exponent of `**`.
SIZE_LIMIT = 100_000
EXPONENT_LIMIT = 100


class Fields(dict[str, Any]):
    """Template data (`customer`, `event`, `event.properties`) that knows its own name, so that a
    missing key is reported as `customer.frist_name`, with the names it could have meant."""

    def __init__(self, label: str, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self.label = label


class Missing(StrictUndefined):
    """An undefined name: an error wherever it is used, saying which name and what was meant."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner, name = self._undefined_obj, self._undefined_name
        if not isinstance(owner, Mapping) or not isinstance(name, str):
            return str(super()._undefined_message)
        label = owner.label if isinstance(owner, Fields) else "this object"
        return f"{label}.{name} is undefined{did_you_mean(name, owner)}"


def did_you_mean(name: str, known: Iterable[Any], prefix: str = "") -> str:
    """ " (did you mean first_name?)" for a name close to a known one, else ""."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


class LoopTooLong(TemplateRuntimeError):
    def __init__(self) -> None:
        super().__init__(f"loop too long: more than {LOOP_LIMIT} iterations")


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > LOOP_LIMIT:
        raise LoopTooLong
    return numbers


@pass_context
def _loop_budget(ctx: Context, iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` iterates through here (Sandbox._parse): one count for the whole render."""
    spent: list[int] = ctx.__dict__.setdefault("loop_iterations", [0])
    for item in iterable:
        spent[0] += 1
        if spent[0] > LOOP_LIMIT:
            raise LoopTooLong
        yield item


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox templates run in. A key of template data wins over a dict method of the same
    name (`event.properties.items` is the property); every loop counts against one budget per
    render and `*`/`**` cannot build giant values, so no template can hang a tick."""

    intercepted_binops = frozenset(["*", "**"])

    def getattr(self, obj: Any, attribute: str) -> Any:
        """A key first, of any mapping: `links.preferences` is read as a key straight away (Jinja
        would look for an attribute of that name, fail, then read the key)."""
        if isinstance(obj, (dict, Mapping)) and attribute in obj:  # dict first: the quicker test, and the usual
            return obj[attribute]
        return super().getattr(obj, attribute)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as a plain dict rather than Jinja's ChainMap over the environment's:
        every render copies them, and copying a ChainMap costs more than the rest of a subject's
        render. The environment's globals are set before any template is made (_sandbox)."""
        return {**self.globals, **(d or {})}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > EXPONENT_LIMIT:
            raise TemplateRuntimeError(f"number too large: an exponent above {EXPONENT_LIMIT}")
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if isinstance(sized, (str, list, tuple)) and isinstance(count, int) and len(sized) * count > SIZE_LIMIT:
                    raise TemplateRuntimeError(f"value too large: more than {SIZE_LIMIT} characters or items")
        return super().call_binop(context, operator, left, right)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "loop_budget", [], [], None, None, lineno=loop.lineno)
        return tree


def _sandbox(loader: BaseLoader, autoescape: bool, **options: Any) -> Sandbox:
    env = Sandbox(loader=loader, autoescape=autoescape, undefined=Missing, auto_reload=True, **options)
    env.filters.update(
        date=_date_filter,
        datetime=_datetime_filter,
        number=_number_filter,
        money=_money_filter,
        loop_budget=_loop_budget,
    )
    env.globals["range"] = _bounded_range
    env.globals.pop("lipsum", None)
    return env


# -- step 1: the structure, with per-recipient tags held back ----------------------------------


def hold_back(source: str, name: str, tags: list[str], lexer_env: Environment) -> str:
    """The source with each per-recipient tag replaced by a placeholder naming its index in `tags`,
    where the tag is kept as written. Jinja's own lexer finds the tags, so a string holding `}}` or
    `%}` cannot confuse it."""
    pieces: list[str] = []
    tag: list[str] = []
    keyword, line = None, 1
    for lineno, token, value in lexer_env.lexer.tokeniter(source, name):
        if token in ("variable_begin", "block_begin"):
            tag, keyword, line = [value], None, lineno
            continue
        if not tag:
            pieces.append(value)
            continue
        tag.append(value)
        if keyword is None and token == "name":
            keyword = value
        if token not in ("variable_end", "block_end"):
            continue
        text, statement = "".join(tag), token == "block_end"
        if statement and keyword in UNSUPPORTED_TAGS:
            raise TemplateSyntaxError(
                f"'{keyword}' is not supported in email templates: use include or blocks", line, name
            )
        if keyword in (STRUCTURE_TAGS if statement else STRUCTURE_NAMES):
            pieces.append(text)
        else:
            pieces.append(f"JINJATAG{len(tags)}X")
            tags.append(text)
        tag = []
    return "".join(pieces)


class HoldingBackLoader(BaseLoader):
    """Loads files for step 1, holding back per-recipient tags, and notes every file it loads so
    the compiled result knows when it is stale."""

    def __init__(self, folder: Path, lexer_env: Environment) -> None:
        self.files = FileSystemLoader(str(folder))
        self.lexer_env = lexer_env
        self.tags: list[str] = []
        self.uptodate: list[Callable[[], bool]] = []

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = self.files.get_source(environment, template)
        self.uptodate.append(uptodate)
        self.lexer_env.parse(source, template, filename)  # syntax errors, located in the file as written
        return hold_back(source, template, self.tags, self.lexer_env), filename, uptodate


# -- step 2: MJML, right to left where the language says so ------------------------------------

# MRML writes `direction:ltr` into every section and column unless told otherwise; the
# template's own <mj-attributes>, coming later, still win.
RTL_DEFAULTS = (
    '<mj-attributes><mj-wrapper direction="rtl" /><mj-section direction="rtl" />'
    '<mj-column direction="rtl" /><mj-text align="right" /></mj-attributes>'
)


def right_to_left(mjml: str, lang: str) -> str:
    """Give an MJML document `lang`/`dir` on its root and right-to-left defaults in its head."""
    root = re.search(r"<mjml\b([^>]*)>", mjml)
    if root is None:
        return mjml
    attributes = root.group(1)
    if not re.search(r"\bdir\s*=", attributes):
        attributes += ' dir="rtl"'
    if not re.search(r"\blang\s*=", attributes):
        attributes += f' lang="{lang}"'
    head = re.compile(r"<mj-head\b[^>]*>").search(mjml, root.end())
    if head:
        opening, rest = mjml[root.end() : head.end()] + RTL_DEFAULTS, mjml[head.end() :]
    else:
        opening, rest = f"<mj-head>{RTL_DEFAULTS}</mj-head>", mjml[root.end() :]
    return f"{mjml[: root.start()]}<mjml{attributes}>{opening}{rest}"


# -- step 3: Jinja templates over the compiled HTML and its text ---------------------------------


def put_back(compiled: str, tags: list[str]) -> str:
    """Jinja source from compiled output: placeholders become their tags again, and literal text
    that happens to contain Jinja delimiters (CSS, a `{% raw %}` block) stays literal."""
    parts = PLACEHOLDER.split(compiled)
    for i, part in enumerate(parts):
        if i % 2:
            parts[i] = tags[int(part)]
        elif any(d in part for d in JINJA_DELIMITERS):
            parts[i] = "{% raw %}" + part + "{% endraw %}"
    return "".join(parts)


def uncommented(html: str) -> str:
    """The HTML with each comment replaced by the placeholders in it: html2text skips comments, and
    MJML puts tags that stand between elements inside Outlook's conditional comments."""
    return COMMENT.sub(lambda comment: "".join(m.group() for m in PLACEHOLDER.finditer(comment.group())), html)


# A link as MRML writes it: <a ... href="URL" ...>TEXT</a>.
LINK = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')[^>]*>(.*?)</a\s*>""", re.DOTALL | re.IGNORECASE)
HEADING = re.compile(r"<(/?)h[1-6]\b", re.IGNORECASE)
TAG = re.compile(r"<[^>]*>")
# What html2text escapes for Markdown's sake (a backslash, "1." or "-" opening a line): prose needs none of it.
MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>])")


def plain_text(html: str, tags: list[str]) -> str:
    """The text part as prose, from the compiled HTML (placeholders for the `tags` and all): each
    link written `text (url)`, headings as paragraphs, no Markdown emphasis, escapes or hard-break
    spaces. html2text does the layout (paragraphs, lists, line breaks); what it would add for
    Markdown's sake is configured away or undone here."""

    def as_written(text: str) -> str:
        return " ".join(PLACEHOLDER.sub(lambda m: tags[int(m.group(1))], text).split())

    def link_as_text(link: re.Match[str]) -> str:
        """`text (url)`, or the URL alone when it is the text (or there is no text, as round an image)."""
        url, inner = link.group(1) if link.group(1) is not None else link.group(2), link.group(3)
        shown = as_written(TAG.sub("", inner))
        if not shown or shown in (as_written(url), as_written(url.removeprefix("mailto:"))):
            return f" {url} "
        return f"{inner.strip()} ({url})"

    maker = html2text.HTML2Text(bodywidth=0)
    maker.ignore_images = True
    maker.ignore_tables = True  # MJML lays out with tables; the text is what matters
    maker.ignore_emphasis = True
    maker.ignore_links = True  # every link with an href is already text
    maker.ul_item_mark = "-"
    text = maker.handle(HEADING.sub(r"<\1p", LINK.sub(link_as_text, html)))
    return "\n".join(MARKDOWN_ESCAPE.sub(r"\1", line).rstrip() for line in text.splitlines())


def tidy(pieces: tuple[str, ...]) -> tuple[str, ...]:
    """A derived plain text part as sent: no run of blank lines where an `{% if %}` left nothing,
    one line break at the end. Still in Jinja's pieces, unless blank lines had to be taken out or
    the text begins or ends with a piece of white space."""
    text = "".join(pieces)
    if "\n\n\n" in text or len(pieces) < 2 or not (pieces[0].strip() and pieces[-1].strip()):
        return (BLANK_LINES.sub("\n\n", text).strip() + "\n",)
    return (pieces[0].lstrip(), *pieces[1:-1], pieces[-1].rstrip() + "\n")


@dataclass
class CompiledEmail:
    """One template file compiled: what runs per recipient, and how to tell it is stale."""

    html: Template
    text: Template
    uptodate: list[Callable[[], bool]]
    checked_at: float = field(default_factory=time.monotonic)  # when its files were last found unchanged

    def fresh(self, trusted_for: float = 0.0) -> bool:
        """Whether none of its files changed; a check younger than `trusted_for` seconds stands."""
        now = time.monotonic()
        if now - self.checked_at < trusted_for:
            return True
        if all(check() for check in self.uptodate):
            self.checked_at = now
            return True
        return False


class Renderer:
    """Renders one step of one campaign for one customer from templates compiled once per file."""

    def __init__(self, config: Config, trusted_for: float = 0.0) -> None:
        """`trusted_for`: seconds a compiled file is used before its files are looked at again (a
        look is a stat of each file, per message); previews look every time."""
        self.config = config
        self.trusted_for = trusted_for
        self.folder = config.templates_path
        self.markup, self.plain, self.compiled = _shared(self.folder)
        self.files: dict[tuple[str, str], tuple[str, str | None]] = {}
        self.shared_subjects: dict[tuple[str, Any, Any, Any], str] = {}

    def template_file(self, name: str, locale: str, ext: str = "mjml") -> str | None:
        """NAME.<locale>.EXT, else NAME.EXT; None when neither exists."""
        for candidate in (f"{name}.{locale}.{ext}", f"{name}.{ext}"):
            if (self.folder / candidate).is_file():
                return candidate
        return None

    def subject_source(self, subject: Subject, locale: str) -> str:
        if isinstance(subject, str):
            return subject
        return subject.get(locale) or subject.get(self.config.default_locale) or next(iter(subject.values()))

    def render(self, template: str, subject: Subject, context: dict[str, Any]) -> RenderedEmail:
        """Raise TemplateError (located) on any problem, so a broken template never sends a blank.
        Rendering raises nothing else: whatever the data, a failure is this email's TemplateError."""
        html, text = self.body(template, context)
        locale = context.get("locale") or self.config.default_locale
        subject_text = self.subject(self.subject_source(subject, locale), context, f"subject of {template}")
        return RenderedEmail(subject_text, "".join(html), "".join(text), html_pieces=html, text_pieces=text)

    def body(self, template: str, context: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The HTML and the plain text of a template for one context, in pieces."""
        locale = context.get("locale") or self.config.default_locale
        mjml_name, text_name = self._files(template, locale)
        compiled = self.compile(mjml_name)
        html = self._run(compiled.html, mjml_name, context)
        if text_name:
            return html, self._run(self._load(self.plain, text_name), text_name, context, self.plain)
        return html, tidy(self._run(compiled.text, mjml_name, context))

    def subject(self, source: str, context: dict[str, Any], what: str) -> str:
        """One subject line; a problem is reported as the line of `what` (a Jinja string has no file).
        A subject that reads nothing of the customer (a newsletter's) is rendered once per language
        and time zone."""
        names = _names_read(self.plain, source)
        shared = names is not None and names <= SHARED_NAMES and context.get("brand") is self.config.brand_fields
        key = (source, context.get("locale"), context.get("direction"), context.get("timezone"))
        if shared and key in self.shared_subjects:
            return self.shared_subjects[key]
        line = " ".join(self._render_string(source, context, what).split())
        if shared:
            self.shared_subjects[key] = line
        return line

    def _files(self, template: str, locale: str) -> tuple[str, str | None]:
        """The MJML and text files of (template, locale), looked up once per Renderer (a tick)."""
        key = (template, locale)
        if key not in self.files:
            mjml_name = self.template_file(template, locale)
            if mjml_name is None:
                raise TemplateError(
                    [Problem(f"{self.folder}/{template}.mjml", 1, 1, f"template '{template}' does not exist")]
                )
            self.files[key] = (mjml_name, self.template_file(template, locale, "txt"))
        return self.files[key]

    def compile(self, name: str) -> CompiledEmail:
        """The compiled form of one MJML file, from the cache while none of its files changed."""
        key = (name, self._language(name))
        compiled = self.compiled.get(key)
        if compiled is None or not compiled.fresh(self.trusted_for):
            compiled = self.compiled[key] = self._compile(name)
        return compiled

    def _compile(self, name: str) -> CompiledEmail:
        loader = HoldingBackLoader(self.folder, self.markup)
        structure = _sandbox(loader, autoescape=False, cache_size=0)
        try:
            mjml = structure.get_template(name).render()
        except JinjaError as exc:
            raise self._error(exc, name) from None
        lang = self._language(name)
        if is_rtl(lang):
            mjml = right_to_left(mjml, lang)
        try:
            html = mjml2html(mjml, disable_comments=True)
        except Exception as exc:  # mrml reports its own error type
            raise TemplateError(
                [Problem(self.source_path(name), 1, 1, f"MJML: {exc}{HOLDING_BACK_HINT if loader.tags else ''}")]
            ) from None
        text = plain_text(uncommented(html), loader.tags)
        try:
            return CompiledEmail(
                html=self.markup.from_string(put_back(html, loader.tags)),
                text=self.plain.from_string(put_back(text, loader.tags)),
                uptodate=loader.uptodate,
            )
        except TemplateSyntaxError as exc:
            raise TemplateError(
                [
                    Problem(
                        self.source_path(name),
                        1,
                        1,
                        f"MJML dropped or moved part of a Jinja statement ({exc.message}){HOLDING_BACK_HINT}",
                    )
                ]
            ) from None

    def _language(self, name: str) -> str:
        """The language a file is written in: NAME.<locale>.mjml, else the default locale."""
        parts = name.split(".")
        return parts[-2] if len(parts) > 2 else self.config.default_locale

    def _run(
        self, template: Template, name: str, context: dict[str, Any], env: Environment | None = None
    ) -> tuple[str, ...]:
        """Render a template, in pieces; on failure, render the file the slow way (in `env`, the
        markup one unless said), which names the file and line the author wrote."""
        try:  # what Template.generate does, without its copy of the context and its generator around this one
            return tuple(template.root_render_func(template.new_context(context)))
        except Exception as exc:  # a template on a customer's data may fail in any way: that email fails
            self._render_file(env or self.markup, name, context)
            raise self._error(exc, name) from None

    def _load(self, env: Environment, name: str) -> Template:
        try:
            return env.get_template(name)
        except Exception as exc:
            raise self._error(exc, name) from None

    def _render_file(self, env: Environment, name: str, context: dict[str, Any]) -> str:
        try:
            return env.get_template(name).render(context)
        except Exception as exc:
            raise self._error(exc, name) from None

    def _error(self, exc: Exception, name: str) -> TemplateError:
        """A Jinja error as a problem located in the file the author wrote."""
        if isinstance(exc, TemplateNotFound):
            return TemplateError(
                [Problem(self.source_path(name), 1, 1, f"includes '{exc.name}', which does not exist")]
            )
        if isinstance(exc, TemplateSyntaxError):
            return TemplateError(
                [Problem(self.source_path(exc.name or name), exc.lineno or 1, 1, exc.message or str(exc))]
            )
        return TemplateError([Problem(self.source_path(name), _line_of(exc, name), 1, _reason(exc))])

    def _render_string(self, source: str, context: dict[str, Any], what: str) -> str:
        try:
            return _compiled_string(self.plain, source).render(context)
        except Exception as exc:
            line = exc.lineno if isinstance(exc, TemplateSyntaxError) else _line_of(exc, "<template>")
            raise TemplateError([Problem(what, line or 1, 1, _reason(exc))]) from None

    def source_path(self, name: str) -> str:
        """A template as the marketer knows it: relative to the project, like campaign files."""
        return display_path(self.folder / name, self.config.root)


@lru_cache(maxsize=16)
def _shared(
    folder: Path,
) -> tuple[Sandbox, Sandbox, dict[tuple[str, str], CompiledEmail]]:
    """One markup and one plain environment and one compiled cache per template folder, shared by
    every Renderer of the process: a daemon compiles each file once, not once per tick."""
    files = FileSystemLoader(str(folder))
    return _sandbox(files, autoescape=True), _sandbox(files, autoescape=False), {}


@lru_cache(maxsize=512)
def _compiled_string(env: Environment, source: str) -> Template:
    return env.from_string(source)


@lru_cache(maxsize=512)
def _names_read(env: Environment, source: str) -> frozenset[str] | None:
    """The names a Jinja string reads from its context; None when it is not Jinja (rendering it
    reports the error)."""
    try:
        return frozenset(meta.find_undeclared_variables(env.parse(source)))
    except TemplateSyntaxError:
        return None


def _reason(exc: Exception) -> str:
    """Jinja's own words for its errors; for anything else (a comparison of text with a number,
    a division by zero) what failed, since the author never wrote the Python it comes from."""
    if isinstance(exc, (JinjaError, TemplateError)):
        return str(exc)
    return f"cannot compute this with the data given ({type(exc).__name__}: {exc})"


def _line_of(exc: Exception, name: str) -> int:
    """The template line of a render-time error, from the traceback Jinja rewrites."""
    tb, line = exc.__traceback__, 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# -- rating buttons ----------------------------------------------------------------------------

# Inline styles on a table of links: what email clients (Outlook included) show as buttons. The table
# takes the column's width up to a button's worth a score, so eleven fit a phone and five stay buttons.
BUTTON_WIDTH = 48
RATING_TABLE = (
    '<table role="presentation" dir="{dir}" width="100%" align="center" border="0" cellpadding="0" cellspacing="0" '
    'style="width:100%;max-width:{max}px;margin:0 auto;border-collapse:separate;border-spacing:3px 0;">'
)
RATING_CELL = (
    '<td width="{share}%" align="center" bgcolor="{color}" style="border-radius:6px;background:{color};">'
    '<a href="{url}" style="display:block;padding:10px 0;font-family:Arial,Helvetica,sans-serif;font-size:15px;'
    'font-weight:bold;line-height:20px;color:#ffffff;text-decoration:none;text-align:center;">{score}</a></td>'
)
RATING_LABEL = '<td colspan="{span}" align="{align}" style="padding-top:6px;font-size:13px;color:#4b5563;">{text}</td>'


def rating_buttons(links: Mapping[str, Any], direction: str) -> Callable[..., str]:
    """`{{ rating_buttons() }}`: one button a score, each linking to its rating page (`links.rate`,
    read only when the buttons are shown); optional words under the two ends (`low="Not likely",
    high="Very likely"`) and a colour. In the plain text part, one line a score."""

    @pass_eval_context
    def render(eval_ctx: EvalContext, low: str = "", high: str = "", color: str = "#2563eb") -> str:
        urls: Mapping[int, str] = links.get("rate") or {}
        if not eval_ctx.autoescape:
            return "\n".join(f"{score}: {url}" for score, url in urls.items())
        cells = "".join(
            RATING_CELL.format(share=100 // max(len(urls), 1), color=escape(color), url=escape(url), score=score)
            for score, url in urls.items()
        )
        labels = ""
        if low or high:
            start, end = ("right", "left") if direction == "rtl" else ("left", "right")
            half = (len(urls) + 1) // 2
            first = RATING_LABEL.format(span=half, align=start, text=escape(low))
            last = RATING_LABEL.format(span=len(urls) - half, align=end, text=escape(high))
            labels = f"<tr>{first}{last}</tr>"
        table = RATING_TABLE.format(dir=direction, max=BUTTON_WIDTH * len(urls))
        return Markup(f"{table}<tr>{cells}</tr>{labels}</table>")

    return render


def template_context(
    config: Config,
    campaign: Campaign,
    step: int,
    customer: dict[str, Any],
    event: Mapping[str, Any] | None,
    links: Mapping[str, Any],
) -> dict[str, Any]:
    """What every template sees (campaigns.md, "Steps and templates"). An email to the team (a
    campaign with `recipient:`) is in the team's language and time zone, and also sees the
    customer's last `orders` and the `feedback` it is about (filled in by the tick)."""
    requested: str | None = customer.get("locale")
    locale = requested if requested in config.locales else config.default_locale
    timezone = customer.get("timezone") or config.timezone
    team: dict[str, Any] = {}
    if campaign.recipient:
        locale, timezone = config.team.locale or config.default_locale, config.timezone
        rated = event if event is not None and event.get("name") == "feedback_submitted" else None
        team = {"orders": [], "feedback": dict(rated.get("properties") or {}, at=rated.get("at")) if rated else None}
    direction = "rtl" if is_rtl(locale) else "ltr"
    return {
        **team,
        "customer": Fields("customer", customer),
        "event": None
        if event is None
        else Fields("event", {**event, "properties": Fields("event.properties", event.get("properties") or {})}),
        "campaign": {
            "name": campaign.name,
            "description": campaign.description,
            "type": campaign.type,
            "topic": campaign.topic,
        },
        "step": {"number": step, "of": len(campaign.steps)},
        "brand": config.brand_fields,
        "links": links,
        "locale": locale,
        "direction": direction,
        "timezone": timezone,
        "rating_buttons": rating_buttons(links, direction),
    }
