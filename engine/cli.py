"""The `lifecycle` command line. It parses options, calls the core and prints; nothing else."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine

from engine.campaigns.language import Campaign, load_campaigns
from engine.clock import parse_instant, utcnow
from engine.config.settings import Config, load_config
from engine.errors import LifecycleError, NotFound, ProblemsError
from engine.insights.table import cells, printable
from engine.store import schema

if TYPE_CHECKING:
    from engine.delivery.tick import TickReport

app = typer.Typer(
    help="Automated lifecycle email engine.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
import_app = typer.Typer(help="Import customers or events from CSV or JSONL.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")

out = Console()
err = Console(stderr=True)

CONFIG_HELP = "config.yaml (default ./config.yaml or $LIFECYCLE_CONFIG); before or after the command"


def either_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """`--config` after the command, or else the one given before it: `lifecycle --config x.yaml tick` and
    `lifecycle tick --config x.yaml` are the same."""
    before: Path | None = ctx.find_root().params.get("config")
    if value is not None and before is not None and value != before:
        raise typer.BadParameter(f"given twice: {before} before the command, {value} after it")
    return value if value is not None else before


ConfigOption = Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP, callback=either_config)]
NowOption = Annotated[str | None, typer.Option("--now", help="ISO-8601 time to act as now (replay, test, dry-run)")]


class UserError(LifecycleError):
    """A bad option value: one line, exit 1."""


def fail(error: LifecycleError) -> NoReturn:
    lines = [str(p) for p in error.problems] if isinstance(error, ProblemsError) else [str(error)]
    for line in lines:
        say(line, err)
    raise typer.Exit(1)


def say(line: str, console: Console = out) -> None:
    """One line that may carry data (a customer's name, a file's text): printed as text, never as markup or
    as a terminal control sequence."""
    console.print(printable(line), markup=False, highlight=False, soft_wrap=True)


def warn(notes: list[str]) -> None:
    """What a command did otherwise than asked, one line each on stderr: the output itself stays clean."""
    for note in notes:
        say(f"warning: {note}", err)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except LifecycleError as exc:
        fail(exc)


def check_format(output: str, *choices: str) -> None:
    """`--format` is one of `choices`, or a user error naming them."""
    if output not in choices:
        raise UserError(f"--format: '{output}' is not one of {', '.join(choices)}")


def parse_now(value: str | None, config: Config | None = None) -> datetime:
    if value is None:
        return utcnow()
    try:
        return parse_instant(value, config.timezone if config else "UTC")
    except ValueError as exc:
        raise UserError(f"--now: {exc}") from None


def store(config: Config) -> Engine:
    """The store, with the churn rules' thresholds calibrated from it where the config leaves them unset."""
    from engine.customers.risk.calibration import apply_stored

    engine = schema.open_store(config.database_url)
    apply_stored(config, engine)
    return engine


@contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silent in logs and pipes."""
    if not err.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# -- commands ----------------------------------------------------------------------------------


@app.callback()
def options(config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None) -> None:
    """Automated lifecycle email engine."""


@app.command()
def validate(config: ConfigOption = None) -> None:
    """Check config, every campaign and every template."""
    from engine.config.public_url import public_url_warning
    from engine.customers.risk.calibration import rules_note
    from engine.mail.validation import names_note, validate_all

    loaded, campaigns, problems = validate_all(config)
    if loaded is not None and (note := names_note(loaded)):
        err.print(note, markup=False, highlight=False, soft_wrap=True)
    if loaded is not None and (warning := public_url_warning(loaded, any(c.marketing for c in campaigns))):
        err.print(warning, markup=False, highlight=False, soft_wrap=True)
    if loaded is not None and (note := rules_note(loaded)):
        err.print(note, markup=False, highlight=False, soft_wrap=True)
    if problems or loaded is None:
        fail(ProblemsError(problems))
    out.print(f"ok: config, {len(campaigns)} campaigns and their templates in {len(loaded.locales)} locales")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the schema."""
    with user_errors():
        cfg = load_config(config)
        from engine.store.dialect import make_engine

        before, after = schema.upgrade(make_engine(cfg.database_url))
    out.print(f"schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


def _import(kind: str, file: Path, config: Path | None, now: str | None) -> None:
    from engine.customers.importing import Importer, read_records

    with user_errors():
        cfg = load_config(config)
        if not file.is_file():
            raise UserError(f"{file}: no such file")
        if file.suffix.lower() not in (".csv", ".jsonl", ".ndjson", ".json"):
            raise UserError(f"{file}: use a .csv or .jsonl file")
        importer = Importer(store(cfg), cfg, parse_now(now, cfg))
        total = sum(1 for _ in file.open(encoding="utf-8", errors="replace")) or None
        with progress_bar(f"importing {kind}", total) as advance:
            result = getattr(importer, kind)(read_records(file), str(file), advance)
        out.print(
            f"{kind}: {result.stored} stored"
            + (f", {result.skipped} already stored" if result.skipped else "")
            + (f", {len(result.problems)} bad rows not stored" if result.problems else "")
        )
        if result.problems:
            raise ProblemsError(result.problems)


@import_app.command("customers")
def import_customers(file: Path, config: ConfigOption = None, now: NowOption = None) -> None:
    """Upsert customers by id from CSV or JSONL."""
    _import("customers", file, config, now)


@import_app.command("events")
def import_events(file: Path, config: ConfigOption = None, now: NowOption = None) -> None:
    """Add events from JSONL (an event whose id is already stored is skipped)."""
    _import("events", file, config, now)


@app.command()
def demo(
    config: ConfigOption = None,
    now: NowOption = None,
    customers: Annotated[int, typer.Option(help="how many sample customers")] = 400,
) -> None:
    """Load a realistic sample store (signups, purchases, points, inactivity, English and Arabic)."""
    from engine.customers.demo_data import sample_customers, sample_events
    from engine.customers.importing import Importer

    with user_errors():
        cfg = load_config(config)
        moment = parse_now(now, cfg)
        people = sample_customers(moment, count=customers)
        events = sample_events(people, moment)
        importer = Importer(store(cfg), cfg, moment, source="demo")
        stored = importer.customers(enumerate(people, 1), "demo customers")
        happened = importer.events(enumerate(events, 1), "demo events")
        if stored.problems or happened.problems:
            raise ProblemsError(stored.problems + happened.problems)
    out.print(
        f"demo store: {stored.stored} customers, {happened.stored} events"
        + (f" ({happened.skipped} already there)" if happened.skipped else "")
    )


@app.command()
def tick(
    config: ConfigOption = None,
    now: NowOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show who would get what; change nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the counts as JSON")] = False,
) -> None:
    """One pass: evaluate every campaign, then send what is due."""
    from engine.delivery.tick import tick as run_tick
    from engine.senders import load_sender

    with user_errors():
        cfg, campaigns = _load(config)
        moment = parse_now(now, cfg)
        with load_sender(cfg) as sender, progress_bar("sending", None) as advance:
            report = run_tick(cfg, campaigns, store(cfg), sender, moment, dry_run=dry_run, progress=advance)
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
        return
    _print_tick(report)


def _print_tick(report: TickReport) -> None:
    """The counts per campaign, then (dry run) each planned send, then each reason sends failed for: the
    same sends the table counts."""
    table = Table(title=f"tick at {report.now.isoformat()}" + (" (dry run: nothing changed)" if report.dry_run else ""))
    for column in ("campaign", "entered", "sent", "other"):
        table.add_column(column)
    for name, counts in sorted(report.counts.items()):
        other = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("entered", "sent"))
        table.add_row(*cells(name, counts.get("entered", 0), counts.get("sent", 0), other))
    out.print(table)
    for name, held in sorted(report.paused.items()):
        say(f"paused: {name} (by {held['by']} since {held['since']}): {held['reason']}")
    if report.dry_run:
        for plan in report.planned:
            detail = f" {plan['reason']}" if plan["reason"] else ""
            say(f"would {plan['action']}: {plan['campaign']} step {plan['step']} -> {plan['email']}{detail}")
    if report.paused_until:
        say(f"sending paused until {report.paused_until.isoformat()}: the provider asked to slow down")
    for (campaign, step, reason), customers in _failures(report).items():
        count = f"{len(customers)} send" + ("s, e.g." if len(customers) > 1 else ",")
        say(f"failed: {campaign} step {step}: {count} customer {customers[0]}: {reason}")


def _failures(report: TickReport) -> dict[tuple[str, int, str], list[str]]:
    """Failed sends by campaign, step and reason, in the order they failed."""
    grouped: dict[tuple[str, int, str], list[str]] = {}
    for failure in report.failed:
        key = (failure["campaign"], failure["step"], failure["reason"] or "no reason given")
        grouped.setdefault(key, []).append(failure["customer"])
    return grouped


