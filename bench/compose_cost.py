"""What composing one email costs in CPU: the render and the RFC 5322 bytes, nothing else.

    .venv/bin/python bench/compose_cost.py [--emails N] [--naive N] [--rounds R] [--against COMMIT]

Composes the newsletter step of bench/broadcast_1m.py (the shipped product_news MJML email) and
the shipped welcome step for customers like bench/tick_1m.py's fill (two in three English, one in
three Arabic), in one process, the way a courier does (engine/delivery/couriers.py, handovers of
500), and prints the CPU microseconds (time.process_time) per email:

- naive: the straightforward way, as bench/tick_welcome.py's naive loop: Jinja over the MJML,
  MJML compiled, the text from html2text (or the hand-written .txt), `email.message.EmailMessage`,
  for every email;
- engine: `Courier.compose`;
- with `--against COMMIT`: the engine of that commit too, so that a change is measured before and
  after on the same machine at once.

Each engine runs in a fresh process of its own, `--rounds` times, alternating with the other; the
fastest round counts (a shared machine's noise only ever adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from functools import partial
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HANDOVER = 500
STEPS = {"newsletter": "product_news", "welcome": "welcome"}


def customer(x: int) -> dict[str, Any]:
    """Customer x of bench/tick_1m.py's fill, as the ledger hands it to a courier."""
    arabic = x % 3 == 0
    created = NOW - timedelta(days=x % 500, minutes=x % 1440)
    return {
        "customer_id": x,
        "external_id": f"c{x}",
        "email": f"c{x}@example.com",
        "first_name": f"Name{x % 997}",
        "last_name": None,
        "locale": "ar" if arabic else "en",
        "timezone": "Asia/Riyadh" if arabic else "Europe/London",
        "created_at": created,
        "confirmed_at": created + timedelta(minutes=30),
        "unsubscribed_at": None,
        "frequency": None,
        "attributes": {
            "points": x % 1000,
            "points_expire_at": (NOW + timedelta(days=x % 90)).date().isoformat(),
            "plan": ("free", "pro", "business")[x % 3],
        },
    }


def confirmed(x: int) -> dict[str, Any]:
    return {"name": "confirmed", "at": NOW - timedelta(minutes=x % 60), "properties": {}}


def make_project(folder: Path) -> Path:
    """The shipped config (null sender), templates and welcome campaign, and the newsletter."""
    from broadcast_1m import BROADCAST

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(database=f"sqlite:///{folder}/store.db", sender={"backend": "null"})
    (folder / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    shutil.copytree(REPO / "templates", folder / "templates")
    (folder / "campaigns").mkdir()
    shutil.copy(REPO / "campaigns" / "welcome.yaml", folder / "campaigns" / "welcome.yaml")
    (folder / "campaigns" / "newsletter.yaml").write_text(BROADCAST)
    return folder / "config.yaml"


def cpu_per_email(action: Callable[[int], Any], emails: int) -> float:
    """CPU microseconds per email of `action(x)` for x in 1..emails."""
    started = time.process_time()
    for x in range(1, emails + 1):
        action(x)
    return 1e6 * (time.process_time() - started) / emails


def engine_costs(config_file: Path, emails: int) -> dict[str, float]:
    """µs per email of `Courier.compose`, for each step, in handovers as the tick makes them."""
    from engine.campaigns.language import load_campaigns
    from engine.config.settings import load_config
    from engine.delivery.couriers import Courier, Handover, Parcel
    from engine.senders.null import NullSender

    config = load_config(config_file)
    courier = Courier(config, load_campaigns(config), NullSender(config))
    costs = {}
    for campaign in STEPS:
        event = confirmed if campaign == "welcome" else lambda x: None
        parcels = [Parcel(x, None, customer(x), event(x)) for x in range(1, emails + 1)]
        courier.compose(Handover(campaign, 1, parcels[:HANDOVER]))  # compile the templates first
        started = time.process_time()
        for start in range(0, emails, HANDOVER):
            made, failed = courier.compose(Handover(campaign, 1, parcels[start : start + HANDOVER]))
            assert not failed and made, failed
        costs[campaign] = 1e6 * (time.process_time() - started) / emails
    return costs


class NaiveWay:
    """The straightforward way: every email rendered, compiled and built whole."""

    def __init__(self, config_file: Path) -> None:
        from jinja2 import FileSystemLoader, StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        from engine.campaigns.language import load_campaigns
        from engine.config.settings import load_config
        from engine.mail.links import Links

        self.config = config = load_config(config_file)
        self.campaigns = {c.name: c for c in load_campaigns(config)}
        folder = FileSystemLoader(str(config.templates_path))
        self.markup = ImmutableSandboxedEnvironment(loader=folder, autoescape=True, undefined=StrictUndefined)
        self.plain = ImmutableSandboxedEnvironment(loader=folder, undefined=StrictUndefined)
        self.links, self.brand = Links(config), config.brand.model_dump()

    def email(self, campaign_name: str, x: int) -> bytes:
        import html2text
        from mjml import mjml2html

        campaign, template = self.campaigns[campaign_name], STEPS[campaign_name]
        subjects = campaign.steps[0].subject
        assert isinstance(subjects, dict)
        person, folder = customer(x), self.config.templates_path
        locale = person["locale"]
        urls = self.links.for_customer(x, campaign.topic)
        context = {
            "customer": {**person["attributes"], **person, "id": person["external_id"]},
            "event": confirmed(x),
            "brand": self.brand,
            "links": urls,
            "locale": locale,
            "timezone": person["timezone"],
            "direction": "rtl" if locale == "ar" else "ltr",
        }
        html = mjml2html(
            self.markup.get_template(first_file(folder, template, locale, "mjml") or f"{template}.mjml").render(context)
        )
        text_file = first_file(folder, template, locale, "txt")
        text = self.plain.get_template(text_file).render(context) if text_file else html2text.html2text(html)
        message = EmailMessage(policy=SMTP)
        message["From"] = formataddr((self.config.from_.name, self.config.from_.email))
        message["To"] = formataddr((person["first_name"], person["email"]))
        message["Subject"] = self.plain.from_string(subjects[locale]).render(context)
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain="example.com")
        message["List-Unsubscribe"] = f"<{urls['unsubscribe']}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message.as_bytes()


