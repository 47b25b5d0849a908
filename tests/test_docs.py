"""The documentation in docs/ covers what the product offers: every command and option, every config key,
every trigger, condition, operator and filter, every route; and no link in it or in the README leads out of the
repository. (`make check` builds it with `mkdocs build --strict`, which fails on a broken link inside docs/.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from conftest import REPO
from pydantic import BaseModel

from engine.campaigns.language import OPERATORS, Condition, Trigger
from engine.cli import app
from engine.config.settings import Config
from engine.web.openapi import document

DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)|<(https?://[^>]+)>")


def text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every command of the app by its full name (`db upgrade`); typer's groups are those with commands."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found |= commands(command, f"{prefix}{name} ")
        else:
            found[prefix + name] = command
    return found


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = prefix + (field.alias or name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += config_keys(annotation, key + ".")
        else:
            keys.append(key)
    return keys


@pytest.mark.parametrize("page", [*sorted(p.name for p in DOCS.glob("*.md")), "../README.md"])
def test_no_link_leads_out_of_the_repository(page):
    path = (DOCS / page).resolve()
    for match in LINK.finditer(path.read_text(encoding="utf-8")):
        target = match.group(1) or match.group(2)
        assert not re.match(r"[a-z]+:", target), f"{page}: {target} leads out of the repository"
        file = target.split("#")[0]
        if file:
            resolved = (path.parent / file).resolve()
            assert resolved.is_relative_to(REPO) and resolved.exists(), f"{page}: {target} does not exist"


def test_every_command_and_option_is_documented():
    page = text("command-line.md")
    for name, command in commands(typer.main.get_command(app)).items():
        assert f"lifecycle {name}" in page, name
        for parameter in command.params:
            for option in parameter.opts:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in page, f"{name} {option}"


def test_every_config_key_is_documented():
    page = text("configuration.md")
    missing = [key for key in config_keys(Config) if f"`{key}" not in page]
    assert not missing
    for kind in ("string", "number", "integer", "boolean", "date", "datetime", "list", "values"):
        assert f"`{kind}`" in page


def test_every_trigger_condition_and_operator_is_documented():
    page = text("campaigns.md")
    for name in [*Trigger.model_fields, "anniversary", "offset", *OPERATORS]:
        assert f"{name}:" in page or f"`{name}`" in page, name
    for field in Condition.model_fields.values():
        name = field.alias or field.serialization_alias or ""
        assert not name or f"{name}:" in page, name


def test_every_filter_and_variable_is_documented():
    page = text("templates.md")
    for name in ("date", "datetime", "number", "money"):
        assert f"| `{name}`" in page
    for name in ("customer", "event", "campaign", "step", "brand", "links.preferences", "links.unsubscribe"):
        assert f"`{name}" in page, name
    for name in ("links.confirm", "locale", "direction", "timezone"):
        assert f"`{name}`" in page, name


def test_every_route_is_in_the_api_page_and_the_document_is_the_one_served():
    page = text("http-api.md")
    for path, operations in document()["paths"].items():
        for method in operations:
            if method != "parameters":
                assert f"`{method.upper()} {path}`" in page, (method, path)
    assert (DOCS / "openapi.yaml").resolve() == (REPO / "engine" / "web" / "openapi.yaml").resolve()
    assert yaml.safe_load((DOCS / "openapi.yaml").read_text()) == document()


def test_the_readme_points_into_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "shared/spec" not in readme
    assert all(f"(docs/{p.name})" in readme for p in DOCS.glob("*.md"))


def test_the_site_config_lists_every_page():
    site = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = re.findall(r"[\w-]+\.md", str(site["nav"]))
    assert sorted(listed) == sorted(p.name for p in DOCS.glob("*.md"))
    assert Path(site["docs_dir"]) == Path("docs")
