"""Load YAML that people write, keeping where every key and value stood, so that a validation error
points at `file:line:column` of the thing to change instead of at a path the marketer has to decode."""

from __future__ import annotations

import difflib
import re
import typing
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import SafeConstructor

from engine.errors import Problem

Location = tuple[int, int]
KeyPath = tuple[Any, ...]  # the keys and indices from the document's root to a value
Model = TypeVar("Model", bound=BaseModel)

_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class Located:
    """A parsed YAML document: its data, and by path of keys/indices where each value and each
    key stood (line, column) and the text each scalar was written as."""

    def __init__(self, file: str, data: Any):
        self.file = file
        self.data = data
        self.positions: dict[KeyPath, Location] = {}
        self.keys: dict[KeyPath, Location] = {}
        self.texts: dict[KeyPath, str] = {}

    def at(self, path: KeyPath) -> Location:
        """Where to send the reader for `path`: a scalar's value; a mapping's or list's key (the
        line that names it); for a path not in the file, the nearest enclosing one."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        if path in self.keys and path not in self.texts:
            return self.keys[path]
        return self.positions.get(path, (1, 1))

    def problem(self, path: KeyPath, message: str) -> Problem:
        line, column = self.at(path)
        return Problem(self.file, line, column, message)

    def key_problem(self, path: KeyPath, message: str) -> Problem:
        """A problem with a key itself (unknown, misplaced): on the key, not on its value."""
        line, column = self.keys.get(tuple(path)) or self.at(path)
        return Problem(self.file, line, column, message)

    def validate(self, model: type[Model], context: dict[str, Any] | None = None) -> tuple[Model | None, list[Problem]]:
        """Validate against a pydantic model; return the instance or every located problem."""
        try:
            return model.model_validate(self.data, context=context), []
        except ValidationError as exc:
            errors = [(_clean_loc(error["loc"], self.data), error) for error in exc.errors()]
            # A misspelt key is one mistake: "unknown key 'tigger': did you mean 'trigger'?" is
            # enough, without "'trigger' is required" as well.
            meant = {(*loc[:-1], _closest(model, loc)) for loc, error in errors if error["type"] == "extra_forbidden"}
            problems: dict[str, Problem] = {}
            for loc, error in errors:
                if error["type"] == "missing" and loc in meant:
                    continue
                problem = self._error(model, loc, error)
                problems.setdefault(f"{problem.line}:{problem.column}:{problem.message}", problem)
            return None, sorted(problems.values(), key=lambda p: (p.line, p.column))

    def _error(self, model: type[BaseModel], loc: KeyPath, error: ErrorDetails) -> Problem:
        if error["type"] == "missing":
            return self.problem(loc[:-1], f"'{_dotted(loc)}' is required{_help(model, loc)}")
        if error["type"] == "extra_forbidden":
            return self.key_problem(loc, _unknown_key(model, loc))
        if "[key]" in error["loc"]:
            return self.key_problem(loc, _message(error, loc[:-1], None, []))
        return self.problem(loc, _message(error, loc, self.texts.get(loc), _known_keys(model, loc)))


def load_located(
    path: Path, display: str | None = None, expected: str = "keys"
) -> tuple[Located | None, list[Problem]]:
    """Parse a YAML file that must hold a mapping (`expected` says of what, for an empty or
    wrong-shaped file); a syntax error, an alias or a duplicate key comes back located."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, [Problem(name, 1, 1, f"cannot read the file: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        byte = raw[exc.start : exc.start + 1].hex()
        return None, [Problem(name, line, column, f"the file is not UTF-8 text (byte 0x{byte}): save it as UTF-8")]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, [Problem(name, line, col, _syntax_message(exc))]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, [Problem(name, 1, 1, f"invalid YAML: {_describe(exc)}")]
    if node is None:
        return None, [Problem(name, 1, 1, f"the file is empty: it should hold {expected}")]
    if not isinstance(node, yaml.MappingNode):
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        shape = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        return None, [Problem(name, line, column, f"the file holds {shape}; it should hold {expected}")]
    located = Located(name, None)
    builder = _Builder(located)
    try:
        located.data = builder.convert(node, ())
    except RecursionError:
        return None, [Problem(name, 1, 1, "invalid YAML: nested too deeply")]
    return (None, builder.problems) if builder.problems else (located, [])


