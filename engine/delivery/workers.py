"""Workers: every tick and daemon registers itself, so that a send left `sending` by a process
that died (kill -9, power loss) is recognised and reported `unknown`, never resent blindly.

Liveness uses the wall clock, not the business `--now`: it is about processes, not campaigns.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from engine.clock import utcnow
from engine.delivery import ledger
from engine.store.tables import Worker

HOST = socket.gethostname()


def register(engine: Engine) -> str:
    worker_id = uuid.uuid4().hex
    with engine.begin() as connection:
        heartbeat(connection, worker_id)
    return worker_id


def heartbeat(connection: Connection, worker_id: str) -> None:
    """Say this worker is alive; write its row again if another judged it dead during an outage."""
    now = utcnow()
    if not connection.execute(update(Worker).where(col(Worker.id) == worker_id).values(heartbeat_at=now)).rowcount:
        connection.execute(
            insert(Worker),
            {"id": worker_id, "host": HOST, "pid": os.getpid(), "started_at": now, "heartbeat_at": now},
        )


def retire(engine: Engine, worker_id: str) -> None:
    """A worker that stops cleanly leaves nothing in flight; its row goes."""
    with engine.begin() as connection:
        connection.execute(delete(Worker).where(col(Worker.id) == worker_id))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_workers(connection: Connection, lease: timedelta) -> list[str]:
    """Workers whose process is gone (same host) or whose heartbeat is older than the lease."""
    stale = utcnow() - lease
    rows = connection.execute(select(col(Worker.id), col(Worker.host), col(Worker.pid), col(Worker.heartbeat_at))).all()
    return [r.id for r in rows if r.heartbeat_at < stale or (r.host == HOST and not _alive(r.pid))]


def recover_in_flight(connection: Connection, lease: timedelta, now: datetime, me: str | None = None) -> int:
    """Sends claimed by a dead worker become `unknown`: it may or may not have sent them. So do
    this worker's own: a tick starts with nothing in flight, so any left are from a failed tick."""
    dead = dead_workers(connection, lease) + ([me] if me else [])
    count = ledger.mark_unknown(connection, dead, now - lease, now)
    others = [w for w in dead if w != me]
    if others:
        connection.execute(delete(Worker).where(col(Worker.id).in_(others)))
    return count
