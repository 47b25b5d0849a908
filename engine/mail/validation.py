"""`lifecycle validate`: config, every campaign and every template, with every problem located.

Templates are checked twice over. Statically, every `customer.NAME` and `event.properties.NAME`
in every file and subject, in every branch, must be a known name (samples.py says which are
known): a misspelling is reported with the name it resembles. Then every step is rendered in every
locale with typed sample data, which finds what only running shows (a comparison of text with a
number, a filter that cannot read its value, a loop beyond the budget). A problem in a subject is
located at the subject's line in the campaign file, naming its locale."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from markupsafe import escape

from engine.campaigns.language import Campaign, Variant, check_campaigns
from engine.config.public_url import public_url_problems
from engine.config.settings import Config, load_config
from engine.config.source import KeyPath, Located, load_located
from engine.errors import Problem, ProblemsError, TemplateError, display_path
from engine.mail.dkim import load_keys
from engine.mail.mjml_elements import mjml_problems
from engine.mail.rendering import Renderer, did_you_mean, template_context
from engine.mail.samples import CUSTOMER_FIELDS, EVENT_FIELDS, Samples, build_samples

# A name used on template data: (what it is on: "customer", "event" or "event.properties", name, line).
Use = tuple[str, str, int]
DICT_METHODS = set(dir(dict))


def validate_all(config_file: str | Path | None) -> tuple[Config | None, list[Campaign], list[Problem]]:
    try:
        config = load_config(config_file)
    except ProblemsError as exc:
        return None, [], exc.problems
    problems: list[Problem] = []
    try:
        config.secret_keys()
    except ProblemsError as exc:
        problems += exc.problems
    campaigns, campaign_problems = check_campaigns(config)
    problems += public_url_problems(config, any(c.marketing for c in campaigns))
    problems += load_keys(config)[1]
    problems += campaign_problems + check_templates(config, campaigns)
    return config, campaigns, problems


def names_note(config: Config) -> str | None:
    """What `validate` says once when config.yaml declares no data model."""
    if config.data_model.declared:
        return None
    return (
        "note: config.yaml declares no attributes: or events:, so the names templates use are checked "
        "against the sample data and the names found in the store"
    )


def check_templates(config: Config, campaigns: list[Campaign], now: datetime | None = None) -> list[Problem]:
    """Every name every template and subject uses, then every step rendered in every locale."""
    now = now or datetime.now(UTC)
    checker = _Checker(config, campaigns, now)
    return checker.run()


class _Checker:
    def __init__(self, config: Config, campaigns: list[Campaign], now: datetime) -> None:
        self.config, self.campaigns, self.now = config, campaigns, now
        self.renderer = Renderer(config)
        self.parsed: dict[str, nodes.Template | None] = {}
        self.mjml: dict[str, list[Problem]] = {}
        self.problems: dict[tuple[str, int], list[Problem]] = {}
        uses = {c.name: list(self._campaign_uses(c)) for c in campaigns}
        attributes = {name for used in uses.values() for on, name, *_ in used if on == "customer"}
        properties: dict[str, set[str]] = {}
        for campaign in campaigns:
            if campaign.trigger.event:
                found = {name for on, name, *_ in uses[campaign.name] if on == "event.properties"}
                properties.setdefault(campaign.trigger.event, set()).update(found)
        self.samples: Samples = build_samples(config, now, attributes, properties)
        self.links: dict[str, Any] = {
            "preferences": f"{config.public_url}/preferences/TOKEN-P",
            "unsubscribe": f"{config.public_url}/unsubscribe/TOKEN-U",
            "confirm": f"{config.public_url}/confirm/TOKEN-C",
        }
        self.send_links: dict[bool, dict[str, Any]] = {  # as compose.send_links, by whether the team gets it
            False: {"rate": {n: f"{config.public_url}/feedback/TOKEN-R/{n}" for n in config.feedback.scores()}},
            True: {
                "acknowledge": f"{config.public_url}/alerts/TOKEN-A",
                "customer": f"{config.public_url}/studio/customers/ID",
            },
        }

    def run(self) -> list[Problem]:
        for campaign in self.campaigns:
            located, _ = load_located(self._campaign_file(campaign), campaign.source)
            for number, step in enumerate(campaign.steps, start=1):
                for index, content in enumerate(step.choices()):
                    path: KeyPath = ("steps", number - 1) + (("variants", index) if step.variants else ())
                    self._check_content(campaign, number, content, located, path)
        return [p for found in self.problems.values() for p in found]

    def _add(self, problem: Problem, first: bool = False) -> None:
        """One problem a line: a name found unknown statically is not reported again by rendering."""
        found = self.problems.setdefault((problem.file, problem.line), [])
        if (first or not found) and str(problem) not in {str(p) for p in found}:
            found.append(problem)

    def _check_content(
        self, campaign: Campaign, step: int, content: Variant, located: Located | None, path: KeyPath
    ) -> None:
        for locale in self.config.locales:
            for file in self._files(content.template, locale):
                for problem in self._unknown_names(campaign, self._uses_in(file), self.renderer.source_path(file)):
                    self._add(problem, first=True)
                for problem in self._mjml(file):
                    self._add(problem, first=True)
            key = self._subject_key(content.subject, locale)
            what = "subject" if key is None else f"subject ({key})"
            where = self._subject_problem(located, campaign, (*path, "subject") + ((key,) if key else ()), what)
            source = self.renderer.subject_source(content.subject, locale)
            for problem in self._unknown_names(campaign, self._subject_uses(source), ""):
                self._add(where(problem.message), first=True)
            context = template_context(
                self.config,
                campaign,
                step,
                self.samples.customer(locale),
                self.samples.event(campaign.trigger.event, self.now),
                {**self.links, **self.send_links[campaign.recipient is not None]},
            )
            context["locale"] = locale
            try:
                html, _ = self.renderer.body(content.template, context)
                if campaign.marketing:
                    for problem in self._compliance(content.template, locale, "".join(html)):
                        self._add(problem)
            except TemplateError as exc:
                for problem in exc.problems:
                    self._add(problem)
            try:
                self.renderer.subject(source, context, what)
            except TemplateError as exc:
                for problem in exc.problems:
                    self._add(where(problem.message))

    # -- names --------------------------------------------------------------------------------

    def _campaign_uses(self, campaign: Campaign) -> Iterator[Use]:
        for step in campaign.steps:
            for content in step.choices():
                for locale in self.config.locales:
                    for file in self._files(content.template, locale):
                        yield from self._uses_in(file)
                    yield from self._subject_uses(self.renderer.subject_source(content.subject, locale))

    def _unknown_names(self, campaign: Campaign, uses: Iterator[Use], file: str) -> Iterator[Problem]:
        customer = self.samples.attribute_names() | set(CUSTOMER_FIELDS)
        event = campaign.trigger.event
        properties = set(self.samples.properties.get(event, {})) if event else set()
        known = {"customer": customer, "event": set(EVENT_FIELDS), "event.properties": properties}
        for on, name, line in uses:
            if on == "event" and event is None:
                continue  # `event` is None for this campaign: rendering says so
            if name not in known[on] and name not in DICT_METHODS:
                yield Problem(file, line, 1, f"{on}.{name} is undefined{did_you_mean(name, known[on])}")

    def _files(self, template: str, locale: str) -> list[str]:
        """The template's MJML and text files and every file they extend or include."""
        names = [
            n for n in (self.renderer.template_file(template, locale, ext) for ext in ("mjml", "txt")) if n is not None
        ]
        seen: list[str] = []
        while names:
            name = names.pop()
            if name in seen:
                continue
            seen.append(name)
            tree = self._parse(name)
            if tree is not None:
                for node in tree.find_all((nodes.Extends, nodes.Include)):
                    target = node.template if isinstance(node, (nodes.Extends, nodes.Include)) else None
                    if isinstance(target, nodes.Const) and isinstance(target.value, str):
                        names.append(target.value)
        return seen

    def _mjml(self, name: str) -> list[Problem]:
        """Unknown MJML elements and attributes of one file, found once per file."""
        if name not in self.mjml:
            try:
                source = (self.renderer.folder / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                source = ""
            self.mjml[name] = (
                list(mjml_problems(source, self.renderer.source_path(name))) if name.endswith(".mjml") else []
            )
        return self.mjml[name]

    def _parse(self, name: str) -> nodes.Template | None:
        """A template file's syntax tree; None when it does not parse (rendering reports that)."""
        if name not in self.parsed:
            try:
                source = (self.renderer.folder / name).read_text(encoding="utf-8")
                self.parsed[name] = self.renderer.markup.parse(source, name)
            except (OSError, UnicodeDecodeError, TemplateSyntaxError):
                self.parsed[name] = None
        return self.parsed[name]

    def _uses_in(self, file: str) -> Iterator[Use]:
        tree = self._parse(file)
        return _uses(tree) if tree is not None else iter(())

    def _subject_uses(self, source: str) -> Iterator[Use]:
        try:
            return _uses(self.renderer.plain.parse(source))
        except TemplateSyntaxError:
            return iter(())

    # -- locations ----------------------------------------------------------------------------

    def _campaign_file(self, campaign: Campaign) -> Path:
        path = Path(campaign.source)
        return path if path.is_absolute() else self.config.root / path

    def _subject_key(self, subject: str | dict[str, str], locale: str) -> str | None:
        """The key of a subject map that `locale` uses (renderer.subject_source), None for a string."""
        if isinstance(subject, str):
            return None
        return next(k for k in (locale, self.config.default_locale, *subject) if k in subject)

    @staticmethod
    def _subject_problem(located: Located | None, campaign: Campaign, path: KeyPath, what: str) -> Any:
        def where(message: str) -> Problem:
            if located is None:
                return Problem(campaign.source, 1, 1, f"{what}: {message}")
            return located.problem(path, f"{what}: {message}")

        return where

    def _compliance(self, template: str, locale: str, html: str) -> list[Problem]:
        """What every marketing email must carry: a way out (unsubscribe or preferences) and the
        brand's postal address."""
        config, renderer, links = self.config, self.renderer, self.links
        file = display_path(renderer.folder / (renderer.template_file(template, locale) or template), config.root)
        missing = []
        if not (links["unsubscribe"] in html or links["preferences"] in html):
            missing.append("links.unsubscribe or links.preferences link")
        if config.brand.address and str(escape(config.brand.address)) not in html:
            missing.append("brand.address (the postal address the footer must show)")
        return [Problem(file, 1, 1, f"marketing template '{template}' ({locale}) has no {what}") for what in missing]


def _uses(tree: nodes.Template) -> Iterator[Use]:
    """`customer.NAME`, `customer['NAME']`, `event.NAME` and `event.properties.NAME` in a template."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, (nodes.Getattr, nodes.Getitem))
        name = _key(node)
        on = _owner(node.node)
        if name is not None and on is not None:
            yield on, name, node.lineno


def _key(node: nodes.Getattr | nodes.Getitem) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def _owner(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name) and node.name in ("customer", "event"):
        return node.name
    if isinstance(node, (nodes.Getattr, nodes.Getitem)) and _key(node) == "properties" and _owner(node.node) == "event":
        return "event.properties"
    return None


def sample_event(campaign: Campaign, config: Config) -> dict[str, Any] | None:
    """The trigger event a template sees when a customer has none: typed sample properties."""
    now = datetime.now(UTC)
    return build_samples(config, now).event(campaign.trigger.event, now)