class _Loader(yaml.SafeLoader):
    """Refuses aliases while composing, so that nothing is ever expanded: a few hundred bytes of
    nested aliases ("billion laughs") or an alias of itself fail at once, on their line."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed: write the value out in full",
                event.start_mark,
            )
        return super().compose_node(parent, index)


class _Builder:
    """Turns composed nodes into Python values, noting where each stood; a duplicate or
    non-scalar key is a problem of its own, and every one of them is collected."""

    def __init__(self, located: Located):
        self.located = located
        self.problems: list[Problem] = []
        self.constructor = SafeConstructor()

    def convert(self, node: yaml.Node, path: KeyPath) -> Any:
        self.located.positions[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        self.located.texts[path] = node.value
        if node.tag in (_INT, _FLOAT) and ":" in node.value:
            return node.value  # YAML 1.1 reads 09:00 as a number of minutes (sexagesimal); people mean a time
        return self.constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._add(key_node, 'a value that starts with { or [ must be in quotes (like "{{ name }}")')
                continue
            key = self.constructor.construct_object(key_node)
            if key in result:
                self._add(key_node, f"the key '{key}' appears twice in the same place: keep one")
                continue
            self.located.keys[(*path, key)] = _mark(key_node)
            result[key] = self.convert(value_node, (*path, key))
        return result

    def _add(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.located.file, *_mark(node), message))


def _mark(node: yaml.Node) -> Location:
    return node.start_mark.line + 1, node.start_mark.column + 1


_SYNTAX_HINTS = {
    "mapping values are not allowed here": "a value holds ': ': put the whole value in quotes",
    "found character '\\t' that cannot start any token": "a tab: indent with spaces, not tabs",
    "found unexpected end of stream": "a quote is opened and never closed",
    "but found another document": "a second document (---): keep one document per file",
    "could not find expected ':'": "a line without 'key: value', or a quote not closed",
    "expected <block end>, but found '<block mapping start>'": "this line is indented differently from the one above",
    "expected <block end>, but found '-'": "a list item (-) is indented differently from the ones above",
}


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    problem = str(exc.problem or exc)
    hint = _SYNTAX_HINTS.get(problem)
    if problem.startswith("YAML aliases"):
        return problem
    return f"invalid YAML: {hint} ({problem})" if hint else f"invalid YAML: {problem}"


def _describe(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _clean_loc(loc: tuple[int | str, ...], data: Any) -> KeyPath:
    """Drop pydantic's markers (union members, validators, dict keys) so the path matches YAML keys;
    a member's name like `str` is a marker only where the data has no such key."""
    path: list[Any] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue
        if part in _UNION_MEMBERS and not (isinstance(data, dict) and part in data):
            continue
        path.append(part)
        data = data.get(part) if isinstance(data, dict) else data[part] if _indexes(data, part) else None
    return tuple(path)


def _indexes(data: Any, part: Any) -> bool:
    return isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)


_UNION_MEMBERS = {"str", "int", "float", "bool", "datetime", "date", "timedelta", "list", "dict", "literal"}


def _dotted(loc: KeyPath) -> str:
    """The path as a marketer reads it: the keys, without list positions (the line says which)."""
    return ".".join(str(p) for p in loc if not isinstance(p, int)) or "the file"


def _unknown_key(model: type[BaseModel], loc: KeyPath) -> str:
    """Say which key was meant: a close known one, a model's hint for a key that belongs elsewhere
    (its `key_hints`), or the keys known there."""
    key = str(loc[-1]) if loc else "?"
    hints = {k: v for m in _models_at(model, loc[:-1]) for k, v in getattr(m, "key_hints", {}).items()}
    known, close = _known_keys(model, loc[:-1]), _closest(model, loc)
    where = f" under {_dotted(loc[:-1])}" if [p for p in loc[:-1] if not isinstance(p, int)] else ""
    if key in hints:
        hint = f": {hints[key]}"
    elif close:
        hint = f": did you mean '{close}'?"
    else:
        hint = f" (known keys: {', '.join(known)})" if known else ""
    return f"unknown key '{key}'{where}{hint}"


