"""The campaign language of campaigns/*.yaml, as pydantic models that say what is wrong and where."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.campaigns.typecheck import condition_type_problems
from engine.config.durations import Duration, Span, Wait, format_duration, parse_duration
from engine.config.settings import Config, Email, TimeWindow
from engine.config.source import KeyPath, Located, load_located
from engine.errors import CampaignError, Problem, display_path

STAGES = ("prospect", "current", "loyal", "lost")
RISKS = ("green", "yellow", "red")
OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "within_last", "within_next")


def _one_value(value: Any) -> Any:
    if isinstance(value, list):
        raise ValueError("takes one value: for a choice of several, use `in: [a, b]`")
    if isinstance(value, dict) or value is None:
        raise ValueError("takes one value: text, a number, true or false, or a date")
    return value


Scalar = Annotated[bool | int | float | str | datetime, BeforeValidator(_one_value)]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`: did you mean 'x'?` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f": did you mean '{close[0]}'?" if close else ""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Comparison(Strict):
    """Operators on one value: an attribute, or an event property under `where:`."""

    equals: Scalar | None = None
    not_equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None
    exists: bool | None = None
    within_last: Span | None = None
    within_next: Span | None = None

    def operators(self) -> dict[str, Any]:
        """The operators actually written, by their YAML names."""
        return {
            (field.alias or name): getattr(self, name)
            for name, field in type(self).model_fields.items()
            if getattr(self, name) is not None
        }


def _shorthand_equals(value: Any) -> Any:
    """`where: {plan: pro}` means `where: {plan: {equals: pro}}`."""
    return value if isinstance(value, dict) else {"equals": value}


Where = dict[str, Comparison]


def _where(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {k: _shorthand_equals(v) for k, v in values.items()}


class Condition(Comparison):
    """One audience condition: exactly one of attribute, event, stage, risk, subscribed, any, not.
    An attribute condition takes one operator of Comparison."""

    attribute: str | None = None
    event: str | None = None
    stage: Literal["prospect", "current", "loyal", "lost"] | None = None
    risk: Literal["green", "yellow", "red"] | None = None
    subscribed: str | None = None
    any: list[Condition] | None = Field(None, min_length=1)
    not_: Condition | None = Field(None, alias="not")
    # event history
    at_least: int | None = Field(None, ge=0)
    at_most: int | None = Field(None, ge=0)
    within: Span | None = None
    where: Where | None = None

    _where = field_validator("where", mode="before")(_where)

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> Condition:
        kinds = [
            k
            for k in ("attribute", "event", "stage", "risk", "subscribed", "any", "not_")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a condition names exactly one of attribute, event, stage, risk, "
                f"subscribed, any, not (found {', '.join(kinds) or 'none'})"
            )
        operators = self.comparison().operators()
        if self.attribute is not None and len(operators) != 1:
            raise ValueError(
                f"an attribute condition takes exactly one operator (found {', '.join(operators) or 'none'}): "
                f"one of {', '.join(OPERATORS)}"
            )
        if self.attribute is None and operators:
            raise ValueError(f"operators like {next(iter(operators))} go with `attribute:`")
        history = (self.at_least, self.at_most, self.within, self.where)
        if self.event is None and any(v is not None for v in history):
            raise ValueError("at_least, at_most, within and where go with `event:`")
        if self.subscribed is not None:
            check_topic(self.subscribed, info)
        return self

    def comparison(self) -> Comparison:
        return Comparison(**{k: getattr(self, k) for k in Comparison.model_fields})


def check_topic(topic: str, info: ValidationInfo) -> str:
    topics = (info.context or {}).get("topics")
    if topics is not None and topic not in topics:
        raise ValueError(
            f"topic '{topic}' is not declared under topics: in config.yaml"
            + (did_you_mean(topic, topics) or f" (declared: {', '.join(sorted(topics)) or 'none'})")
        )
    return topic


class Inactivity(Strict):
    event: str | None = None  # none: any event counts as activity
    for_: Span = Field(alias="for", description="how long without the event, like for: 30d")


class DateTrigger(Strict):
    attribute: str = Field(description="the customer attribute that holds the date, like attribute: birthday")
    offset: Duration = timedelta(0)
    anniversary: bool = False


class Trigger(Strict):
    """Exactly one kind: event, inactivity, date, schedule (cron) or at (once)."""

    event: str | None = None
    inactivity: Inactivity | None = None
    date: DateTrigger | None = None
    schedule: str | None = None
    at: datetime | None = None
    where: Where | None = None  # last, so that its check sees the trigger's kind

    _where = field_validator("where", mode="before")(_where)

    @field_validator("where")
    @classmethod
    def _on_an_event(cls, value: Where | None, info: ValidationInfo) -> Where | None:
        if value is not None and info.data.get("event") is None:
            raise ValueError("is only for an `event:` trigger: it filters the event's properties")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"'{value}' is not a cron expression (like \"0 9 * * MON\")")
        return value

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        kinds = [k for k in ("event", "inactivity", "date", "schedule", "at") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a trigger has exactly one of event, inactivity, date, schedule, at "
                f"(found {', '.join(kinds) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return (
            "schedule"
            if self.at is not None
            else next(k for k in ("event", "inactivity", "date", "schedule") if getattr(self, k) is not None)
        )


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty: write the subject line")
    return value


def _locale(key: str, info: ValidationInfo) -> str:
    """A key of a subject map is a locale of config.yaml; a step's key there was indented too far."""
    locales = (info.context or {}).get("locales")
    if locales is None or key in locales:
        return key
    if key in Step.model_fields or key in Variant.model_fields:
        raise ValueError(f"'{key}' is not a locale: is it indented under subject: by mistake? It belongs to the step")
    hint = did_you_mean(key, locales) or f" (locales: {', '.join(locales)})"
    raise ValueError(f"'{key}' is not one of the locales in config.yaml{hint}")


