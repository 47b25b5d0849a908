"""config.yaml: every setting with its default, validated with the line of each mistake."""

from __future__ import annotations

import difflib
import os
from datetime import time, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.config.datamodel import DataModel, Declared, FieldType
from engine.config.durations import Span
from engine.config.source import KeyPath, Located, load_located
from engine.errors import ConfigError, Problem


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
        zones = sorted(available_timezones())
        close = [z for z in zones if z.lower().endswith("/" + name.lower().replace(" ", "_"))]
        close = close or difflib.get_close_matches(name, zones, n=1)
        hint = f": did you mean {close[0]}?" if close else " (like Europe/London)"
        raise ValueError(f"'{name}' is not an IANA timezone{hint}") from None
    return name


def check_email(value: str) -> str:
    """One address, as an address field of an email takes it: no display name, no list."""
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise ValueError(
            f"'{value}' is not one email address ({reason}): write one, like support@example.com"
        ) from None
    return value


Email = Annotated[str, AfterValidator(check_email)]


def parse_clock(value: Any) -> time:
    if isinstance(value, time):
        return value
    try:
        if not isinstance(value, str):
            raise ValueError
        return time.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f'\'{value}\' is not a time of day: write it as "HH:MM", like "09:00"') from None


class TimeWindow(Strict):
    """A recipient-local window of the day; an end before the start wraps past midnight."""

    start: time
    end: time

    _clock = field_validator("start", "end", mode="before")(parse_clock)

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise ValueError("start and end are the same time, so the window never opens: make them differ")
        return self

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class Address(Strict):
    email: Email
    name: str | None = None


class Brand(Strict):
    name: str = "Our store"
    address: str = ""
    url: str = "https://example.com"


class FileSender(Strict):
    directory: str = "outbox"


class SmtpSender(Strict):
    host: str = "localhost"
    port: int = 1025
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout: float = 30.0


class SendgridSender(Strict):
    api_key_env: str = "SENDGRID_API_KEY"
    sandbox: bool = False
    base_url: str = "https://api.sendgrid.com"
    webhook_public_key_env: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # verifies the signed Event Webhook


class PostmarkSender(Strict):
    server_token_env: str = "POSTMARK_SERVER_TOKEN"
    base_url: str = "https://api.postmarkapp.com"
    message_stream_marketing: str = "broadcast"
    message_stream_transactional: str = "outbound"
    webhook_user_env: str = "POSTMARK_WEBHOOK_USER"  # HTTP Basic credentials Postmark sends with its webhooks
    webhook_password_env: str = "POSTMARK_WEBHOOK_PASSWORD"


class SesSender(Strict):
    region: str = "us-east-1"
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"
    endpoint_url: str | None = None  # another SES API (LocalStack, moto) instead of AWS's own
    configuration_set: str | None = None  # the SES configuration set whose event destination feeds /webhooks/ses
    topic_arns: list[str] = []  # the SNS topics /webhooks/ses accepts; a post from any other is refused


class MailgunSender(Strict):
    api_key_env: str = "MAILGUN_API_KEY"
    domain: str = ""  # the sending domain set up in Mailgun; required with this backend
    base_url: str = "https://api.mailgun.net"  # EU accounts: https://api.eu.mailgun.net
    webhook_signing_key_env: str = "MAILGUN_WEBHOOK_SIGNING_KEY"  # verifies the signed webhooks


class Rate(Strict):
    """How fast the sender may go, shared by every daemon on the store (engine/delivery/ratelimit.py):
    messages a second (paced by the wall clock) and the most in any sliding hour or day."""

    per_second: float | None = Field(None, gt=0, allow_inf_nan=False, description="like per_second: 14")
    per_hour: int | None = Field(None, gt=0, strict=True, description="like per_hour: 10000")
    per_day: int | None = Field(None, gt=0, strict=True, description="like per_day: 50000")


class SenderConfig(Strict):
    backend: str = "file"
    rate: Rate = Rate()
    file: FileSender = FileSender()
    smtp: SmtpSender = SmtpSender()
    sendgrid: SendgridSender = SendgridSender()
    postmark: PostmarkSender = PostmarkSender()
    ses: SesSender = SesSender()
    mailgun: MailgunSender = MailgunSender()


class Scheduler(Strict):
    interval: Span = Field(default="60s", validate_default=True)
    batch_size: int = Field(500, gt=0)
    max_attempts: int = Field(5, gt=0)
    metrics_port: int | None = None
    # How long a silent worker's claimed sends count as in flight before they are `unknown`.
    lease: Span = Field(default="15m", validate_default=True)
    # Processes that compose and send (engine/delivery/couriers.py); by default one per core.
    workers: int | None = Field(None, gt=0)

    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


