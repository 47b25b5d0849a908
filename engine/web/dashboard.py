"""`GET /dashboard`: the report of `lifecycle report --format html`, for operators. A browser
signs in on the studio's login form (a session cookie, engine/web/studio/access.py); a script sends
`Authorization: Bearer KEY`. The figures come from the same query layer as the JSON and the table.

The charting library is not in the page: it is served once from a URL that names its version, so
the browser keeps it (`immutable`) and each page is only the report (tens of kilobytes rather than
the 4.6 MB of plotly.js), gzip-compressed for browsers that take it."""

from __future__ import annotations

import gzip
from functools import lru_cache

import plotly
from plotly.offline import get_plotlyjs
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from engine.campaigns.language import check_campaigns
from engine.clock import utcnow
from engine.customers.risk.calibration import apply_stored
from engine.insights.html import report_page
from engine.insights.report import build_report
from engine.web.services import Services, services
from engine.web.studio.access import to_login
from engine.web.studio.state import studio

PLOTLY_PATH = f"/dashboard/plotly-{plotly.__version__}.min.js"
# Plotly draws each chart from an inline script and evaluates code as it draws; the page loads
# scripts from this site only, and nothing from anywhere else.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
FOREVER = "public, max-age=31536000, immutable"


async def dashboard(request: Request) -> Response:
    s = services(request)
    if not studio(request).sessions_allow(request):
        if "text/html" in request.headers.get("accept", ""):
            return to_login(request)
        return Response(
            "an API key is required: Authorization: Bearer KEY, or log in at /studio/login",
            status_code=401,
            headers={"www-authenticate": "Bearer"},
            media_type="text/plain",
        )
    page = await s.run(_page, s)
    return HTMLResponse(page, headers={"content-security-policy": DASHBOARD_CSP})


def _page(s: Services) -> str:
    """The report of the campaigns that load: one broken file (the studio shows where) hides no
    other campaign's figures."""
    apply_stored(s.config, s.engine)  # the churn rules' latest calibration, stored by `risk train` or a daemon
    campaigns, _ = check_campaigns(s.config)
    report = build_report(s.engine, s.config, campaigns, utcnow())
    return report_page(report, plotly_src=PLOTLY_PATH)


@lru_cache(maxsize=1)
def _plotly() -> tuple[bytes, bytes]:
    source = get_plotlyjs().encode()
    return source, gzip.compress(source, compresslevel=9, mtime=0)


def plotly_js(request: Request) -> Response:
    """plotly.js, compressed once, for as long as the process runs (a worker thread: a plain function).
    Only the version the page names: a URL that is kept forever must never answer with another."""
    if request.path_params["version"] != plotly.__version__:
        raise HTTPException(404)
    plain, packed = _plotly()
    headers = {"cache-control": FOREVER, "vary": "accept-encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type="text/javascript", headers={**headers, "content-encoding": "gzip"})
    return Response(plain, media_type="text/javascript", headers=headers)


routes = [
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/plotly-{version}.min.js", plotly_js, methods=["GET"]),
]
