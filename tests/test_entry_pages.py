"""On PostgreSQL an entry's pages keep room for it to change (migration 0013): ending the entries
of a broadcast rewrites no index. An update that changes no indexed column and whose new row fits
on the same page is heap-only; an entry's status is in no index."""

from __future__ import annotations

from conftest import customer
from sqlalchemy import text

from engine.store.dialect import make_engine

NEWS = """\
topic: news
trigger: {event: signed_up}
steps: [{template: plain, subject: "Hello", delay: 1d}]
"""


def test_ending_entries_touches_no_index(postgres_project):
    project = postgres_project
    project.campaign("news", NEWS)
    names = [f"c{i}" for i in range(400)]  # several pages of entries
    project.customers(*(customer(n) for n in names))
    project.events(*({"customer": n, "event": "signed_up", "at": "2026-03-01T10:00:00Z"} for n in names))
    assert project.tick("2026-03-01T10:00:00Z")["news"] == {"entered": 400}
    engine = make_engine(project.url)
    with engine.begin() as connection:  # the statistics of this transaction's own changes, read in it
        ended = connection.execute(text("UPDATE entry SET status = 'completed' WHERE status = 'active'")).rowcount
        heap_only = connection.execute(text("SELECT pg_stat_get_xact_tuples_hot_updated('entry'::regclass)"))
        assert (ended, heap_only.scalar()) == (400, 400)
    engine.dispose()