class Cap(Strict):
    max: int = Field(gt=0, description="the most marketing emails per customer, like max: 3")
    per: Span = Field(description="the period of the cap, like per: 7d")


class Limits(Strict):
    marketing: Cap | None = None


class Topic(Strict):
    title: dict[str, str] | str
    default: Literal["subscribed", "unsubscribed"] = "subscribed"

    def title_in(self, locale: str, fallback: str) -> str:
        if isinstance(self.title, str):
            return self.title
        return self.title.get(locale) or self.title.get(fallback) or next(iter(self.title.values()))


class LoyalStage(Strict):
    purchases: int = 5
    within: Span = Field(default="365d", validate_default=True)


class LostStage(Strict):
    inactive_for: Span = Field(default="90d", validate_default=True)


class Stages(Strict):
    loyal: LoyalStage = LoyalStage()
    lost: LostStage = LostStage()


class YellowRisk(Strict):
    # Unset: calibrated from the store's own gaps between purchases (engine/customers/risk/calibration.py).
    inactive_for: Span = Field(default="14d", validate_default=True)
    probability: float = Field(0.4, gt=0, lt=1)  # under `model: predicted`


class RedRisk(Strict):
    inactive_for: Span = Field(default="30d", validate_default=True)
    or_event: str | None = "complaint"
    probability: float = Field(0.7, gt=0, lt=1)


RiskColour = Literal["yellow", "red"]


class Risk(Strict):
    """Churn risk: the rules (inactivity, a red event), or `model: predicted`, the calibrated
    probability of no `value.event` within `horizon`, from a model learned from the store itself."""

    model: Literal["rules", "predicted"] = "rules"
    horizon: Span = Field(default="90d", validate_default=True)
    retrain: Span = Field(default="7d", validate_default=True)  # the daemon retrains and rescores this often
    yellow: YellowRisk = YellowRisk()
    red: RedRisk = RedRisk()
    _calibrated: dict[str, timedelta] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _yellow_below_red(self) -> Risk:
        if self.yellow.probability >= self.red.probability:
            raise ValueError(
                f"yellow.probability {self.yellow.probability} must be below red.probability {self.red.probability}"
            )
        return self

    def explicit(self, colour: RiskColour) -> bool:
        """Whether config.yaml sets this colour's `inactive_for` (then it wins over calibration)."""
        return "inactive_for" in (self.yellow if colour == "yellow" else self.red).model_fields_set

    def inactive_for(self, colour: RiskColour) -> timedelta:
        """The inactivity that makes a customer this colour under the rules: as written in the config,
        else as calibrated from the store (`calibrate`), else the default."""
        written = (self.yellow if colour == "yellow" else self.red).inactive_for
        return written if self.explicit(colour) else self._calibrated.get(colour, written)

    def calibrate(self, thresholds: dict[str, timedelta]) -> None:
        """Take the store's calibrated thresholds for the colours the config leaves unset."""
        self._calibrated = dict(thresholds)

    @property
    def calibrated(self) -> bool:
        return any(not self.explicit(c) and c in self._calibrated for c in ("yellow", "red"))


class Feedback(Strict):
    """Ratings in emails: CSAT (scores 1-5) or NPS (0-10); a score at or below `low` alerts the team."""

    scale: Literal[5, 10] = 5
    low: int | None = None  # default: 2 of 5, 6 of 10

    @model_validator(mode="after")
    def _low_in_scale(self) -> Feedback:
        if self.low is None:
            self.low = 2 if self.scale == 5 else 6
        if self.low not in self.scores():
            raise ValueError(f"low: {self.low} is not a score of the scale {self.scale}")
        return self

    def scores(self) -> range:
        return range(1, 6) if self.scale == 5 else range(0, 11)

    def is_low(self, score: int) -> bool:
        return self.low is not None and score <= self.low


class Team(Strict):
    locale: str | None = None  # the team's language (alerts with `recipient:`); default: default_locale


def check_folder(name: str) -> str:
    """A mailbox folder as IMAP and Maildir++ both take it without encoding."""
    if not name or not name.isascii() or not name.isprintable() or name.startswith("."):
        raise ValueError(f"'{name}' is not a folder name this engine can use: write it in plain ASCII, like Processed")
    return name


Folder = Annotated[str, AfterValidator(check_folder)]