def _default_covered(subjects: dict[str, str], info: ValidationInfo) -> dict[str, str]:
    default = (info.context or {}).get("default_locale")
    if default is not None and default not in subjects:
        raise ValueError(
            f"the default locale '{default}' is missing: add `{default}: ...`, the subject for every "
            "customer whose own locale has none"
        )
    return subjects


Text = Annotated[str, AfterValidator(_text)]
SubjectMap = Annotated[dict[Annotated[str, AfterValidator(_locale)], Text], AfterValidator(_default_covered)]
# One subject for every locale, or a map of locale: subject; tagged so each shape gets its own message.
Subject = Annotated[
    Annotated[Text, Tag("[one]")] | Annotated[SubjectMap, Tag("[by locale]")],
    Discriminator(lambda value: "[by locale]" if isinstance(value, dict) else "[one]"),
]


def check_template(name: str, info: ValidationInfo) -> str:
    """The template a step names exists in every locale (NAME.mjml, or NAME.<locale>.mjml)."""
    templates: Templates | None = (info.context or {}).get("templates")
    return templates.check(name) if templates is not None else name


TemplateName = Annotated[str, AfterValidator(check_template)]


class Variant(Strict):
    name: str | None = None
    template: TemplateName
    subject: Subject
    weight: float = Field(1, gt=0, allow_inf_nan=False)


