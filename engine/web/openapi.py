"""`GET /openapi.json`: the OpenAPI document of this service. It is written by hand in `openapi.yaml` beside
this module (the docs show the same file) and checked against the running service by
tests/test_openapi.py, so what it promises is what the routes do."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.web.services import HERE

DOCUMENT = HERE / "openapi.yaml"


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@lru_cache(maxsize=1)
def _body() -> bytes:
    return json.dumps(document(), ensure_ascii=False).encode()


async def openapi_json(request: Request) -> Response:
    return Response(_body(), media_type="application/json")


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