class BounceImap(Strict):
    """The IMAP mailbox that receives bounces (the bounce address's inbox)."""

    host: str
    port: int | None = None  # default: 993 with ssl, else 143
    ssl: bool = True
    starttls: bool = False
    username: str
    password_env: str = "BOUNCES_IMAP_PASSWORD"
    folder: Folder = "INBOX"
    timeout: float = 30.0


class BounceMaildir(Strict):
    """A local Maildir that receives bounces; a relative path is relative to config.yaml."""

    path: str


class Bounces(Strict):
    """SMTP bounce handling: the envelope sender of every SMTP message, and the mailbox it is read from."""

    address: Email
    verp: bool = False  # bounces+<send id>-<signature>@domain, so that a bounce names its send
    imap: BounceImap | None = None
    maildir: BounceMaildir | None = None
    processed_folder: Folder | None = "Processed"  # null: delete processed messages
    error_folder: Folder = "Errors"  # messages that are not bounces or cannot be read


def parse_percent(value: Any) -> Decimal:
    """A rate written as a percentage, like `0.3%`, as an exact fraction (0.003): a rate at its limit
    is not above it."""
    if isinstance(value, Decimal):
        return value
    text = value.strip() if isinstance(value, str) else ""
    try:
        if not text.endswith("%"):
            raise InvalidOperation
        rate = Decimal(text[:-1].strip()) / 100
        if not rate.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(f"'{value}' is not a percentage: write it with a % sign, like 0.3%") from None
    if not 0 < rate <= 1:
        raise ValueError(f"'{value}' is not a rate above 0% and at most 100%")
    return rate


Percent = Annotated[Decimal, BeforeValidator(parse_percent)]


class Guard(Strict):
    """The deliverability guard (engine/delivery/guard.py): a campaign whose complaint or hard-bounce
    rate over its latest `window` sends passes its limit, with at least `min_sends` of them, is paused
    on every daemon and `alert_to` (default: the `from` address) gets an email."""

    enabled: bool = True
    complaint_rate: Percent = Field(default="0.3%", validate_default=True)
    hard_bounce_rate: Percent = Field(default="5%", validate_default=True)
    min_sends: int = Field(500, gt=0)
    window: int = Field(2000, gt=0, description="how many of the campaign's latest sends the rates are over")
    alert_to: Email | None = None

    @model_validator(mode="after")
    def _window_holds_min_sends(self) -> Guard:
        if self.window < self.min_sends:
            raise ValueError(
                f"window: {self.window} sends can never hold min_sends ({self.min_sends}): "
                "make the window at least as large"
            )
        return self


class DkimKey(Strict):
    """One DKIM signature on every message the SMTP and file senders emit (engine/mail/dkim.py)."""

    domain: str = Field(description="the signing domain (d=), like domain: example.com")
    selector: str = Field(description="the DNS selector (s=): the key is published at SELECTOR._domainkey.DOMAIN")
    private_key_env: str = Field(description="the environment variable holding the private key, RSA or Ed25519 PEM")


class Value(Strict):
    """What a customer is worth: the sum of `property` over their `event` events (the red list's
    and `lifecycle customers`' order)."""

    event: str = "purchase"
    property: str = "total"


class ReportSettings(Strict):
    red_list: int = Field(25, ge=0, description="how many red-risk customers the report lists, like red_list: 25")


def check_value(value: Value, events: dict[str, dict[str, Declared]]) -> Value:
    """`value` names a declared numeric property when the config declares events."""
    if not events:
        return value
    if value.event not in events:
        raise ValueError(f"event '{value.event}' is not declared under events: (declared: {', '.join(events)})")
    declared = events[value.event]
    kind = declared.get(value.property)
    if kind is None:
        names = ", ".join(declared) or "none"
        raise ValueError(f"property '{value.property}' of {value.event} is not declared (declared: {names})")
    if kind.type not in (FieldType.NUMBER, FieldType.INTEGER):
        raise ValueError(f"{value.event}.{value.property} is declared {kind.type}: a value is a sum of numbers")
    return value


