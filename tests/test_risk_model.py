"""The predicted churn risk (`risk: {model: predicted}`), its backtest against the rules and the
rules' thresholds calibrated from the store, on synthetic histories whose structure is known
(tests/risk_store.py): customers buy on rhythms of their own and some stop for good."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Project, customer
from risk_store import NOW, history
from sqlalchemy import create_engine

from engine.config.durations import parse_duration
from engine.config.settings import load_config
from engine.customers.risk.features import features_at
from engine.customers.risk.training import refresh

WHEN = NOW.isoformat()
PREDICTED = {"model": "predicted", "horizon": "90d", "red": {"probability": 0.7}, "yellow": {"probability": 0.4}}


def load(project: Project, people: list[dict], events: list[dict]) -> None:
    project.customers(*people)
    project.events(*events)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """One store of 3,000 synthetic customers with a trained model, shared by the tests that only read it."""
    saved = os.environ.get("LIFECYCLE_SECRET")
    os.environ["LIFECYCLE_SECRET"] = "test-secret"
    project = Project(tmp_path_factory.mktemp("shop"))
    project.config(risk=PREDICTED)
    load(project, *history(3000))
    trained = json.loads(project.cli("risk", "train", "--now", WHEN, "--json").stdout)
    yield project, trained
    project.db.dispose()
    if saved is None:
        os.environ.pop("LIFECYCLE_SECRET", None)
    else:
        os.environ["LIFECYCLE_SECRET"] = saved


def test_the_model_beats_recency_and_the_rules_on_the_backtest(shop):
    project, _ = shop
    figures = json.loads(project.cli("risk", "backtest", "--now", WHEN, "--json").stdout)
    assert figures["cutoff"] == "2026-03-03T00:00:00+00:00" and figures["horizon"] == "90d"
    model = figures["model"]["auc"]
    # a 120-day buyer quiet for 60 days is fine, a 15-day buyer quiet for 60 days has gone: recency
    # alone cannot tell them apart, the gaps between purchases can
    assert model >= figures["auc_recency"] + 0.03
    for rules in ("rules", "rules_default", "rules_calibrated"):
        assert model > figures[rules]["auc"] + 0.05, rules
    # the colours mean something: far fewer of the model's red bought again than of its green
    colours = figures["model"]["colours"]
    assert colours["red"]["bought_again"] < 15 < 80 < colours["green"]["bought_again"]


def test_probabilities_are_calibrated(shop):
    project, _ = shop
    figures = json.loads(project.cli("risk", "backtest", "--now", WHEN, "--json").stdout)["model"]
    assert abs(figures["mean_probability"] - figures["churn_rate"]) < 0.05
    checked = [b for b in figures["reliability"] if b["customers"] >= 100]
    assert len(checked) >= 2
    for b in checked:
        assert abs(b["predicted"] - b["observed"]) < 0.1, b


def test_train_stores_the_model_scores_everyone_and_the_report_shows_both(shop):
    project, trained = shop
    assert trained["version"] == 1 and sum(trained["scored"].values()) == 3000
    rows = project.query("SELECT colour, count(*) FROM customer_risk GROUP BY colour")
    assert dict(rows) == {k: v for k, v in trained["scored"].items() if v}
    report = json.loads(project.cli("report", "--now", WHEN, "--format", "json").stdout)
    assert report["risk"] == trained["scored"]  # the report's colours are the scores'
    model = report["risk_model"]
    assert model["version"] == 1 and model["auc_model"] == trained["figures"]["model"]["auc"]
    assert model["auc_recency"] == trained["figures"]["auc_recency"]
    assert report["risk_rules"]["red"]["source"] == "calibrated"
    printed = project.cli("report", "--now", WHEN).output
    assert "churn risk by predicted" in printed
    line = next(line for line in printed.splitlines() if "AUC model" in line)
    assert str(model["auc_model"]) in line


def test_lifecycle_customers_lists_each_customers_score_and_its_colour(shop):
    project, _ = shop
    listed = json.loads(project.cli("customers", "--now", WHEN, "--format", "json", "--limit", "400").stdout)
    scores = {
        external: (probability, colour)
        for external, probability, colour in project.query(
            "SELECT c.external_id, r.probability, r.colour FROM customer_risk r JOIN customer c ON c.id = r.customer_id"
        )
    }
    assert len(listed) == 400
    for row in listed:
        probability, colour = scores[row["id"]]
        assert row["churn_probability"] == pytest.approx(probability) and row["risk"] == colour
    assert [row["risk"] for row in listed] == sorted((row["risk"] for row in listed), key=lambda r: r != "red")


def test_a_tampered_model_is_refused(shop, monkeypatch):
    project, _ = shop
    project.cli("risk", "score", "--now", WHEN)
    monkeypatch.setenv("LIFECYCLE_SECRET", "another-secret")
    refused = project.cli("risk", "score", "--now", WHEN, expect=1)
    assert "not signed with this project's secret" in refused.output
    monkeypatch.setenv("LIFECYCLE_SECRET", "test-secret")
    (payload,) = project.query("SELECT model FROM risk_model WHERE version = 1")[0]
    altered = bytes(payload[:-1]) + bytes([payload[-1] ^ 1])
    project.query("UPDATE risk_model SET model = :m WHERE version = 1", m=altered)
    refused = project.cli("risk", "score", "--now", WHEN, expect=1)
    assert "risk model version 1 is not signed" in refused.output
    assert "Traceback" not in refused.output
    project.query("UPDATE risk_model SET model = :m WHERE version = 1", m=payload)


def test_features_at_a_cutoff_ignore_what_came_after_it(project):
    people, events = history(200, seed=3)
    cutoff = datetime(2026, 1, 1, tzinfo=UTC)
    load(project, people, [e for e in events if e["at"] <= cutoff.isoformat()])
    config = load_config(project.root / "config.yaml")
    engine = create_engine(project.url)
    with engine.connect() as connection:
        before = features_at(connection, config, cutoff)
    later = [e for e in events if e["at"] > cutoff.isoformat()]
    project.events(
        *later,
        *({"customer": p["id"], "event": "purchase", "at": "2026-01-01T00:00:01Z"} for p in people),
        {"customer": people[0]["id"], "event": "complaint", "at": "2026-02-01T00:00:00Z"},
    )
    project.customers(customer("newcomer", created_at="2026-01-02T00:00:00Z"))
    with engine.connect() as connection:
        after = features_at(connection, config, cutoff)
    assert len(later) > 100
    assert before.equals(after)
    engine.dispose()


def test_too_little_history_says_so_and_the_rules_stay(project):
    project.config(risk=PREDICTED)
    project.customers(customer("ann"), customer("bob", created_at="2026-05-10T00:00:00Z"))
    project.events({"customer": "ann", "event": "purchase", "at": "2026-05-30T00:00:00Z", "properties": {"total": 5}})
    failed = project.cli("risk", "train", "--now", WHEN, expect=1)
    assert "not enough history to train the churn model" in failed.output
    assert "The rules stay in force" in failed.output
    assert project.query("SELECT count(*) FROM customer_risk") == [(0,)]
    report = json.loads(project.cli("report", "--now", WHEN, "--format", "json").stdout)
    assert report["risk_model"] is None
    assert report["risk"] == {"green": 1, "yellow": 1, "red": 0}  # the rules: bob quiet for 22 days is yellow (14d)
    assert report["risk_rules"]["yellow"] == {"inactive_for": "2w", "source": "default"}


def test_red_in_a_campaign_means_the_predicted_red_under_the_model(store_project):
    project = store_project
    project.config(risk=PREDICTED)
    project.campaign(
        "save",
        """
        topic: offers
        trigger: {at: 2026-06-01T09:00:00Z}
        audience: [{risk: red}]
        steps: [{template: plain, subject: "We miss you"}]
        """,
    )
    project.customers(customer("ann"), customer("bob"), customer("cat"), customer("dan"))
    project.events(
        {"customer": "ann", "event": "purchase", "at": "2026-05-31T10:00:00Z"},  # rules: green
        {"customer": "bob", "event": "purchase", "at": "2026-01-10T10:00:00Z"},  # rules: red
        {"customer": "cat", "event": "purchase", "at": "2026-01-10T10:00:00Z"},  # rules: red, no score
        {"customer": "dan", "event": "purchase", "at": "2026-05-31T10:00:00Z"},  # rules: green, no score
    )
    project.query(
        """INSERT INTO risk_model (trained_at, data_until, horizon_seconds, metrics)
           VALUES ('2026-06-01 00:00:00', '2026-06-01 00:00:00', 7776000, '{}')"""
    )
    for name, probability, colour in (("ann", 0.91, "red"), ("bob", 0.12, "green")):
        project.query(
            """INSERT INTO customer_risk (customer_id, probability, colour, scored_at, model_version)
               SELECT id, :p, :c, :at, 1 FROM customer WHERE external_id = :name""",
            p=probability,
            c=colour,
            at=datetime(2026, 6, 1, tzinfo=UTC),
            name=name,
        )
    project.tick("2026-06-01T09:00:00Z")
    # ann by her score, cat by the rules (no score); bob's score says green
    assert sorted(project.sent()) == [("ann", 1), ("cat", 1)]
    report = json.loads(project.cli("report", "--now", "2026-06-01T09:00:00Z", "--format", "json").stdout)
    assert report["risk"] == {"green": 2, "yellow": 0, "red": 2}


def test_calibrated_rules_do_not_paint_a_shop_of_slow_buyers_red(project):
    people, events = history(600, seed=11, rhythms=(90, 120, 180, 240), stop_share=0.2)
    load(project, people, events)
    project.config(risk={"yellow": {"inactive_for": "14d"}, "red": {"inactive_for": "30d"}})
    fixed = json.loads(project.cli("report", "--now", WHEN, "--format", "json").stdout)["risk"]
    assert fixed["red"] / 600 > 0.75  # the contract's defaults suit daily buyers
    project.config()  # no thresholds written: calibrated from the store
    assert "risk.yellow.inactive_for and risk.red.inactive_for not set: calibrated" in project.cli("validate").output
    trained = json.loads(project.cli("risk", "train", "--now", WHEN, "--json").stdout)
    yellow, red = trained["thresholds"]["yellow"], trained["thresholds"]["red"]
    assert timedelta(days=60) <= parse_duration(yellow) <= timedelta(days=240) < parse_duration(red)
    report = json.loads(project.cli("report", "--now", WHEN, "--format", "json").stdout)
    assert report["risk"]["red"] / 600 < 0.35
    assert report["risk_rules"]["red"] == {"inactive_for": red, "source": "calibrated"}
    # a threshold written in the config wins over the calibration
    project.config(risk={"red": {"inactive_for": "30d"}})
    report = json.loads(project.cli("report", "--now", WHEN, "--format", "json").stdout)
    assert report["risk_rules"]["red"] == {"inactive_for": "30d", "source": "config"}
    assert report["risk"]["red"] == fixed["red"]


def test_the_daemons_run_retrains_once_per_period(store_project):
    project = store_project
    load(project, *history(800, seed=5))
    project.config(risk=PREDICTED)
    config = load_config(project.root / "config.yaml")
    engine = create_engine(project.url)
    first = refresh(engine, config, NOW)
    assert first is not None and first.version == 1 and sum(first.scored.values()) == 800
    assert refresh(engine, config, NOW.replace(day=5)) is None  # within risk.retrain (7d): taken as it is
    assert refresh(engine, config, NOW.replace(day=9)) is not None
    engine.dispose()


def test_bad_risk_options_are_named(project):
    project.config(risk={"model": "crystal-ball"})
    assert "risk.model" in project.cli("validate", expect=1).output
    project.config(risk={"model": "predicted", "yellow": {"probability": 0.8}})
    failed = project.cli("validate", expect=1).output
    assert "yellow.probability 0.8 must be below red.probability 0.7" in failed
    project.config(risk=PREDICTED)
    failed = project.cli("risk", "backtest", "--now", WHEN, "--cutoff", "2026-05-01", expect=1).output
    assert "what happened within the horizon is not known yet" in failed
    assert "--horizon" in project.cli("risk", "backtest", "--horizon", "90 days", expect=1).output