def _load(config: Path | None) -> tuple[Config, list[Campaign]]:
    """Config, secret, campaigns and templates, all checked before anything can be sent."""
    from engine.mail.validation import check_templates

    cfg = load_config(config)
    cfg.secret_keys()
    campaigns = load_campaigns(cfg)
    problems = check_templates(cfg, campaigns)
    if problems:
        raise ProblemsError(problems)
    return cfg, campaigns


@app.command()
def preview(
    campaign: str,
    customer: Annotated[str, typer.Option("--customer", help="customer id")],
    step: Annotated[int, typer.Option(help="step number, from 1")] = 1,
    locale: Annotated[str | None, typer.Option(help="render in this locale")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write the message (.eml) or HTML (.html) here")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Render one step for one customer without sending."""
    from engine.mail.previews import render_preview

    with user_errors():
        cfg, campaigns = _load(config)
        shown = render_preview(cfg, campaigns, store(cfg), campaign, customer, step, locale)
    warn(shown.notes)
    email = shown.email
    if out_file:
        out_file.write_bytes(email.html.encode() if out_file.suffix.lower() in (".html", ".htm") else email.raw)
        say(f"wrote {out_file}")
    else:
        sys.stdout.write(f"Subject: {printable(email.subject)}\nTo: {printable(email.to)}\n\n")
        sys.stdout.write(printable(email.text, multiline=True))


@app.command("send-test")
def send_test(
    campaign: str,
    to: Annotated[str, typer.Option("--to", help="where to send the test")],
    customer: Annotated[
        str | None, typer.Option("--customer", help="render with this customer's data (default: a sample customer)")
    ] = None,
    step: Annotated[int, typer.Option(help="step number, from 1")] = 1,
    config: ConfigOption = None,
) -> None:
    """One real send through the configured sender: a sample customer unless --customer; its links change no one."""
    from engine.mail.previews import send_test as deliver_test
    from engine.senders import load_sender

    with user_errors():
        cfg, campaigns = _load(config)
        with load_sender(cfg) as sender:
            result, notes = deliver_test(cfg, campaigns, store(cfg), sender, campaign, to, customer, step)
    warn(notes)
    if not result.ok:
        fail(UserError(f"send-test failed: {result.error}"))
    say(f"sent {campaign} step {step} to {to} (message id {result.message_id})")


@app.command()
def suppress(
    email: str, reason: Annotated[str, typer.Option(help="why")] = "manual", config: ConfigOption = None
) -> None:
    """Add an address to the suppression list: it gets nothing, of any type."""
    from engine.customers.suppressions import add_suppression

    with user_errors():
        cfg = load_config(config)
        added = add_suppression(store(cfg), email, reason, utcnow())
    say(f"{email} suppressed ({reason})" if added else f"{email} was already suppressed")


@app.command()
def unsuppress(email: str, config: ConfigOption = None) -> None:
    """Remove an address from the suppression list."""
    from engine.customers.suppressions import remove_suppression

    with user_errors():
        cfg = load_config(config)
        if not remove_suppression(store(cfg), email):
            raise NotFound(f"{email} is not on the suppression list")
    say(f"{email} unsuppressed")


@app.command()
def report(
    campaign: Annotated[str | None, typer.Option("--campaign", help="only this campaign")] = None,
    since: Annotated[str | None, typer.Option("--since", help="only entries from this ISO-8601 time on")] = None,
    output: Annotated[str, typer.Option("--format", help="table, json or html")] = "table",
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """Campaign figures and holdout lift, retention (CRR), stages and churn risk."""
    from engine.insights.html import report_page
    from engine.insights.report import build_report
    from engine.insights.table import report_tables

    with user_errors():
        check_format(output, "table", "json", "html")
        cfg = load_config(config)
        campaigns = load_campaigns(cfg)
        moment = parse_now(now, cfg)
        try:
            start = parse_instant(since, cfg.timezone) if since is not None else None
        except ValueError as exc:
            raise UserError(f"--since: {exc}") from None
        with progress_bar("reporting", len(campaigns) + 1) as advance:
            result = build_report(store(cfg), cfg, campaigns, moment, since=start, campaign=campaign, progress=advance)
    if output == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif output == "html":
        sys.stdout.write(report_page(result))
    else:
        for table in report_tables(result):
            out.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="server processes (one per core)")] = 1,
    config: ConfigOption = None,
) -> None:
    """The web service: preference centre, one-click unsubscribe, confirmation, API, webhooks."""
    import os

    from granian import Granian
    from granian.constants import Interfaces, Loops

    from engine.config.settings import config_path
    from engine.web import create_app

    with user_errors():
        create_app(load_config(config))  # every mistake is found here, before any process starts
    os.environ["LIFECYCLE_CONFIG"] = str(config_path(config).resolve())
    # Granian: HTTP in Rust, the app on uvloop in each process. Measured under load
    # (bench/web_latency.py), Granian answers pages at about twice uvicorn's rate on the same cores,
    # and uvloop took the one-click POST's p99 from 51-55 ms to 39-46 ms against asyncio's own loop.
    # No access log: the paths carry customers' link tokens.
    Granian(
        "engine.web:behind_proxy",
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        workers=workers,
        loop=Loops.uvloop,
        websockets=False,
        log_access=False,
    ).serve()