class Config(Strict):
    database: str = "sqlite:///lifecycle.db"
    timezone: str = "UTC"
    default_locale: str = "en"
    locales: list[str] = ["en"]
    from_: Address = Field(alias="from", description="the sender, like from: {email: hello@example.com, name: Shop}")
    reply_to: Email | None = None
    brand: Brand = Brand()
    public_url: str = "http://localhost:8000"
    secret_key_env: str = "LIFECYCLE_SECRET"
    old_secret_keys_env: str | None = None
    double_opt_in: bool = False
    sender: SenderConfig = SenderConfig()
    bounces: Bounces | None = None
    scheduler: Scheduler = Scheduler()
    limits: Limits = Limits()
    quiet_hours: TimeWindow | None = None
    topics: dict[str, Topic] = {}
    stages: Stages = Stages()
    risk: Risk = Risk()
    feedback: Feedback = Feedback()
    team: Team = Team()
    guard: Guard = Guard()
    api_keys_env: str = "LIFECYCLE_API_KEYS"
    dkim: list[DkimKey] = []  # several entries sign several times (a new key beside the old, RSA beside Ed25519)
    # The declared data model (engine/config/datamodel.py): customer attributes and event properties.
    attributes: dict[str, Declared] = {}
    events: dict[str, dict[str, Declared]] = {}
    value: Value = Value()
    report: ReportSettings = ReportSettings()
    campaigns_dir: str = "campaigns"
    templates_dir: str = "templates/emails"

    # Where the file was found; relative paths in it are relative to this folder.
    root: Path = Field(default=Path("."), exclude=True)
    # The file itself (which may be `--config other.yaml`), for problems found after loading.
    file: Path = Field(default=Path("config.yaml"), exclude=True)
    _source: Located | None = PrivateAttr(None)

    _tz = field_validator("timezone")(check_timezone)

    @field_validator("value")
    @classmethod
    def _value_declared(cls, value: Value, info: ValidationInfo) -> Value:
        return check_value(value, info.data.get("events", {}))

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' must start with http:// or https://: links in emails point here")
        return value

    @model_validator(mode="after")
    def _default_locale_listed(self) -> Config:
        if self.default_locale not in self.locales:
            self.locales = [self.default_locale, *self.locales]
        if self.team.locale is None:
            self.team.locale = self.default_locale
        elif self.team.locale not in self.locales:
            raise ValueError(f"team.locale: '{self.team.locale}' is not one of locales {self.locales}")
        return self

    @cached_property
    def brand_fields(self) -> dict[str, Any]:
        """`brand` as templates see it, made once: every message composed reads it."""
        return self.brand.model_dump()

    @property
    def data_model(self) -> DataModel:
        return DataModel(attributes=self.attributes, events=self.events)

    @property
    def campaigns_path(self) -> Path:
        return self.root / self.campaigns_dir

    @property
    def templates_path(self) -> Path:
        return self.root / self.templates_dir

    @property
    def database_url(self) -> str:
        """A relative SQLite path is relative to the config file, not to the shell's folder."""
        prefix = "sqlite:///"
        if self.database.startswith(prefix) and not self.database.startswith(prefix + "/"):
            rest = self.database[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str((self.root / rest).resolve())
        return self.database

    def problem(self, path: KeyPath, message: str) -> Problem:
        """A problem found after loading, on the key at `path` of the file that was loaded, or on
        its first line when the key is not written (a default)."""
        if self._source is not None and tuple(path) in self._source.keys:
            return self._source.problem(path, message)
        return Problem(self._source.file if self._source else str(self.file), 1, 1, message)

    def secret_keys(self) -> list[str]:
        """The signing secret first, then any old ones still accepted for links already sent."""
        secret = os.environ.get(self.secret_key_env)
        if not secret:
            raise ConfigError(
                [
                    self.problem(
                        ("secret_key_env",),
                        f"secret_key_env: the environment variable {self.secret_key_env} "
                        "is not set; it holds the key that signs links in emails",
                    )
                ]
            )
        old = os.environ.get(self.old_secret_keys_env, "") if self.old_secret_keys_env else ""
        return [secret, *[k for k in old.split(",") if k.strip()]]

    def api_keys(self) -> set[str]:
        return {k.strip() for k in os.environ.get(self.api_keys_env, "").split(",") if k.strip()}


def config_path(path: str | Path | None) -> Path:
    return Path(path or os.environ.get("LIFECYCLE_CONFIG") or "config.yaml")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate config.yaml; every problem comes back located."""
    file = config_path(path)
    if not file.exists():
        raise ConfigError([Problem(str(file), 1, 1, "no such config file (use --config PATH or set LIFECYCLE_CONFIG)")])
    located, problems = load_located(file, expected="settings like database, from and topics")
    if located is None:
        raise ConfigError(problems)
    config, problems = located.validate(Config)
    if config is None:
        raise ConfigError(problems)
    config.root, config.file, config._source = file.parent, file, located
    return config