def naive_costs(config_file: Path, emails: int) -> dict[str, float]:
    """µs per email of the naive way, for each step."""
    naive = NaiveWay(config_file)
    costs = {}
    for campaign in STEPS:
        naive.email(campaign, 1)
        costs[campaign] = cpu_per_email(partial(naive.email, campaign), emails)
    return costs


def first_file(folder: Path, template: str, locale: str, ext: str) -> str | None:
    """NAME.<locale>.EXT, else NAME.EXT, as the engine looks them up."""
    return next(
        (name for name in (f"{template}.{locale}.{ext}", f"{template}.{ext}") if (folder / name).is_file()), None
    )


def engine_of(commit: str, folder: Path) -> Path:
    """The engine package of `commit`, unpacked into `folder`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "engine"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def measure_elsewhere(engine: Path, config_file: Path, emails: int) -> dict[str, float]:
    """This script's engine measure, in a fresh process that imports the engine from `engine`."""
    command = [sys.executable, __file__, "--emails", str(emails), "--config", str(config_file), "--json"]
    done = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": str(engine)}, check=True, capture_output=True, text=True
    )
    costs: dict[str, float] = json.loads(done.stdout)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=20_000, help="emails of each step the engine composes")
    parser.add_argument("--naive", type=int, default=1_000, help="emails of each step composed the naive way")
    parser.add_argument("--against", metavar="COMMIT", help="also measure the engine of COMMIT (before a change)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each engine, alternating; the fastest counts")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    os.environ.setdefault("LIFECYCLE_INSECURE_PUBLIC_URL", "1")
    if args.json:  # the engine measure alone, for measure_elsewhere
        print(json.dumps(engine_costs(Path(args.config), args.emails)))
        return
    sys.path.insert(0, str(REPO))
    from tick_1m import machine

    with tempfile.TemporaryDirectory() as folder:
        config_file = make_project(Path(folder))
        engines = {f"engine ({args.emails:,} emails)": REPO}
        if args.against:
            engines = {
                f"engine at {args.against} ({args.emails:,} emails)": engine_of(args.against, Path(folder))
            } | engines
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
        for _ in range(args.rounds):  # alternating, so that a busy spell of the machine weighs on both
            for name, engine in engines.items():
                runs[name].append(measure_elsewhere(engine, config_file, args.emails))
        naive = naive_costs(config_file, args.naive)
    rows = [(f"naive ({args.naive:,} emails)", naive)] + [
        (name, {step: min(run[step] for run in measured) for step in STEPS}) for name, measured in runs.items()
    ]
    print(
        f"CPU µs per email composed, in one process, best of {args.rounds} rounds; {machine()}; "
        f"load {os.getloadavg()}\n"
    )
    print("| way | newsletter (product_news) | welcome | newsletter vs naive | welcome vs naive |")
    print("|---|---:|---:|---:|---:|")
    for name, costs in rows:
        print(
            f"| {name} | {costs['newsletter']:,.0f} | {costs['welcome']:,.0f} | "
            f"{naive['newsletter'] / costs['newsletter']:.1f}x | {naive['welcome'] / costs['welcome']:.1f}x |"
        )


if __name__ == "__main__":
    main()