@app.command()
def run(
    config: ConfigOption = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="serve Prometheus metrics here")] = None,
    now: NowOption = None,
) -> None:
    """The daemon: a tick every scheduler.interval until SIGTERM or SIGINT."""
    from prometheus_client import start_http_server

    from engine.delivery import logs
    from engine.delivery.daemon import Daemon
    from engine.senders import load_sender

    with user_errors():
        cfg, campaigns = _load(config)
        fixed = parse_now(now, cfg) if now else None
        engine = store(cfg)
        sender = load_sender(cfg)
    logs.configure()
    port = metrics_port or cfg.scheduler.metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1")
    Daemon(cfg, campaigns, engine, sender, clock=(lambda: fixed) if fixed else utcnow).run()


# -- churn risk: the predicted model and its backtest -------------------------------------------

risk_app = typer.Typer(
    help="Churn risk: train the predicted model, backtest it against the rules.", no_args_is_help=True
)
app.add_typer(risk_app, name="risk")
JsonOption = Annotated[bool, typer.Option("--json", help="print the figures as JSON")]


@risk_app.command("train")
def risk_train(config: ConfigOption = None, now: NowOption = None, as_json: JsonOption = False) -> None:
    """Calibrate the rules, train the churn model on the store's history as of --now, store it and score everyone."""
    from engine.customers.risk.training import train

    with user_errors():
        cfg = load_config(config)
        cfg.secret_keys()
        result = train(store(cfg), cfg, parse_now(now, cfg))
    if as_json:
        print(json.dumps(result.__dict__, ensure_ascii=False, indent=2))
        return
    seconds = result.seconds
    say(f"risk model version {result.version} trained in {seconds['training']}s; scored in {seconds['scoring']}s")
    if result.thresholds:
        yellow, red = result.thresholds["yellow"], result.thresholds["red"]
        say(f"rules calibrated from the gaps between purchases: yellow {yellow}, red {red}")
    out.print(_backtest_table(result.figures))
    say("scores: " + ", ".join(f"{colour} {n}" for colour, n in result.scored.items()))


@risk_app.command("score")
def risk_score(config: ConfigOption = None, now: NowOption = None) -> None:
    """Score every customer again with the stored model (recency moves on between trainings)."""
    from engine.customers.risk.training import score

    with user_errors():
        cfg = load_config(config)
        counts, seconds = score(store(cfg), cfg, parse_now(now, cfg))
    say(f"scored in {seconds}s: " + ", ".join(f"{colour} {n}" for colour, n in counts.items()))