class Step(Strict):
    template: TemplateName | None = None
    subject: Subject | None = None
    variants: list[Variant] | None = None
    delay: Wait = timedelta(0)
    audience: list[Condition] = []

    @model_validator(mode="after")
    def _content(self) -> Step:
        if self.variants is not None:
            if self.template is not None or self.subject is not None:
                raise ValueError("a step has either `variants:` or `template:` and `subject:`, not both")
            if len(self.variants) < 2:
                raise ValueError("`variants:` needs at least two variants")
            names = [v.name or v.template for v in self.variants]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(
                    f"two variants are both called '{twice[0]}', so the report could not tell them apart: "
                    "give each a different `name:`"
                )
        elif self.template is None or self.subject is None:
            raise ValueError("a step needs `template:` and `subject:` (or `variants:`)")
        return self

    def choices(self) -> list[Variant]:
        """The variants of an A/B step, or the single content of a plain one (made once: every
        message composed asks)."""
        return self.contents

    @cached_property
    def contents(self) -> list[Variant]:
        if self.variants is None:
            return [Variant(name=None, template=self.template, subject=self.subject)]
        return [v if v.name else v.model_copy(update={"name": v.template}) for v in self.variants]


class ExitRule(Strict):
    event: str = Field(description="the event that ends the sequence, like - event: purchase")
    where: Where | None = None

    _where = field_validator("where", mode="before")(_where)


class Goal(Strict):
    event: str = Field(description="the event that counts as a conversion, like event: purchase")
    within: Span = Field(description="how long after a send a conversion counts, like within: 7d")


def _percent(value: Any) -> float:
    text = str(value).strip()
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        raise ValueError(f"'{value}' is not a share: write a percentage like 10%") from None
    if not 0 <= number < 100:
        raise ValueError(f"'{value}' is not a share between 0% and 100%: write one like 10%")
    if not text.endswith("%") and 0 < number < 1:
        raise ValueError(f"'{value}' is ambiguous: write {number * 100:g}% for that share, or {text}% if you mean it")
    return number


class Templates:
    """The templates folder as campaigns name it: NAME for NAME.mjml and NAME.<locale>.mjml."""

    def __init__(self, config: Config):
        self.folder = config.templates_path
        self.shown = display_path(self.folder, config.root)
        self.locales = config.locales
        files = sorted(self.folder.glob("*.mjml")) if self.folder.is_dir() else []
        self.names = {p.name.split(".")[0] for p in files if not p.name.startswith("_")}

    def check(self, name: str) -> str:
        if name.endswith(".mjml"):
            raise ValueError(f"write the template's name without .mjml: template: {name.removesuffix('.mjml')}")
        missing = [locale for locale in self.locales if not any(self._exists(f) for f in (f"{name}.{locale}", name))]
        if len(missing) == len(self.locales):
            raise ValueError(
                f"template '{name}' does not exist: there is no {self.shown}/{name}.mjml"
                + did_you_mean(name, self.names)
            )
        if missing:
            raise ValueError(
                f"template '{name}' does not exist in {', '.join(missing)}: add {self.shown}/{name}.mjml "
                f"(or {name}.{missing[0]}.mjml)"
            )
        return name

    def _exists(self, stem: str) -> bool:
        return (self.folder / f"{stem}.mjml").is_file()


