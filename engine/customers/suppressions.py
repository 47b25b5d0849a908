"""The suppression list: addresses that get nothing, of any type (bounces, complaints, manual)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col

from engine.store.dialect import insert_new
from engine.store.tables import Suppression, table_of


def normalise(email: str) -> str:
    return email.strip().lower()


def add_suppression(engine: Engine, email: str, reason: str, now: datetime) -> bool:
    with engine.begin() as connection:
        statement = insert_new(connection, table_of(Suppression), ["email"])
        return bool(
            connection.execute(statement, {"email": normalise(email), "reason": reason, "created_at": now}).rowcount
        )


def remove_suppression(engine: Engine, email: str) -> bool:
    with engine.begin() as connection:
        return bool(connection.execute(delete(Suppression).where(col(Suppression.email) == normalise(email))).rowcount)
