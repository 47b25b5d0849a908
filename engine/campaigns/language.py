"""The campaign language of campaigns/*.yaml, as pydantic models that say what is wrong and where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engine.campaigns.typecheck import condition_type_problems
from engine.config.durations import Duration, parse_duration
from engine.config.settings import Config, TimeWindow
from engine.config.source import load_located
from engine.errors import CampaignError, Problem, display_path

STAGES = ("prospect", "current", "loyal", "lost")
RISKS = ("green", "yellow", "red")
OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "within_last", "within_next")
Scalar = bool | int | float | str | datetime


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
    within_last: Duration | None = None
    within_next: Duration | None = None

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
    any: list[Condition] | None = None
    not_: Condition | None = Field(None, alias="not")
    # event history
    at_least: int | None = Field(None, ge=0)
    at_most: int | None = Field(None, ge=0)
    within: Duration | None = None
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
            raise ValueError(f"an attribute condition takes exactly one operator of {', '.join(OPERATORS)}")
        if self.attribute is None and operators:
            raise ValueError(f"operators like {next(iter(operators))} go with `attribute:`")
        history = (self.at_least, self.at_most, self.within, self.where)
        if self.event is None and any(v is not None for v in history):
            raise ValueError("at_least, at_most, within and where go with `event:`")
        topics = (info.context or {}).get("topics")
        if self.subscribed is not None and topics is not None and self.subscribed not in topics:
            raise ValueError(f"topic '{self.subscribed}' is not declared under topics: in config.yaml")
        return self

    def comparison(self) -> Comparison:
        return Comparison(**{k: getattr(self, k) for k in Comparison.model_fields})


class Inactivity(Strict):
    event: str | None = None  # none: any event counts as activity
    for_: Duration = Field(alias="for")


class DateTrigger(Strict):
    attribute: str
    offset: Duration = timedelta(0)
    anniversary: bool = False


class Trigger(Strict):
    """Exactly one kind: event, inactivity, date, schedule (cron) or at (once)."""

    event: str | None = None
    where: Where | None = None
    inactivity: Inactivity | None = None
    date: DateTrigger | None = None
    schedule: str | None = None
    at: datetime | None = None

    _where = field_validator("where", mode="before")(_where)

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
        if self.where is not None and self.event is None:
            raise ValueError("`where:` filters the properties of an `event:` trigger")
        return self

    @property
    def kind(self) -> str:
        return (
            "schedule"
            if self.at is not None
            else next(k for k in ("event", "inactivity", "date", "schedule") if getattr(self, k) is not None)
        )


Subject = str | dict[str, str]


class Variant(Strict):
    name: str | None = None
    template: str
    subject: Subject
    weight: float = Field(1, gt=0)


class Step(Strict):
    template: str | None = None
    subject: Subject | None = None
    variants: list[Variant] | None = None
    delay: Duration = timedelta(0)
    audience: list[Condition] = []

    @model_validator(mode="after")
    def _content(self) -> Step:
        if self.variants is not None:
            if self.template is not None or self.subject is not None:
                raise ValueError("a step has either `variants:` or `template:` and `subject:`, not both")
            if len(self.variants) < 2:
                raise ValueError("`variants:` needs at least two variants")
        elif self.template is None or self.subject is None:
            raise ValueError("a step needs `template:` and `subject:` (or `variants:`)")
        return self

    def choices(self) -> list[Variant]:
        """The variants of an A/B step, or the single content of a plain one."""
        if self.variants is None:
            return [Variant(name=None, template=self.template, subject=self.subject)]
        return [v if v.name else v.model_copy(update={"name": v.template}) for v in self.variants]


class ExitRule(Strict):
    event: str
    where: Where | None = None

    _where = field_validator("where", mode="before")(_where)


class Goal(Strict):
    event: str
    within: Duration


def _percent(value: Any) -> float:
    text = str(value).strip()
    number = float(text.rstrip("%"))
    if not 0 <= number < 100:
        raise ValueError("holdout is a share between 0% and 100%, like 10%")
    return number


class Campaign(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", max_length=100)
    description: str = ""
    type: Literal["marketing", "transactional"] = "marketing"
    topic: str | None = None
    priority: int = 0
    trigger: Trigger
    audience: list[Condition] = []
    steps: list[Step] = Field(min_length=1)
    exit: list[ExitRule] = []
    reentry: Literal["never", "always"] | Duration = "always"
    send_window: TimeWindow | None = None
    expire_after: Duration = timedelta(days=3)
    goal: Goal | None = None
    holdout: float = 0.0
    recipient: str | None = None
    source: str = Field("", exclude=True)
    # Where the name was written (or line 1 for a name taken from the file's stem).
    name_position: tuple[int, int] = Field((1, 1), exclude=True)

    _holdout = field_validator("holdout", mode="before")(_percent)

    @field_validator("reentry", mode="before")
    @classmethod
    def _reentry(cls, value: Any) -> Any:
        if value in ("never", "always"):
            return value
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(f"reentry is never, always or a duration like 30d (not '{value}')") from None

    @field_validator("topic")
    @classmethod
    def _topic_declared(cls, value: str | None, info: ValidationInfo) -> str | None:
        topics = (info.context or {}).get("topics")
        if value is not None and topics is not None and value not in topics:
            raise ValueError(
                f"topic '{value}' is not declared under topics: in config.yaml "
                f"(declared: {', '.join(topics) or 'none'})"
            )
        return value

    @model_validator(mode="after")
    def _marketing_has_topic(self) -> Campaign:
        if self.type == "marketing" and self.topic is None:
            raise ValueError("a marketing campaign needs a `topic:` (customers unsubscribe by topic)")
        return self

    @property
    def marketing(self) -> bool:
        return self.type == "marketing"


def load_campaigns(config: Config) -> list[Campaign]:
    """Every campaign of campaigns/, or a CampaignError listing every problem in every file."""
    folder = config.campaigns_path
    if not folder.is_dir():
        raise CampaignError([Problem(str(folder), 1, 1, "the campaigns folder does not exist")])
    campaigns: list[Campaign] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}  # campaign name: the file that has it
    for path in sorted(folder.glob("*.y*ml")):
        campaign, file_problems = load_campaign(path, config, display=display_path(path, config.root))
        problems += file_problems
        if campaign is None:
            continue
        if campaign.name in seen:
            line, column = campaign.name_position
            problems.append(
                Problem(
                    campaign.source,
                    line,
                    column,
                    f"campaign name '{campaign.name}' is already used by {seen[campaign.name]}",
                )
            )
            continue
        seen[campaign.name] = campaign.source
        campaigns.append(campaign)
    if problems:
        raise CampaignError(problems)
    return campaigns


def load_campaign(path: Path, config: Config, display: str | None = None) -> tuple[Campaign | None, list[Problem]]:
    located, problems = load_located(path, display)
    if located is None:
        return None, problems
    if not isinstance(located.data, dict):
        return None, [located.problem((), "a campaign file is a mapping of keys like name, trigger, steps")]
    located.data = {
        "name": path.stem,
        **located.data,
        "source": located.file,
        "name_position": located.positions.get(("name",), (1, 1)),
    }
    campaign, problems = located.validate(Campaign, context={"topics": set(config.topics)})
    return campaign, problems + (condition_type_problems(located, config.data_model) if campaign else [])
