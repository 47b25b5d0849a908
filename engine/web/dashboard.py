"""`GET /dashboard`: the report of `lifecycle report --format html`, for operators with an API key.
The figures come from the same query layer as the JSON and the table."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from engine.campaigns.language import load_campaigns
from engine.clock import utcnow
from engine.customers.risk.calibration import apply_stored
from engine.insights.html import report_page
from engine.insights.report import build_report
from engine.web.security import bearer_ok
from engine.web.services import Services, services

# The page carries its charting library inline (it works offline), so it may run inline scripts;
# it still loads nothing from anywhere.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


async def dashboard(request: Request) -> Response:
    s = services(request)
    if not bearer_ok(request, s.api_keys):
        return Response(
            "an API key is required: Authorization: Bearer KEY",
            status_code=401,
            headers={"www-authenticate": "Bearer"},
            media_type="text/plain",
        )
    page = await s.run(_page, s)
    return HTMLResponse(page, headers={"content-security-policy": DASHBOARD_CSP})


def _page(s: Services) -> str:
    apply_stored(s.config, s.engine)  # the churn rules' latest calibration, stored by `risk train` or a daemon
    return report_page(build_report(s.engine, s.config, load_campaigns(s.config), utcnow()))


routes = [Route("/dashboard", dashboard, methods=["GET"])]