class Campaign(Strict):
    # What a marketer meant by a key the campaign does not know (read by engine/config/source.py).
    key_hints: ClassVar[dict[str, str]] = {
        key: f"'{key}' belongs to a step: indent it under an item of steps:"
        for key in ("template", "subject", "delay", "variants")
    } | {"when": "the trigger is written `trigger:` (event, inactivity, date, schedule or at)"}

    name: str = Field(max_length=100)
    description: str = ""
    type: Literal["marketing", "transactional"] = "marketing"
    topic: str | None = Field(None, validate_default=True)
    priority: int = 0
    trigger: Trigger = Field(description="what makes a customer enter, like trigger: {event: signed_up}")
    audience: list[Condition] = []
    steps: list[Step] = Field(min_length=1, description="the messages to send, each with template: and subject:")
    exit: list[ExitRule] = []
    reentry: Literal["never", "always"] | Duration = "always"
    send_window: TimeWindow | None = None
    expire_after: Span = timedelta(days=3)
    goal: Goal | None = None
    holdout: float = 0.0
    recipient: Email | None = None
    source: str = Field("", exclude=True)
    # The file as written, so that a problem found later (a subject's template, a duplicate
    # name) points at the line of the campaign file it comes from.
    _located: Located | None = PrivateAttr(None)

    _holdout = field_validator("holdout", mode="before")(_percent)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
            suggestion = "_".join("".join(c if c.isascii() and c.isalnum() else " " for c in value).split()).lower()
            raise ValueError(
                f"'{value}' may hold only letters, digits, _ and -" + (f": like {suggestion}" if suggestion else "")
            )
        return value

    @field_validator("reentry", mode="before")
    @classmethod
    def _reentry(cls, value: Any) -> Any:
        if value in ("never", "always"):
            return value
        try:
            window = parse_duration(value)
        except ValueError:
            raise ValueError(f"'{value}' is not never, always or a duration like 30d") from None
        if window <= timedelta(0):
            raise ValueError(f"'{value}' is no window: write always, or a duration like 30d")
        return window

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("type") == "marketing":
                raise ValueError("a marketing campaign needs a `topic:` (customers unsubscribe by topic)")
            return None
        return check_topic(value, info)

    @field_validator("expire_after")
    @classmethod
    def _outlives_a_tick(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        interval = (info.context or {}).get("interval")
        if interval is not None and value < interval:
            raise ValueError(
                f"'{format_duration(value)}' is shorter than the scheduler's interval "
                f"({format_duration(interval)}): a due step could expire before a tick sends it"
            )
        return value

    @property
    def marketing(self) -> bool:
        return self.type == "marketing"

    def problem(self, path: KeyPath, message: str) -> Problem:
        """A problem at `path` of the campaign file, like ("steps", 0, "subject", "ar"); on line 1
        for what the file does not write (a name taken from the file's stem)."""
        if self._located is not None and tuple(path) in self._located.positions:
            return self._located.problem(path, message)
        return Problem(self.source, 1, 1, message)


def load_campaigns(config: Config) -> list[Campaign]:
    """Every campaign of campaigns/, or a CampaignError listing every problem in every file."""
    campaigns, problems = check_campaigns(config)
    if problems:
        raise CampaignError(problems)
    return campaigns


def check_campaigns(config: Config) -> tuple[list[Campaign], list[Problem]]:
    """The campaigns that are valid, and every problem of the others: one bad file hides nothing
    in another, and `validate` can go on to check the templates of the good ones."""
    folder = config.campaigns_path
    if not folder.is_dir():
        return [], [Problem(str(folder), 1, 1, "the campaigns folder does not exist")]
    campaigns: list[Campaign] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}  # campaign name: the file that has it
    context = _context(config)
    for path in sorted(folder.glob("*.y*ml")):
        campaign, file_problems = load_campaign(path, config, display_path(path, config.root), context)
        problems += file_problems
        if campaign is None:
            continue
        if campaign.name in seen:
            problems.append(
                campaign.problem(("name",), f"campaign name '{campaign.name}' is already used by {seen[campaign.name]}")
            )
            continue
        seen[campaign.name] = campaign.source
        campaigns.append(campaign)
    return campaigns, problems


def _context(config: Config) -> dict[str, Any]:
    """What a campaign is checked against: the names config.yaml declares and the templates folder."""
    return {
        "topics": set(config.topics),
        "locales": config.locales,
        "default_locale": config.default_locale,
        "interval": config.scheduler.interval,
        "templates": Templates(config),
    }


def load_campaign(
    path: Path, config: Config, display: str | None = None, context: dict[str, Any] | None = None
) -> tuple[Campaign | None, list[Problem]]:
    located, problems = load_located(path, display, expected="a campaign: keys like name, trigger and steps")
    if located is None:
        return None, problems
    located.data = {"name": path.stem, **located.data, "source": located.file}
    campaign, problems = located.validate(Campaign, context=context or _context(config))
    if campaign is None:
        return None, problems
    campaign._located = located
    return campaign, problems + condition_type_problems(located, config.data_model)