@risk_app.command("backtest")
def risk_backtest(
    cutoff: Annotated[
        str | None, typer.Option("--cutoff", help="ISO-8601 past instant (default: now - horizon)")
    ] = None,
    horizon: Annotated[str | None, typer.Option("--horizon", help="like 90d (default: risk.horizon)")] = None,
    config: ConfigOption = None,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """The AUC of the rules, of recency alone and of the model at a past cut-off, side by side."""
    from engine.config.durations import parse_duration
    from engine.customers.risk.backtest import backtest
    from engine.customers.risk.model import Features

    with user_errors():
        cfg = load_config(config)
        moment = parse_now(now, cfg)
        try:
            span = parse_duration(horizon) if horizon is not None else cfg.risk.horizon
        except ValueError as exc:
            raise UserError(f"--horizon: {exc}") from None
        try:
            start = parse_instant(cutoff, cfg.timezone) if cutoff is not None else moment - span
        except ValueError as exc:
            raise UserError(f"--cutoff: {exc}") from None
        if span.total_seconds() <= 0 or start + span > moment:
            raise UserError(
                f"--cutoff: {start.isoformat()} plus the horizon is after now ({moment.isoformat()}): "
                "what happened within the horizon is not known yet; choose an earlier cut-off or a shorter horizon"
            )
        with store(cfg).connect() as connection:
            figures = backtest(Features(connection, cfg), cfg, start, span)
    if as_json:
        print(json.dumps(figures, ensure_ascii=False, indent=2))
        return
    out.print(_backtest_table(figures))
    if figures["model_note"]:
        say(figures["model_note"])


def _backtest_table(figures: dict[str, Any]) -> Table:
    """AUC and, per colour, the share that bought again, one row per way of predicting."""
    table = Table(
        title=f"churn backtest at {figures['cutoff']}, horizon {figures['horizon']}: "
        f"{figures['customers']} customers, {figures['bought_again']} bought again"
    )
    for column in ("predictor", "AUC", "green: bought again", "yellow: bought again", "red: bought again"):
        table.add_column(column)
    table.add_row(*cells("recency alone (days since last purchase)", figures["auc_recency"], "", "", ""))
    ways = [("rules as configured", figures["rules"]), ("rules, defaults", figures["rules_default"])]
    ways += [("rules, calibrated", figures["rules_calibrated"])] if figures["rules_calibrated"] else []
    for label, way in ways:
        name = f"{label} ({way['yellow']}/{way['red']})"
        table.add_row(*cells(name, way["auc"], *(_share(way["colours"][c]) for c in ("green", "yellow", "red"))))
    if figures["model"]:
        model = figures["model"]
        table.add_row(*cells("model", model["auc"], *(_share(model["colours"][c]) for c in ("green", "yellow", "red"))))
    return table


def _share(colour: dict[str, Any]) -> str:
    share = colour["bought_again"]
    return f"{share}% of {colour['customers']}" if share is not None else f"- of {colour['customers']}"


@app.command()
def bounces(config: ConfigOption = None, now: NowOption = None) -> None:
    """One pass over the bounce mailbox (bounces.imap, bounces.maildir): mark bounced sends, suppress hard bounces."""
    from engine.delivery.bounces import process_bounces

    with user_errors():
        cfg = load_config(config)
        found = process_bounces(cfg, store(cfg), parse_now(now, cfg))
    for line in found.lines():
        say(line)


@app.command()
def unknown(
    campaign: Annotated[str | None, typer.Option("--campaign", help="only this campaign")] = None,
    resolve: Annotated[
        str | None, typer.Option("--resolve", help="sent (they went out) or resend (send them again)")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """Sends whose outcome is unknown (in flight when their worker stopped), and settling them."""
    from engine.delivery.unknown import Resolution, settle

    with user_errors():
        check_format(output, "table", "json")
        if resolve is not None and resolve not in tuple(Resolution):
            raise UserError(f"--resolve: '{resolve}' is not one of sent, resend")
        cfg = load_config(config)
        resolution = Resolution(resolve) if resolve else None
        sends = settle(store(cfg), load_campaigns(cfg), campaign, resolution, parse_now(now, cfg))
    if output == "json":
        print(json.dumps({"unknown": [s.as_json() for s in sends], "resolved": resolve}, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{len(sends)} sends with an unknown outcome")
    for column in ("send", "campaign", "step", "customer", "email", "claimed at", "provider says"):
        table.add_column(column)
    for s in sends:
        claimed = s.claimed_at.isoformat(timespec="seconds") if s.claimed_at else ""
        table.add_row(*cells(s.id, s.campaign, s.step, s.external_id, s.to_email or "", claimed, ", ".join(s.outcomes)))
    out.print(table)
    went = sum(1 for s in sends if {"delivered", "opened", "clicked"} & set(s.outcomes))
    say(f"{went} of {len(sends)} have a delivery, open or click from the provider: they went out")
    if resolution is Resolution.SENT:
        say(f"settled {len(sends)} as sent; each entry's next step is scheduled from its claim")
    elif resolution is Resolution.RESEND:
        say(f"{len(sends)} will be sent again from the next tick (recorded as resent)")


# -- one customer, and why they get a campaign or not ------------------------------------------


@app.command("customer")
def customer_page(
    customer_id: Annotated[str, typer.Argument(metavar="ID", help="the customer's id")],
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """One customer: profile, attributes, stage, risk, topics and a timeline of events, entries and sends."""
    from engine.customers.search import no_such_customer
    from engine.insights.timeline import customer_view

    with user_errors():
        check_format(output, "table", "json")
        cfg = load_config(config)
        moment = parse_now(now, cfg)
        engine = store(cfg)
        view = customer_view(engine, cfg, customer_id, moment)
        if view is None:
            with engine.connect() as connection:
                raise no_such_customer(connection, customer_id)
    if output == "json":
        print(json.dumps(view.as_json(), ensure_ascii=False, indent=2))
        return
    data = view.as_json()
    facts = Table(title=f"customer {printable(customer_id)} at {moment.isoformat()}", show_header=False)
    facts.add_column("")
    facts.add_column("")
    shown = {**data["profile"], "stage": view.stage, "risk": view.risk}
    shown["topics"] = ", ".join(f"{t} {'yes' if on else 'no'}" for t, on in view.topics.items()) or "none declared"
    shown["suppressed"] = view.suppressed or "no"
    shown.update({f"attribute {k}": v for k, v in data["attributes"].items()})
    for key, value in shown.items():
        facts.add_row(*cells(key, "" if value is None else value))
    out.print(facts)
    timeline = Table(title="timeline, newest first")
    for column in ("at", "kind", "what", "detail"):
        timeline.add_column(column)
    for item in data["timeline"]:
        timeline.add_row(*cells(_minute(item["at"]), item["kind"], item["title"], _timeline_detail(item)))
    out.print(timeline)
    if view.left_out:
        say(f"{view.left_out} older items not shown (--format json shows the same {len(view.timeline)})")


def _timeline_detail(item: dict[str, Any]) -> str:
    detail = item["detail"]
    if item["kind"] == "event":
        return ", ".join(f"{k}={v}" for k, v in detail["properties"].items())
    if item["kind"] == "entry":
        return f"{detail['status']}, by {detail['trigger']}" + (", held out" if detail["held_out"] else "")
    parts = [f"variant {detail['variant']}" if detail["variant"] else ""]
    parts.append(f"until {_minute(detail['until'])}" if detail["until"] else "")
    parts += [f"{name} {_minute(at)}" for name, at in detail["outcomes"].items()]
    return ", ".join(p for p in parts if p)


def _minute(instant: str) -> str:
    return datetime.fromisoformat(instant).strftime("%Y-%m-%d %H:%M")


@app.command()
def why(
    campaign: str,
    customer: Annotated[str, typer.Option("--customer", help="customer id")],
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """Whether and why (not) a customer enters a campaign and gets each step now, rule by rule."""
    from engine.delivery.why import explain

    with user_errors():
        check_format(output, "table", "json")
        cfg = load_config(config)
        moment = parse_now(now, cfg)
        explanation = explain(store(cfg), cfg, load_campaigns(cfg), campaign, customer, moment)
    if output == "json":
        print(json.dumps(explanation.as_json(), ensure_ascii=False, indent=2))
        return
    entering = "enters now" if explanation.enters else "does not enter now"
    if explanation.already_entered:
        entering += f" (already entered {explanation.already_entered})"
    say(f"{campaign} for customer {customer} at {moment.isoformat()}: {entering}")
    for rule in explanation.rules:
        say(f"  {'✓' if rule.passed else '✗'} {rule.rule}: {rule.detail}")
    for step in explanation.steps:
        say(f"step {step.step} ({step.template}): {step.verdict}")
        for rule in step.rules:
            say(f"  {'✓' if rule.passed else '✗'} {rule.rule}: {rule.detail}")


@app.command()
def pause(
    campaign: str,
    reason: Annotated[str | None, typer.Option("--reason", help="why, shown by report and tick")] = None,
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """Stop a campaign's sending on every daemon from their next batch; entries are still recorded."""
    from engine.delivery.pauses import PausedBy, active
    from engine.delivery.pauses import pause as hold

    with user_errors():
        cfg = load_config(config)
        name = _campaign_named(campaign, [c.name for c in load_campaigns(cfg)])
        moment = parse_now(now, cfg)
        with store(cfg).begin() as connection:
            made = hold(connection, name, reason or "no reason given", PausedBy.OPERATOR, moment)
            held = made or active(connection, name)[name]
    if made:
        say(f"{name} paused: its sends wait from each daemon's next batch until `lifecycle resume {name}`")
    else:
        say(f"{name} was already paused (by {held.by} since {held.since.isoformat()}): {held.reason}")


@app.command()
def resume(campaign: str, config: ConfigOption = None, now: NowOption = None) -> None:
    """Let a paused campaign send again from each daemon's next batch."""
    from engine.delivery.pauses import active
    from engine.delivery.pauses import resume as lift

    with user_errors():
        cfg = load_config(config)
        engine = store(cfg)
        with engine.connect() as connection:
            paused = list(active(connection))
        name = _campaign_named(campaign, {c.name for c in load_campaigns(cfg)} | set(paused))
        moment = parse_now(now, cfg)
        with engine.begin() as connection:
            lifted = lift(connection, name, moment)
    if lifted:
        say(f"{name} resumed: its waiting sends go from each daemon's next batch (paused by {lifted.by})")
    else:
        say(f"{name} was not paused")


def _campaign_named(name: str, names: Iterable[str]) -> str:
    from engine.campaigns.language import did_you_mean

    known = sorted(names)
    if name not in known:
        raise NotFound(f"no campaign named '{name}'{did_you_mean(name, known)} (campaigns: {', '.join(known)})")
    return name


@app.command("customers")
def customers_list(
    stage: Annotated[
        str | None, typer.Option("--stage", help="only this stage: prospect, current, loyal, lost")
    ] = None,
    risk: Annotated[str | None, typer.Option("--risk", help="only this risk: green, yellow, red")] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="only customers subscribed to this topic")] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="only customers with this attribute value, as attr=value")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="at most this many rows")] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    config: ConfigOption = None,
    now: NowOption = None,
) -> None:
    """One row per customer with stage, risk, value and last activity; red ones first, by value."""
    import csv

    from engine.insights.customers import COLUMNS, Filters, csv_cells, each_customer

    with user_errors():
        check_format(output, "table", "csv", "json")
        attributes = {}
        for pair in where or []:
            name, equals, value = pair.partition("=")
            if not equals or not name.strip():
                raise UserError(f"--where: '{pair}' is not attr=value, like plan=pro")
            attributes[name.strip()] = value
        cfg = load_config(config)
        rows = each_customer(store(cfg), cfg, parse_now(now, cfg), Filters(stage, risk, topic, attributes), limit)
        first = next(rows, None)  # a bad filter fails here, before anything is printed
    listed = rows if first is None else itertools.chain([first], rows)
    columns = list(COLUMNS)
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in listed:
            writer.writerow(csv_cells(row))
    elif output == "json":
        sys.stdout.write("[")
        for i, row in enumerate(listed):
            sys.stdout.write(("," if i else "") + "\n  " + json.dumps(row.as_json(), ensure_ascii=False))
        sys.stdout.write("\n]\n")
    else:
        table = Table(*columns)
        for row in listed:
            table.add_row(*cells(*("-" if v is None else v for v in row.as_json().values())))
        out.print(table)


@app.command()
def studio(
    host: Annotated[str, typer.Option(help="address to listen on (this machine only by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8001,
    config: ConfigOption = None,
) -> None:
    """The marketer's local window: campaigns, flows, live email previews, customers, audiences."""
    import os

    from granian import Granian
    from granian.constants import Interfaces, Loops

    from engine.config.settings import config_path
    from engine.web.studio import local_app

    with user_errors():
        local_app(load_config(config))  # a bad config.yaml or a missing secret is said here, not in the server
    os.environ["LIFECYCLE_CONFIG"] = str(config_path(config).resolve())
    say(f"studio: http://{host}:{port}/studio/ (it follows the files of campaigns/ and templates/; Ctrl-C stops it)")
    # One process: it watches the files and tells every open page of a change. Open pages hold an
    # event stream that never ends by itself, so a stop waits for them a moment only.
    Granian(
        "engine.web.studio:from_environment",
        workers_kill_timeout=2,
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        workers=1,
        loop=Loops.uvloop,
        websockets=False,
        log_access=False,
    ).serve()


def main() -> None:
    app()