def _help(model: type[BaseModel], loc: KeyPath) -> str:
    """A required field's description, which says what to write."""
    for m in _models_at(model, loc[:-1]):
        field = next((f for n, f in m.model_fields.items() if loc[-1] in (n, f.alias)), None)
        if field is not None and field.description:
            return f": {field.description}"
    return ""


def _closest(model: type[BaseModel], loc: KeyPath) -> str | None:
    """The known key closest to the unknown one at the end of `loc`."""
    close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc[:-1]), n=1, cutoff=0.6)
    return close[0] if close else None


def _known_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    return [f.alias or n for m in _models_at(model, path) for n, f in m.model_fields.items() if not f.exclude]


def _models_at(model: type[BaseModel], path: KeyPath) -> list[type[BaseModel]]:
    """The models that read the mapping at `path`, following fields, lists and dicts down the type."""
    types: list[Any] = [model]
    for part in path:
        types = [inner for t in types for inner in _step(t, part)]
    types = [t for a in types for t in _alternatives(a)]
    return [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]


def _step(annotation: Any, part: Any) -> list[Any]:
    """The types one key or index further down `annotation`."""
    found: list[Any] = []
    for t in _alternatives(annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            found += [f.annotation for n, f in t.model_fields.items() if part in (n, f.alias)]
        elif typing.get_origin(t) in (list, dict) and typing.get_args(t):
            found.append(typing.get_args(t)[-1])
    return found


def _alternatives(annotation: Any) -> list[Any]:
    """The members of a union (and an Optional), with Annotated unwrapped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _alternatives(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) not in (list, dict, typing.Literal):
        return [a for arg in args for a in _alternatives(arg)]
    return [annotation]


def _unquoted(text: str | None, value: Any) -> str:
    """What YAML made of a word that was meant as text."""
    if value is None:
        return f"unquoted {text} is YAML's empty value"
    if isinstance(value, bool):
        return f"unquoted, YAML reads {text} as {str(value).lower()}"
    kind = "a date and time" if isinstance(value, datetime) else "a date" if isinstance(value, date) else "a number"
    return f"unquoted, YAML reads {text} as {kind}"


def _message(error: ErrorDetails, loc: KeyPath, text: str | None, keys: list[str]) -> str:
    """Pydantic's message, reworded for someone who writes YAML rather than Python; `keys` are the
    keys the value at `loc` may have, when it should be a mapping."""
    field, kind, value = _dotted(loc), error["type"], error.get("input")
    shown = text if text is not None else value
    if kind == "string_type" and not isinstance(value, (dict, list)):
        if value is None and not text:
            return f"{field} is empty: write a value after the colon"
        return f"{field}: write '{text}' in quotes: {_unquoted(text, value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        found = "a list" if isinstance(value, list) else f"'{shown}'"
        return f"{field} takes keys under it ({', '.join(keys) or 'key: value'}), not {found}"
    if kind == "list_type":
        return f"{field} takes a list: [a, b], or one item per line starting with '- '"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        hint = f": did you mean '{close[0]}'?" if close else ""
        return f"{field}: '{shown}' is not one of {', '.join(choices)}{hint}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{field}: '{shown}' is not a whole number: write one like 10"
    if kind in ("float_parsing", "float_type"):
        return f"{field}: '{shown}' is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{field}: '{shown}' is not true or false: write one of them"
    if kind in ("greater_than", "greater_than_equal"):
        bound = (error.get("ctx") or {}).get("gt", (error.get("ctx") or {}).get("ge"))
        relation = "more than" if kind == "greater_than" else "at least"
        return f"{field}: '{shown}' must be {relation} {bound:g}"
    if kind in ("datetime_parsing", "datetime_type", "datetime_from_date_parsing"):
        return f"{field}: '{shown}' is not a date and time: write it like 2026-12-01T09:00:00Z"
    if kind == "too_short" and isinstance(value, list):
        return f"{field}: the list is empty: it needs at least one item"
    message = error["msg"].removeprefix("Value error, ")
    last = str(next((p for p in reversed(loc) if not isinstance(p, int)), ""))
    if message.startswith(f"{last} "):
        return message  # it names the key already: "topic 'x' is not declared"
    return f"{field} {message}" if message.startswith(("is ", "takes ")) else f"{field}: {message}"
