"""`lifecycle report --format table`: the report's dict (engine/insights/report.py) as rich tables, the same
numbers as the JSON and the dashboard."""

from __future__ import annotations

import re
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from engine.delivery.statuses import SendStatus
from engine.insights.report import WAITING
from engine.store.tables import OUTCOMES

CAMPAIGN_COLUMNS = ("entered", SendStatus.SENT, *OUTCOMES, "converted")
OTHER_COLUMNS = (SendStatus.FAILED, SendStatus.UNKNOWN, SendStatus.EXPIRED, SendStatus.HELD_OUT, WAITING)
# Short headings so that a campaign row fits an 80-column terminal.
HEADINGS = {
    "delivered": "deliv",
    "opened": "opens",
    "clicked": "clicks",
    "bounced": "bounce",
    "complained": "spam",
    "unsubscribed": "unsub",
    "converted": "conv",
    SendStatus.HELD_OUT: "held out",
    "responses": "rated",
    "response_rate": "rate %",
    "acknowledged": "acked",
    "acknowledged_within_4h_share": "in 4h %",
    "median_minutes_to_ack": "median min",
}
# The feedback figures of a month or a campaign, in the table and on the page.
FEEDBACK_COLUMNS = (
    "responses",
    "csat",
    "nps",
    "low",
    "acknowledged",
    "acknowledged_within_4h_share",
    "median_minutes_to_ack",
)


# What a terminal would act on rather than show: C0 and C1 controls (ESC starts a sequence that can clear the
# screen or retitle the window), line and paragraph separators, and the bidi overrides and isolates that make
# shown text read other than it is. Arabic, Hebrew and the marks RLM and LRM stay.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
LINE_BREAKS = re.compile("[\t\n]")


def printable(value: object, multiline: bool = False) -> str:
    """Data (a customer's name, an email, an event property) as a terminal should show it: as text, never
    as a control sequence. One line unless `multiline`, where tabs and newlines stay."""
    text = CONTROLS.sub("", str(value))
    return text if multiline else LINE_BREAKS.sub(" ", text)


def cells(*values: object) -> list[Text]:
    """Table cells as Text, never parsed as Rich markup: a customer named `[/oops]` is shown as written."""
    return [Text(printable(v)) for v in values]


def report_tables(report: dict[str, Any]) -> list[Table]:
    """Every table of the report, in reading order: the paused campaigns first, when there are any."""
    paused = {name: f["paused"] for name, f in report["campaigns"].items() if f.get("paused")}
    return [
        *([paused_table(paused)] if paused else []),
        campaigns_table(report),
        other_outcomes_table(report),
        lift_table(report),
        retention_table(report),
        customers_table(report),
        risk_model_table(report),
        red_table(report),
        feedback_table(report),
        low_ratings_table(report),
    ]


def _table(title: str, *columns: str) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    table.add_column(columns[0], no_wrap=True)
    for column in columns[1:]:
        heading = HEADINGS.get(column, column)
        table.add_column(heading, justify="right", min_width=len(heading))
    return table


def _step_label(step: dict[str, Any]) -> str:
    return f"  step {step['step']}" + (f" {step['variant']}" if step["variant"] else "")


def _text(value: Any) -> str:
    return "–" if value is None else str(value)  # noqa: RUF001 (a dash for "none")


def paused_table(paused: dict[str, dict[str, str]]) -> Table:
    """Campaigns whose sending is held, by the deliverability guard or an operator."""
    table = _table("paused: due sends wait until `lifecycle resume`", "campaign", "by", "since", "reason")
    for name, held in paused.items():
        table.add_row(*cells(name, held["by"], held["since"][:16], held["reason"]), style="bold")
    return table


def campaigns_table(report: dict[str, Any]) -> Table:
    """Per campaign, and under it per step and variant: from entries to conversions."""
    table = _table("campaigns", "campaign", *CAMPAIGN_COLUMNS)
    for name, figures in report["campaigns"].items():
        table.add_row(*cells(name, *(figures[c] for c in CAMPAIGN_COLUMNS)), style="bold")
        for step in figures["steps"]:
            table.add_row(*cells(_step_label(step), "", *(step[c] for c in CAMPAIGN_COLUMNS[1:])))
    return table


def other_outcomes_table(report: dict[str, Any]) -> Table:
    """What did not go out, and why."""
    table = _table("not sent", "campaign", *OTHER_COLUMNS, "skipped")
    for name, figures in report["campaigns"].items():
        skipped = ", ".join(f"{reason} {n}" for reason, n in figures["skipped"].items())
        table.add_row(*cells(name, *(figures[c] for c in OTHER_COLUMNS), skipped))
    return table


