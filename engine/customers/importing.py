"""Import customers and events from CSV or JSONL files, or from lists of records (the API).

Every record is checked first: a value of a declared attribute or property (config.yaml's
`attributes:` and `events:`) must fit its type, an undeclared one is typed by its look, and a
number that is not finite, a NUL character or text that is not Unicode is refused anywhere.

A file is imported row by row: the good rows are stored (in batches), the bad ones are listed
with their line and nothing of them is stored, and a bad row never stops the rows after it. A file
that is not UTF-8 is refused whole before anything is stored. The API's import is all-or-nothing
(`Importer.all_or_nothing`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError

from engine.clock import parse_instant, utcnow
from engine.config.datamodel import Declared, convert, iso
from engine.config.settings import Config
from engine.errors import Problem, ProblemsError
from engine.store.dialect import ids_of, insert_rows, insert_rows_new
from engine.store.jsontext import quick_json
from engine.store.tables import Consent, Customer, Event, Subscription, table_of

CORE = ("id", "email", "first_name", "last_name", "locale", "timezone", "created_at", "confirmed_at", "topics")
BATCH = 1000
NEW_CUSTOMER = {"first_name": None, "last_name": None, "locale": None, "timezone": None, "confirmed_at": None}
CUSTOMERS, SUBSCRIPTIONS, CONSENTS = table_of(Customer), table_of(Subscription), table_of(Consent)
EVENTS = table_of(Event)
Row = dict[str, Any]  # a record, checked and converted for the store
Batch = list[tuple[int, Row]]  # (line or index, row)
Clean = Callable[[dict[str, Any]], Row]
Progress = Callable[[int], None] | None


@dataclass
class ImportResult:
    stored: int = 0
    skipped: int = 0  # events whose id was already stored
    problems: list[Problem] = field(default_factory=list)


Store = Callable[[Connection, Batch, str, ImportResult], None]  # stores a batch in the caller's transaction


class BadRecord(ValueError):
    pass


class _Refused(Exception):
    """Rolls back an all-or-nothing import once a record is found bad while storing."""


# The spellings of non-finite numbers in JSON, JavaScript and Python: refused, not read as text.
NON_FINITE = {"NaN", "nan", "Infinity", "-Infinity", "+Infinity", "inf", "-inf", "+inf"}


def check_utf8(path: Path) -> None:
    """Refuse a file in another encoding (a Latin-1 CSV) before anything of it is stored: one
    located problem, not a traceback halfway through."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProblemsError(
                    [
                        Problem(
                            str(path),
                            number,
                            exc.start + 1,
                            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02X} cannot be read): "
                            "save it as UTF-8 and import it again",
                        )
                    ]
                ) from None


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    """(line, record) for each record of a CSV or JSONL file; a malformed line yields BadRecord."""
    check_utf8(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                if None in row:
                    yield reader.line_num, BadRecord("more values than there are column headers")
                    continue
                yield reader.line_num, {k.strip(): v for k, v in row.items() if v not in (None, "")}
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, BadRecord(f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            yield number, record if isinstance(record, dict) else BadRecord("each line must be a JSON object")


def typed(value: Any) -> Any:
    """CSV cells and JSON strings: numbers, booleans and ISO-8601 dates become typed values."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text in NON_FINITE:
        raise BadRecord(f"'{text}' is not a finite number")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 10 and text[4:5] == "-" and text[7:8] == "-":
        try:
            return iso(date.fromisoformat(text)) if len(text) == 10 else iso(parse_instant(text))
        except ValueError:
            pass
    return text


def _boolean(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "no"):
        return False
    raise BadRecord(f"{what} must be true or false, not '{value}'")


def clean_customer(record: dict[str, Any], config: Config, now: datetime) -> dict[str, Any]:
    """Check one customer record; raise BadRecord with the reason."""
    external_id = _text(record, "id")
    if not external_id:
        raise BadRecord("'id' is required")
    clean: dict[str, Any] = {"external_id": external_id}
    if "email" in record:  # left out, it keeps a known customer's email (a new one needs it)
        try:
            clean["email"] = validate_email(_text(record, "email"), check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            raise BadRecord(f"email '{record.get('email', '')}' is not valid: {exc}") from None
    for name in ("first_name", "last_name"):
        if record.get(name) is not None:
            clean[name] = _text(record, name)
    if record.get("locale"):
        clean["locale"] = _text(record, "locale")
    if record.get("timezone"):
        timezone = _text(record, "timezone")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
            raise BadRecord(f"timezone '{timezone}' is not an IANA timezone (like Europe/London)") from None
        clean["timezone"] = timezone
    for name in ("created_at", "confirmed_at"):
        if record.get(name):
            try:
                clean[name] = parse_instant(str(record[name]), config.timezone)
            except (ValueError, OverflowError) as exc:
                raise BadRecord(f"{name}: {exc}") from None
    if not isinstance(record.get("topics") or {}, dict):
        raise BadRecord("'topics' must be an object of topic: true or false")
    topics = dict(record.get("topics") or {})
    topics.update({k.split(":", 1)[1]: v for k, v in record.items() if k.startswith("topic:")})
    unknown = [t for t in topics if t not in config.topics]
    if unknown:
        raise BadRecord(f"topic '{unknown[0]}' is not declared under topics: in config.yaml")
    clean["topics"] = {t: _boolean(v, f"topic:{t}") for t, v in topics.items()}
    attributes = {k: v for k, v in record.items() if k not in CORE and not k.startswith("topic:") and k != "attributes"}
    if isinstance(record.get("attributes"), dict):
        attributes.update(record["attributes"])
    model = config.data_model
    clean["attributes"] = {k: _value(k, v, model.attribute(k), config.timezone) for k, v in attributes.items()}
    return clean


# The longest text each core field may hold (the columns' lengths in engine/store/tables.py).
TEXT_LIMITS = {
    "id": 200,
    "email": 320,
    "first_name": 200,
    "last_name": 200,
    "locale": 20,
    "timezone": 64,
    "customer": 200,
    "event": 100,
}


def _text(record: dict[str, Any], name: str) -> str:
    """A core field as text: a string or a number, within its column's length."""
    value = record.get(name, "")
    if type(value) is not str:  # text is the usual case, and needs no conversion
        if isinstance(value, (dict, list, bool)):
            raise BadRecord(f"'{name}' must be text, not {type(value).__name__}")
        value = str(value)
    text = value.strip()
    if len(text) > TEXT_LIMITS[name]:
        raise BadRecord(f"'{name}' is longer than {TEXT_LIMITS[name]} characters")
    return text


def _value(name: str, value: Any, declared: Declared | None, timezone: str) -> Any:
    """A value of an attribute or property: converted to its declared type, else typed by its look."""
    if value is None:
        return None
    if declared is None:
        try:
            return typed(value)
        except BadRecord as exc:
            raise BadRecord(f"{name}: {exc}") from None
    try:
        return convert(declared, value, timezone)
    except ValueError as exc:
        raise BadRecord(f"{name} is declared {declared.type.value} in config.yaml: {exc}") from None


# One encoder for all records: json.dumps with options builds a new one for each.
STORABLE_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def check_storable(value: Any, where: str = "") -> None:
    """Refuse what the store could not write or read back: a number that is not finite (NaN,
    Infinity), a NUL character, text that is not Unicode (a lone surrogate). orjson, in Rust,
    passes most records at once (`quick_json`); the standard library's encoder, in C, passes what
    else is sound at a glance; only the rest is walked, to say where the fault is."""
    quick = quick_json(value)
    if quick is not None and b"\\u0000" not in quick:
        return
    try:
        text = STORABLE_JSON(value)
        text.encode("utf-8")
    except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        pass
    else:
        if "\\u0000" not in text:
            return
    _find_unstorable(value, where)


def _find_unstorable(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRecord(f"{where or 'a value'}: {value} is not a finite number")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRecord(f"{where or 'a value'}: text may not contain a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRecord(f"{where or 'a value'}: text that is not valid Unicode") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_unstorable(key, where)
            _find_unstorable(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _find_unstorable(item, f"{where}[{index}]")


def clean_event(record: dict[str, Any], config: Config) -> dict[str, Any]:
    customer = _text(record, "customer")
    name = _text(record, "event")
    if not customer:
        raise BadRecord("'customer' is required")
    if not name:
        raise BadRecord("'event' is required")
    if not record.get("at"):
        raise BadRecord("'at' is required")
    try:
        at = parse_instant(str(record["at"]), config.timezone)
    except (ValueError, OverflowError) as exc:
        raise BadRecord(f"at: {exc}") from None
    properties = record.get("properties") or {}
    if not isinstance(properties, dict):
        raise BadRecord("'properties' must be an object")
    declared = config.events.get(name)  # config.data_model builds a model on each call
    if declared:
        properties = {
            k: v if (kind := declared.get(k)) is None else _value(k, v, kind, config.timezone)
            for k, v in properties.items()
        }
    uid = _text(record, "id") if record.get("id") is not None else None
    return {
        "uid": uid,
        "customer": customer,
        "name": name,
        "at": at,
        "properties": properties,
    }


class Importer:
    def __init__(self, engine: Engine, config: Config, now: datetime | None = None, source: str = "import"):
        self.engine = engine
        self.config = config
        self.now = now or utcnow()
        self.source = source

    def customers(
        self, records: Iterable[tuple[int, Any]], label: str, progress: Callable[[int], None] | None = None
    ) -> ImportResult:
        return self._run(
            records, label, lambda r: clean_customer(r, self.config, self.now), self._store_customers, progress
        )

    def events(
        self, records: Iterable[tuple[int, Any]], label: str, progress: Callable[[int], None] | None = None
    ) -> ImportResult:
        return self._run(records, label, lambda r: clean_event(r, self.config), self._store_events, progress)

    def all_or_nothing(self, kind: str, records: list[Any], label: str) -> ImportResult:
        """The API's import: every record is checked first and then all are stored in ONE
        transaction, or none is. A problem's `line` is the record's index in the list.
        `kind` is "customers" or "events"."""
        cleaners: dict[str, Clean] = {
            "customers": lambda r: clean_customer(r, self.config, self.now),
            "events": lambda r: clean_event(r, self.config),
        }
        clean = cleaners[kind]
        store = {"customers": self._store_customers, "events": self._store_events}[kind]
        result, batch = ImportResult(), []
        for index, record in enumerate(records):
            try:
                batch.append((index, checked_record(clean, record)))
            except BadRecord as exc:
                result.problems.append(Problem(label, index, 1, str(exc)))
        if result.problems or not batch:
            return result
        try:
            with self.engine.begin() as connection:
                store(connection, batch, label, result)
                if result.problems:  # e.g. an event's customer does not exist
                    raise _Refused
        except _Refused:
            result.stored = result.skipped = 0
        return result

    def _run(
        self, records: Iterable[tuple[int, Any]], label: str, clean: Clean, store: Store, progress: Progress
    ) -> ImportResult:
        result, batch = ImportResult(), []
        for line, record in records:
            try:
                batch.append((line, checked_record(clean, record)))
            except BadRecord as exc:
                result.problems.append(Problem(label, line, 1, str(exc)))
            if len(batch) >= BATCH:
                self._flush(store, batch, label, result, progress)
                batch = []
        if batch:
            self._flush(store, batch, label, result, progress)
        return result

    def _flush(self, store: Store, batch: Batch, label: str, result: ImportResult, progress: Progress) -> None:
        """Store a batch in one transaction; should the database refuse it, store its rows one by
        one, so that the row it refuses is listed and the others are stored."""
        before = (result.stored, result.skipped, len(result.problems))
        try:
            with self.engine.begin() as connection:
                store(connection, batch, label, result)
        except (DataError, IntegrityError):
            result.stored, result.skipped = before[:2]
            del result.problems[before[2] :]
            for line, row in batch:
                try:
                    with self.engine.begin() as connection:
                        store(connection, [(line, row)], label, result)
                except (DataError, IntegrityError) as exc:
                    result.problems.append(Problem(label, line, 1, f"the database refused this row: {exc.orig}"))
        if progress:
            progress(len(batch))

    def _store_customers(self, connection: Connection, batch: Batch, label: str, result: ImportResult) -> None:
        latest: dict[str, Row] = {}
        for _, row in batch:  # a later line for an id overrides what it gives of an earlier one
            earlier = latest.get(row["external_id"])
            latest[row["external_id"]] = row if earlier is None else _merged(earlier, row)
        existing = customer_ids(connection, latest)
        attrs: dict[int, dict[str, Any]] = dict(
            connection.execute(
                select(CUSTOMERS.c.id, CUSTOMERS.c.attributes).where(CUSTOMERS.c.id.in_(existing.values()))
            ).all()
        )
        for line, row in batch:
            key = row["external_id"]
            if key not in existing and "email" not in latest.get(key, row):
                result.problems.append(Problem(label, line, 1, f"customer '{key}' is new: 'email' is required"))
                latest.pop(key, None)
        new = [
            {**NEW_CUSTOMER, "created_at": self.now, **_columns(row)}
            for key, row in latest.items()
            if key not in existing
        ]
        insert_rows(connection, CUSTOMERS, new)
        for key, row in latest.items():
            if key in existing:
                values = _columns(row) | {"attributes": {**attrs[existing[key]], **row["attributes"]}}
                connection.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == existing[key]).values(values))
        self._consents(connection, latest, customer_ids(connection, latest))
        result.stored += sum(1 for _, row in batch if row["external_id"] in latest)

    def _consents(self, connection: Connection, latest: dict[str, Row], ids: dict[str, int]) -> None:
        """Topic choices and confirmations from the file, each with a consent record."""
        choices: list[Row] = []
        consents: list[Row] = []
        for key, row in latest.items():
            for topic, subscribed in row["topics"].items():
                choices.append(
                    {
                        "customer_id": ids[key],
                        "topic": topic,
                        "subscribed": subscribed,
                        "updated_at": self.now,
                        "source": self.source,
                    }
                )
                consents.append(
                    {
                        "customer_id": ids[key],
                        "topic": topic,
                        "at": self.now,
                        "source": self.source,
                        "action": "subscribe" if subscribed else "unsubscribe",
                    }
                )
            if row.get("confirmed_at"):
                consents.append(
                    {
                        "customer_id": ids[key],
                        "topic": None,
                        "at": row["confirmed_at"],
                        "source": self.source,
                        "action": "confirm",
                    }
                )
        if choices:
            keys = [(c["customer_id"], c["topic"]) for c in choices]
            for customer_id, topic in keys:
                connection.execute(
                    SUBSCRIPTIONS.delete().where(
                        SUBSCRIPTIONS.c.customer_id == customer_id, SUBSCRIPTIONS.c.topic == topic
                    )
                )
            connection.execute(SUBSCRIPTIONS.insert(), choices)
        if consents:
            connection.execute(CONSENTS.insert(), consents)

    def _store_events(self, connection: Connection, batch: Batch, label: str, result: ImportResult) -> None:
        ids = customer_ids(connection, {row["customer"] for _, row in batch})
        rows = []
        for line, row in batch:
            if row["customer"] not in ids:
                result.problems.append(Problem(label, line, 1, f"customer '{row['customer']}' does not exist"))
                continue
            rows.append(
                {
                    "uid": row["uid"],
                    "customer_id": ids[row["customer"]],
                    "name": row["name"],
                    "at": row["at"],
                    "properties": row["properties"],
                }
            )
        with_uid = [r for r in rows if r["uid"] is not None]
        without = [r for r in rows if r["uid"] is None]
        stored = 0
        if with_uid:
            stored += insert_rows_new(connection, EVENTS, ["uid"], with_uid)
        insert_rows(connection, EVENTS, without)
        stored += len(without)
        result.stored += stored
        result.skipped += len(rows) - stored


def checked_record(clean: Clean, record: dict[str, Any] | BadRecord) -> Row:
    """One record cleaned, or BadRecord with the reason: never another exception."""
    if isinstance(record, BadRecord):
        raise record
    if not isinstance(record, dict):
        raise BadRecord("each record must be a JSON object")
    check_storable(record)
    try:
        return clean(record)
    except BadRecord:
        raise
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BadRecord(f"cannot read this record: {exc}") from None


def customer_ids(connection: Connection, external_ids: Iterable[str]) -> dict[str, int]:
    """The store's id of each customer of `external_ids` that exists."""
    return ids_of(connection, CUSTOMERS.c.external_id, list(external_ids))


def _merged(earlier: Row, later: Row) -> Row:
    return {
        **earlier,
        **later,
        "attributes": {**earlier["attributes"], **later["attributes"]},
        "topics": {**earlier["topics"], **later["topics"]},
    }


def _columns(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("topics",)}
