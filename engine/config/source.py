"""Load YAML that people write, keeping where every value stood, so that a validation error
points at `file:line:column` instead of at a path the marketer has to decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from engine.errors import Problem

Location = tuple[int, int]
KeyPath = tuple[Any, ...]  # the keys and indices from the document's root to a value
Model = TypeVar("Model", bound=BaseModel)


class Located:
    """A parsed YAML document with the (line, column) of each value by its path of keys/indices."""

    def __init__(self, file: str, data: Any, positions: dict[KeyPath, Location]):
        self.file = file
        self.data = data
        self.positions = positions

    def problem(self, path: KeyPath, message: str) -> Problem:
        """A problem located at the deepest known position along `path`."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        line, column = self.positions.get(path, (1, 1))
        return Problem(self.file, line, column, message)

    def validate(self, model: type[Model], context: dict[str, Any] | None = None) -> tuple[Model | None, list[Problem]]:
        """Validate against a pydantic model; return the instance or the located problems."""
        try:
            return model.model_validate(self.data, context=context), []
        except ValidationError as exc:
            return None, [self.problem(_clean_loc(err["loc"]), _message(err)) for err in exc.errors()]


def load_located(path: Path, display: str | None = None) -> tuple[Located | None, list[Problem]]:
    """Parse a YAML file; a syntax error comes back as a located problem."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, 1, 1, f"cannot read the file: {exc}")]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, [Problem(name, line, col, f"invalid YAML: {exc.problem or exc}")]
    positions: dict[KeyPath, Location] = {}
    try:
        data = _convert(node, (), positions) if node is not None else {}
    except _DuplicateKey as exc:
        return None, [Problem(name, exc.line, exc.column, f"the key '{exc.key}' appears twice")]
    except yaml.YAMLError as exc:
        return None, [Problem(name, 1, 1, f"invalid YAML: {exc}")]
    return Located(name, data, positions), []


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, column: int):
        self.key, self.line, self.column = key, line, column


def _convert(node: yaml.Node, path: KeyPath, positions: dict[KeyPath, Location]) -> Any:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(" ").construct_object(key_node)  # scalars only in our files
            if key in result:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _convert(value_node, (*path, key), positions)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), positions) for i, item in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def _clean_loc(loc: KeyPath) -> KeyPath:
    """Drop pydantic's union/tag markers so the path matches YAML keys."""
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part.startswith("function-"))))


def _message(error: ErrorDetails) -> str:
    loc = _clean_loc(error["loc"])
    field = ".".join(str(p) for p in loc) or "the document"
    kind = error["type"]
    if kind == "missing":
        return f"'{field}' is required"
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1] if loc else field}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"{field}: {message}"
