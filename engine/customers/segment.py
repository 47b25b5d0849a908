"""Segment's tracking format (also RudderStack's), read into the importer's records, so that the
client libraries a business already runs can feed the engine unchanged.

An `identify` call is a customer: `userId` is the id, `traits` the profile (`email`, `firstName`,
`lastName` or `name`, `createdAt`; every other trait an attribute), the call's `context` gives the
locale and timezone. A `track` call is an event: `messageId` is the event's id, so a client's retry
stores nothing twice. `page`, `screen`, `group` and `alias` calls carry nothing the engine uses:
they are counted and left. What cannot be read becomes a `BadRecord` naming the field, and fails
alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from engine.config.settings import Config
from engine.customers.importing import BadRecord

IGNORED_TYPES = frozenset({"page", "screen", "group", "alias"})
PROFILE_TRAITS = frozenset({"email", "firstName", "first_name", "lastName", "last_name", "name", "createdAt"})


class Call(NamedTuple):
    """One call of a batch as the importer reads it: `kind` is "customers" or "events", or None
    for a call the engine has no use for; `record` may be a BadRecord saying why it cannot be read.
    A tuple: made for each of thousands of calls a second, in a third of a frozen dataclass's time."""

    position: int  # in the batch (`index` is a tuple method)
    kind: str | None
    record: dict[str, Any] | BadRecord


def calls(messages: list[Any], config: Config) -> list[Call]:
    """Each message of a batch as a Call, in the order the importer must store them: identifies
    before tracks, so that a batch may name a new customer and their first events together."""
    read = [_call(index, message, config) for index, message in enumerate(messages)]
    return sorted(read, key=lambda call: call.kind != "customers")


def _call(index: int, message: Any, config: Config) -> Call:
    if not isinstance(message, dict):
        return Call(index, "events", BadRecord("each call must be a JSON object"))
    kind = message.get("type")
    try:
        if kind == "identify":
            return Call(index, "customers", customer_of(message, config))
        if kind == "track":
            return Call(index, "events", event_of(message))
    except BadRecord as problem:
        return Call(index, "customers" if kind == "identify" else "events", problem)
    if kind in IGNORED_TYPES:
        return Call(index, None, {})
    return Call(index, "events", BadRecord(f"'type' must be identify or track (or {_ignored()}), not {kind!r}"))


def customer_of(message: dict[str, Any], config: Config) -> dict[str, Any]:
    """An identify call as a customer record; the email may be left out for a known customer."""
    traits = _mapping(message, "traits")
    context = _mapping(message, "context")
    record: dict[str, Any] = {"id": _user_id(message)}
    if "email" in traits:
        record["email"] = traits["email"]
    first, last = _names(traits)
    if first is not None:
        record["first_name"] = first
    if last is not None:
        record["last_name"] = last
    if traits.get("createdAt"):
        record["created_at"] = traits["createdAt"]
    if locale := _locale(context.get("locale"), config):
        record["locale"] = locale
    if context.get("timezone"):
        record["timezone"] = context["timezone"]
    record["attributes"] = {name: value for name, value in traits.items() if name not in PROFILE_TRAITS}
    return record


def event_of(message: dict[str, Any]) -> dict[str, Any]:
    """A track call as an event record: `messageId` its id, `timestamp` its time."""
    at = message.get("timestamp") or message.get("originalTimestamp")
    if not at:
        raise BadRecord("'timestamp' is required: when the customer did it")
    record = {"customer": _user_id(message), "event": message.get("event"), "at": at}
    record["properties"] = _mapping(message, "properties")
    if message.get("messageId") is not None:
        record["id"] = message["messageId"]
    return record


def _user_id(message: dict[str, Any]) -> Any:
    user_id = message.get("userId")
    if user_id is None or user_id == "":
        raise BadRecord("'userId' is required: the engine knows customers by their id, not an anonymousId")
    return user_id


def _mapping(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name) or {}
    if not isinstance(value, dict):
        raise BadRecord(f"'{name}' must be an object, not {type(value).__name__}")
    return value


def _names(traits: dict[str, Any]) -> tuple[Any, Any]:
    """First and last name from `firstName`/`lastName` (or snake case), else split from `name`."""
    first = traits.get("firstName", traits.get("first_name"))
    last = traits.get("lastName", traits.get("last_name"))
    if first is None and last is None and isinstance(traits.get("name"), str):
        first, _, rest = traits["name"].strip().partition(" ")
        last = rest.strip() or None
    return first, last


def _locale(value: Any, config: Config) -> str | None:
    """A client's locale (`ar-EG`, `en_US`) as one of the configured locales, or None."""
    if not isinstance(value, str):
        return None
    language = value.replace("_", "-").split("-")[0].lower()
    return language if language in config.locales else None


def _ignored() -> str:
    return ", ".join(sorted(IGNORED_TYPES))