def lift_table(report: dict[str, Any]) -> Table:
    """Campaigns with a holdout: conversion of those who got it against those held out."""
    table = _table(
        "holdout lift (conversion %, difference in points)",
        "campaign",
        "got it",
        "held out",
        "difference",
        "95% interval",
        "p-value",
    )
    for name, figures in report["campaigns"].items():
        lift = figures["lift"]
        if lift is None:
            continue
        treated, held = lift["treated"], lift["held_out"]
        interval = "–" if lift["ci_low"] is None else f"{lift['ci_low']} to {lift['ci_high']}"  # noqa: RUF001
        table.add_row(
            *cells(
                name,
                f"{_text(treated['rate'])} ({treated['converted']}/{treated['entries']})",
                f"{_text(held['rate'])} ({held['converted']}/{held['entries']})",
                _text(lift["difference"]),
                interval,
                _text(lift["p_value"]),
            )
        )
    return table


def retention_table(report: dict[str, Any]) -> Table:
    title = "retention: CRR = (E − new − returning) / S × 100"  # noqa: RUF001 (the formula as written)
    table = _table(title, "month", "start S", "end E", "new", "returning", "CRR %")
    for row in report["retention"]:
        table.add_row(*cells(row["month"], row["start"], row["end"], row["new"], row["returning"], _text(row["crr"])))
    return table


def customers_table(report: dict[str, Any]) -> Table:
    table = _table("customers", "measure", "group", "customers")
    for measure in ("stages", "risk"):
        for group, n in report[measure].items():
            table.add_row(*cells(measure, group, n))
    return table


def risk_model_table(report: dict[str, Any]) -> Table:
    """How risk is decided (rules and where their thresholds come from, or the model) and, once a model
    was trained, its backtested AUC next to the rules' and recency's."""
    rules, model = report["risk_rules"], report["risk_model"]
    table = _table(f"churn risk by {rules['model']}", "figure", "value")
    for colour in ("yellow", "red"):
        rule = rules[colour]
        table.add_row(*cells(f"rules: {colour} after", f"{rule['inactive_for']} ({rule['source']})"))
    if model is not None:
        table.add_row(*cells("model", f"version {model['version']}, trained {model['trained_at'][:10]}"))
        table.add_row(*cells("backtest", f"at {model['cutoff'][:10]}, horizon {model['horizon']}"))
        for figure in ("auc_model", "auc_rules", "auc_rules_default", "auc_rules_calibrated", "auc_recency"):
            table.add_row(*cells(figure.replace("_", " ").replace("auc", "AUC"), _text(model.get(figure))))
    return table


def red_table(report: dict[str, Any]) -> Table:
    table = _table("red risk, most valuable first", "customer", "email", "name", "value", "last activity")
    for person in report["red_customers"]:
        table.add_row(
            *cells(
                person["id"],
                person["email"],
                _text(person["name"]),
                f"{person['value']:.2f}",
                person["last_activity"][:10],
            )
        )
    return table


def feedback_table(report: dict[str, Any]) -> Table:
    """Ratings and the answers to low ones: in all, per campaign (with its response rate), per month."""
    feedback = report["feedback"]
    shown = feedback_columns(feedback)
    table = _table("feedback", "", *shown, "response_rate", "scores")

    def row(label: str, figures: dict[str, Any], style: str | None = None) -> None:
        scores = " ".join(f"{score}:{n}" for score, n in figures["scores"].items() if n)
        rate = _text(figures.get("response_rate")) if "response_rate" in figures else ""
        table.add_row(*cells(label, *(_text(figures[c]) for c in shown), rate, scores), style=style)

    row("all", feedback, style="bold")
    for name, figures in feedback["campaigns"].items():
        row(name, figures)
    for month in feedback["months"]:
        if month["responses"]:
            row(month["month"], month)
    return table


def score_figure(feedback: dict[str, Any]) -> str:
    """CSAT for ratings of 5, NPS for ratings of 10 (whose scores run to 10)."""
    return "nps" if "10" in feedback["scores"] else "csat"


def feedback_columns(feedback: dict[str, Any]) -> list[str]:
    """The feedback columns for the report's scale: CSAT or NPS, not both."""
    other = "csat" if score_figure(feedback) == "nps" else "nps"
    return [c for c in FEEDBACK_COLUMNS if c != other]


def low_ratings_table(report: dict[str, Any]) -> Table:
    """The low ratings to review, newest first, and when the team took each on."""
    table = _table("low ratings, newest first", "rated at", "customer", "campaign", "score", "acknowledged", "comment")
    for low in report["feedback"]["low_comments"]:
        table.add_row(
            *cells(
                low["at"][:16],
                low["customer"],
                low["campaign"],
                low["score"],
                _text(low["acknowledged_at"] and low["acknowledged_at"][:16]),
                _text(low["comment"]),
            )
        )
    return table
