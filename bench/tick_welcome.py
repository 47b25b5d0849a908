"""How fast is a whole `lifecycle tick`? 10,000 due welcome emails, against the straightforward loop.

    .venv/bin/python bench/tick_welcome.py [--emails N] [--rounds R] [--workers 1 2] [--dir FOLDER] [--profile]

Both runs send the shipped welcome email (templates/emails/welcome.mjml, its layout and
welcome.txt) to the same customers and write one .eml file per email:

- tick: `lifecycle tick` in this process, on a fresh SQLite store: evaluate the campaign,
  claim the sends in the ledger, render, build each message and write it with the `file` sender,
  record the results; once with one worker (everything in the tick's process) and once with a
  courier process per core (`scheduler.workers`), which compose and send while the tick keeps
  the ledger;
- naive loop: the same customers read in one query, Jinja compiled once, MJML compiled for each
  recipient, the message built with `email.message.EmailMessage` and written.

It prints a markdown table and the machine it ran on, best of `--rounds` alternating runs.
`--profile` prints where the tick's time goes (cProfile, by cumulative time) instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from functools import partial
from pathlib import Path

import yaml
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mjml import mjml2html
from sqlalchemy import select
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.cli import app  # noqa: E402
from engine.config.settings import load_config  # noqa: E402
from engine.customers.importing import Importer  # noqa: E402
from engine.mail.links import Links  # noqa: E402
from engine.store.schema import open_store  # noqa: E402
from engine.store.tables import Customer  # noqa: E402

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # inside welcome's send window, outside quiet hours


def make_project(root: Path, emails: int) -> None:
    """The shipped config, welcome campaign and templates, and `emails` confirmed customers; paths
    in config.yaml are relative, so the folder can be copied for each round."""
    shutil.copytree(REPO / "templates", root / "templates")
    (root / "campaigns").mkdir()
    shutil.copy(REPO / "campaigns" / "welcome.yaml", root / "campaigns" / "welcome.yaml")
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    config["database"] = "sqlite:///store.db"
    config["sender"] = {"backend": "file", "file": {"directory": "outbox"}}
    config["scheduler"]["batch_size"] = 1000
    (root / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    loaded = load_config(root / "config.yaml")
    importer = Importer(open_store(loaded.database_url), loaded, NOW)
    joined = (NOW - timedelta(hours=2)).isoformat()
    people = [
        {
            "id": f"c{i}",
            "email": f"customer{i}@example.com",
            "first_name": f"Name{i}",
            "last_name": "Bench",
            "locale": "en",
            "timezone": "UTC",
            "created_at": joined,
            "confirmed_at": joined,
            "favourite_product": "green tea",
        }
        for i in range(emails)
    ]
    importer.customers(enumerate(people, 1), "bench customers")
    confirmed = (NOW - timedelta(hours=1)).isoformat()
    importer.events(
        enumerate(({"customer": p["id"], "event": "confirmed", "at": confirmed} for p in people), 1), "bench events"
    )


def run_tick(config_file: Path) -> None:
    result = CliRunner().invoke(app, ["tick", "--now", NOW.isoformat(), "--config", str(config_file)])
    assert result.exit_code == 0, (result.output, result.exception)


def naive_loop(config_file: Path, outbox: Path) -> None:
    """The straightforward way: Jinja once, MJML and EmailMessage for every recipient."""
    config = load_config(config_file)
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(config.templates_path)), autoescape=True, undefined=StrictUndefined
    )
    plain = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(config.templates_path)), undefined=StrictUndefined
    )
    html_template, text_template = env.get_template("welcome.mjml"), plain.get_template("welcome.txt")
    subject = plain.from_string("Welcome to {{ brand.name }}, {{ customer.first_name or 'friend' }}!")
    links = Links(config)
    brand = config.brand.model_dump()
    outbox.mkdir(parents=True, exist_ok=True)
    with open_store(config.database_url).connect() as connection:
        customers = connection.execute(select(Customer.__table__)).all()
    for customer in customers:
        urls = links.for_customer(customer.id, "onboarding")
        context = {
            "customer": {**customer.attributes, "first_name": customer.first_name, "email": customer.email},
            "brand": brand,
            "links": urls,
            "locale": "en",
            "timezone": "UTC",
        }
        message = EmailMessage(policy=SMTP)
        message["From"] = formataddr((config.from_.name, config.from_.email))
        message["To"] = formataddr((f"{customer.first_name} {customer.last_name}", customer.email))
        message["Subject"] = subject.render(context)
        message["Date"] = format_datetime(NOW)
        message["Message-ID"] = make_msgid(domain="example.com")
        message["List-Unsubscribe"] = f"<{urls['unsubscribe']}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(text_template.render(context))
        message.add_alternative(mjml2html(html_template.render(context)), subtype="html")
        (outbox / f"{customer.id}.eml").write_bytes(message.as_bytes())


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def with_workers(project: Path, workers: int) -> Path:
    """The project's config.yaml with `scheduler.workers` set."""
    config_file = project / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["scheduler"]["workers"] = workers
    config_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return config_file


def best_of(rounds: int, base: Path, root: Path, workers: list[int]) -> tuple[dict[int, float], float]:
    """The fastest of `rounds` alternating runs of each: a shared machine's noise only ever adds time."""
    tick_times: dict[int, list[float]] = {count: [] for count in workers}
    naive_times = []
    for n in range(rounds):
        naive = root / f"naive{n}"
        naive_times.append(timed(partial(naive_loop, base / "config.yaml", naive)))
        written = len(list(naive.glob("*.eml")))
        shutil.rmtree(naive)
        for count in workers:
            project = root / f"tick{n}-{count}"
            shutil.copytree(base, project)  # a fresh store: every round sends the same emails
            tick_times[count].append(timed(partial(run_tick, with_workers(project, count))))
            sent = len(list((project / "outbox").glob("*.eml")))
            assert sent == written, (count, sent, written)
            shutil.rmtree(project)
    return {count: min(times) for count, times in tick_times.items()}, min(naive_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--profile", action="store_true", help="profile the tick instead of timing both")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, len(os.sched_getaffinity(0))],
        help="scheduler.workers of the ticks to time (default: 1 and one per core)",
    )
    parser.add_argument(
        "--dir",
        help="where to put the store and the .eml files (default: the system's temp "
        "folder); both runs create one file per email, so the disk counts",
    )
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        root = Path(folder)
        make_project(root / "base", args.emails)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run_tick, root / "base" / "config.yaml")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            return
        tick_seconds, naive_seconds = best_of(args.rounds, root / "base", root, args.workers)
    print(
        f"{args.emails:,} welcome emails, each written as an .eml file under {args.dir or tempfile.gettempdir()}; "
        f"best of {args.rounds} rounds; {machine()}\n"
    )
    print("| run | total (s) | ms per email | speed-up |")
    print("|---|---:|---:|---:|")
    rows = [("naive loop (MJML + EmailMessage per email)", naive_seconds)] + [
        (f"`lifecycle tick`, {count} worker{'s' if count > 1 else ''}", seconds)
        for count, seconds in tick_seconds.items()
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / args.emails:.3f} | {naive_seconds / seconds:.1f}x |")


if __name__ == "__main__":
    main()
