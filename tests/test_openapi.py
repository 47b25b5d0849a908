"""The OpenAPI document (engine/web/openapi.yaml, served at /openapi.json) says what the service does: every
route is in it with its methods, and schemathesis sends each operation requests built from it, valid and
invalid, to the app in-process. Each answer must be a documented status with a body of the documented type
and schema, and never a server error. Derandomized and few examples an operation, so that the run is quick
and the same every time."""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
import schemathesis.checks
import yaml
from conftest import customer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from starlette.testclient import TestClient

from engine.config.settings import load_config
from engine.mail.links import Links
from engine.web import create_app
from engine.web.openapi import DOCUMENT

schemathesis.checks.load_all_checks()
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]
KEY = "test-key"


@pytest.fixture
def app(project, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_API_KEYS", KEY)
    project.customers(customer("ann"))
    return create_app(load_config(project.root / "config.yaml"))


def test_every_route_is_documented_with_its_methods(app):
    documented = {
        (path, method.upper())
        for path, operations in yaml.safe_load(DOCUMENT.read_text())["paths"].items()
        for method in operations
        if method != "parameters"
    }
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever GET is
    }
    assert served == documented


def test_the_service_serves_the_document(app):
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == yaml.safe_load(DOCUMENT.read_text())


POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
INGEST = ("POST /api/customers", "POST /api/events")


@pytest.mark.parametrize(
    ("mode", "only", "examples"),
    [
        (POSITIVE, "others", 20),
        (NEGATIVE, "others", 20),
        (POSITIVE, "ingest", 50),
        (NEGATIVE, "ingest", 50),
    ],
)
def test_the_service_answers_as_documented(app, project, mode, only, examples):
    """Valid requests everywhere; invalid ones wherever a body or a header can be wrong. A token in a path
    is, half the time, a real one (so the pages themselves are reached), and the API is called with a
    configured key (so more than the 401 is reached)."""
    links = Links(load_config(project.root / "config.yaml"))
    customer_id = project.query("SELECT id FROM customer")[0][0]
    failures = []
    for result in schemathesis.openapi.from_asgi("/openapi.json", as_served(app)).get_all_operations():
        operation = result.ok()
        if (operation.label in INGEST) != (only == "ingest"):
            continue
        if mode is NEGATIVE and not (operation.body or operation.headers):
            continue  # nothing of it can be invalid: any string is a token
        try:
            exercise(operation, mode, examples, CHECKS, lambda section: real_token(links, section, customer_id))
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group; every operation is tried
            failures.append(f"{operation.label}: {described(exc)}")
    assert not failures, "\n\n".join(failures)


def real_token(links: Links, section: str, customer_id: int) -> str:
    """A token for the path's first section; ratings and alerts are bound to a send (one the store lacks)."""
    bound = {"feedback": "rate", "alerts": "alert"}
    if section in bound:
        return links.send_token(bound[section], customer_id, 1)
    return links.token(section, customer_id, "news")


def as_served(app):
    """The app as a server runs it: Starlette answers 500 for an error and re-raises it for the server to log;
    here the request is over there too, so that schemathesis sees the 500."""

    async def served(scope, receive, send):
        with contextlib.suppress(Exception):
            await app(scope, receive, send)

    return served


def described(exc: BaseException) -> str:
    parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
    return "\n".join(str(part) for part in parts)


def exercise(operation, mode, examples, checks, real_token) -> None:
    @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
    @settings(
        max_examples=examples,  # an operation
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # a failure is reported as found: shrinking it takes minutes
        suppress_health_check=list(HealthCheck),
    )
    def check(case, real):
        if real and "token" in (case.path_parameters or {}):
            case.path_parameters["token"] = real_token(operation.path.split("/")[1])
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=checks)

    check()
