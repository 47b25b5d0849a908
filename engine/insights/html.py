"""`lifecycle report --format html` and `GET /dashboard`: the report's dict (engine/insights/report.py) as one
self-contained page of charts and tables.

Charts are plotly figures. The file of `lifecycle report` carries plotly.js inline, so it works
offline (no CDN) and can be saved or mailed as one file; `/dashboard` names the library's URL on the
service instead (`plotly_src`), which the browser fetches once and keeps, so the page itself stays
small. The funnel is a table with a bar in each cell, one row per campaign, rather than a chart of
funnels drawn over each other; each A/B variant has its row with its conversions. The page fits a
phone: charts take the screen's width and wide tables scroll in their own box. The page is built
from the report alone (`report_page` is pure), and it escapes every customer-supplied value through
Jinja's autoescape.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from jinja2 import Environment
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from engine.insights.table import CAMPAIGN_COLUMNS, HEADINGS, OTHER_COLUMNS, feedback_columns, score_figure
from engine.store.tables import OUTCOMES

FUNNEL = ("entered", "sent", "delivered", "opened", "clicked", "converted")
RISK_COLOURS = {"green": "#2e9e5b", "yellow": "#e0b400", "red": "#d64541"}
SHARE = "acknowledged_within_4h_share"
STAGE_COLOURS = {"prospect": "#8fb3de", "current": "#3f7fbf", "loyal": "#1f4e8c", "lost": "#9a9a9a"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lifecycle report</title>
<style>
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { margin-bottom: 0; } .when { color: #666; margin-top: .2rem; }
nav.top { display: flex; flex-wrap: wrap; gap: .25rem 1rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 480px), 1fr)); gap: 1rem; }
.chart { border: 1px solid #ddd; border-radius: 6px; padding: .5rem; height: 380px; min-width: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.step td:first-child { padding-left: 1.6rem; }
tr.campaign { font-weight: 600; } tr.held td { color: #666; font-style: italic; }
#funnel td { min-width: 6.5rem; vertical-align: bottom; }
.bar { display: block; height: .55rem; background: #3f7fbf; border-radius: 2px; margin-top: .15rem; }
.share { color: #777; font-size: .8em; }
@media (max-width: 40rem) { body { margin: .75rem; } }
.paused { background: #fff4e0; border: 1px solid #d98e04; border-radius: 6px; padding: .25rem 1rem; margin: 1rem 0; }
.paused h2 { margin: .4rem 0; color: #8a5300; } .paused-mark { color: #8a5300; font-weight: 600; font-size: .85em; }
</style>
{% if plotly_src %}<script src="{{ plotly_src }}"></script>{% else %}<script>{{ plotly_js }}</script>{% endif %}
</head><body>
{% if plotly_src %}<nav class="top"><a href="/studio/">Studio</a><a href="/dashboard">Dashboard</a></nav>{% endif %}
<h1>Lifecycle report</h1>
<p class="when">as of {{ report.now }}{% if report.since %}, entries since {{ report.since }}{% endif %}</p>
{% for name, f in report.campaigns.items() if f.paused %}{% if loop.first %}<section id="paused" class="paused" role="status"><h2>Paused</h2><ul>{% endif %}
<li data-campaign="{{ name }}"><strong>{{ name }}</strong>: paused by {{ f.paused.by }} since {{ f.paused.since }}: {{ f.paused.reason }}</li>
{% if loop.last %}</ul><p>Their due emails wait and go out after <code>lifecycle resume</code>.</p></section>{% endif %}{% endfor %}
<div class="charts">{% for chart in charts %}<div class="chart">{{ chart }}</div>{% endfor %}</div>

<h2>Funnel</h2>
<div class="scroll"><table id="funnel"><tr><th>campaign</th>{% for s in funnel %}<th>{{ s }}</th>{% endfor %}</tr>
{% for name, f in report.campaigns.items() if f.entered %}<tr data-campaign="{{ name }}"><td>{{ name }}</td>
{% for s in funnel %}{% set share = (100 * f[s] / f.entered) if f.entered else 0 %}<td data-figure="{{ s }}">{{ f[s] }}{% if not loop.first %} <span class="share">{{ "%.0f" | format(share) }}%</span>{% endif %}<span class="bar" style="width: {{ [share, 100] | min | round(1) }}%"></span></td>{% endfor %}</tr>
{% endfor %}</table></div>

<h2>Campaigns</h2>
<div class="scroll"><table id="campaigns"><tr><th>campaign</th>{% for c in campaign_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, f in report.campaigns.items() %}
<tr class="campaign" data-campaign="{{ name }}"><td>{{ name }}{% if f.paused %} <span class="paused-mark">paused</span>{% endif %}</td>{% for c in campaign_columns %}<td data-figure="{{ c }}">{{ f[c] }}</td>{% endfor %}</tr>
{% for s in f.steps %}<tr class="step" data-campaign="{{ name }}" data-step="{{ s.step }}" data-variant="{{ s.variant or '' }}">
<td>step {{ s.step }}{% if s.variant %} ({{ s.variant }}){% endif %}</td><td></td>{% for c in campaign_columns[1:] %}<td data-figure="{{ c }}">{{ s[c] }}</td>{% endfor %}</tr>{% endfor %}
{% if f.lift %}<tr class="held" data-campaign="{{ name }}" data-held-out="yes"><td>held out</td><td data-figure="entered">{{ f.lift.held_out.entries }}</td>{% for c in campaign_columns[1:-1] %}<td></td>{% endfor %}<td data-figure="converted">{{ f.lift.held_out.converted }}</td></tr>{% endif %}
{% endfor %}</table></div>

<h2>A/B variants</h2>
{% set tested = report.campaigns.items() | selectattr("1.variants") | list %}
{% if tested %}<div class="scroll"><table id="variants"><tr><th>campaign</th><th>variant</th><th>entries</th><th>converted</th><th>rate %</th></tr>
{% for name, f in tested %}{% for v in f.variants %}<tr data-campaign="{{ name }}" data-variant="{{ v.variant }}"><td>{{ name }}</td><td>{{ v.variant }}</td><td data-figure="entries">{{ v.entries }}</td><td data-figure="converted">{{ v.converted }}</td><td>{{ v.rate | dash }}</td></tr>{% endfor %}
{% if f.lift %}<tr class="held" data-campaign="{{ name }}" data-variant=""><td>{{ name }}</td><td>held out</td><td data-figure="entries">{{ f.lift.held_out.entries }}</td><td data-figure="converted">{{ f.lift.held_out.converted }}</td><td>{{ f.lift.held_out.rate | dash }}</td></tr>{% endif %}{% endfor %}</table></div>
{% else %}<p id="variants">No A/B test with a goal.</p>{% endif %}

<h2>Failures</h2>
{% if report.failures %}<div class="scroll"><table id="failures"><tr><th>campaign</th><th>status</th><th>reason</th><th>sends</th></tr>
{% for r in report.failures %}<tr data-campaign="{{ r.campaign }}"><td>{{ r.campaign }}</td><td>{{ r.status }}</td><td>{{ r.reason }}</td><td>{{ r.sends }}</td></tr>{% endfor %}</table></div>
{% else %}<p id="failures">No failed sends.</p>{% endif %}

<h2>Not sent</h2>
<div class="scroll"><table id="not-sent"><tr><th>campaign</th>{% for c in other_columns %}<th>{{ c }}</th>{% endfor %}<th>skipped</th></tr>
{% for name, f in report.campaigns.items() %}<tr data-campaign="{{ name }}"><td>{{ name }}</td>{% for c in other_columns %}<td data-figure="{{ c }}">{{ f[c] }}</td>{% endfor %}
<td>{% for reason, n in f.skipped.items() %}{{ reason }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endfor %}</table></div>

<h2>Holdout lift</h2>
<div class="scroll"><table id="lift"><tr><th>campaign</th><th>got it: converted / entries</th><th>rate %</th><th>held out: converted / entries</th><th>rate %</th><th>difference (points)</th><th>95% interval</th><th>p-value</th></tr>
{% for name, f in report.campaigns.items() if f.lift %}{% set l = f.lift %}<tr data-campaign="{{ name }}"><td>{{ name }}</td>
<td>{{ l.treated.converted }} / {{ l.treated.entries }}</td><td>{{ l.treated.rate | dash }}</td>
<td>{{ l.held_out.converted }} / {{ l.held_out.entries }}</td><td>{{ l.held_out.rate | dash }}</td>
<td>{{ l.difference | dash }}</td><td>{% if l.ci_low is none %}–{% else %}{{ l.ci_low }} to {{ l.ci_high }}{% endif %}</td><td>{{ l.p_value | dash }}</td></tr>{% endfor %}</table></div>

<h2>Retention</h2>
<div class="scroll"><table id="retention"><tr><th>month</th><th>start S</th><th>end E</th><th>new</th><th>returning</th><th>CRR %</th></tr>
{% for r in report.retention %}<tr><td>{{ r.month }}</td><td>{{ r.start }}</td><td>{{ r.end }}</td><td>{{ r.new }}</td><td>{{ r.returning }}</td><td>{{ r.crr | dash }}</td></tr>{% endfor %}</table></div>

<h2>Customers</h2>
<div class="scroll"><table id="customers"><tr><th>measure</th><th>group</th><th>customers</th></tr>
{% for measure in ("stages", "risk") %}{% for group, n in report[measure].items() %}<tr><td>{{ measure }}</td><td>{{ group }}</td><td data-group="{{ group }}">{{ n }}</td></tr>{% endfor %}{% endfor %}</table></div>

<h2>Red risk, most valuable first</h2>
<div class="scroll"><table id="red"><tr><th>customer</th><th>email</th><th>name</th><th>value</th><th>last activity</th></tr>
{% for p in report.red_customers %}<tr><td>{{ p.id }}</td><td>{{ p.email }}</td><td>{{ p.name | dash }}</td><td>{{ "%.2f" | format(p.value) }}</td><td>{{ p.last_activity[:10] }}</td></tr>{% endfor %}</table></div>

<h2>Feedback</h2>
{% set fb = report.feedback %}{% if fb.responses %}
{% macro ratings(label, f, kind) %}<tr class="{{ kind }}" data-{{ kind }}="{{ label }}"><td>{{ label }}</td>{% for c in feedback_columns %}<td data-figure="{{ c }}">{{ f[c] | dash }}</td>{% endfor %}
<td data-figure="response_rate">{% if "response_rate" in f %}{{ f.response_rate | dash }}{% endif %}</td>
<td>{% for score, n in f.scores.items() if n %}{{ score }}: {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endmacro %}
<div class="scroll"><table id="feedback"><tr><th></th>{% for c in feedback_columns %}<th>{{ headings.get(c, c) }}</th>{% endfor %}<th>response rate %</th><th>scores</th></tr>
{{ ratings("all", fb, "total") }}
{% for name, f in fb.campaigns.items() %}{{ ratings(name, f, "campaign") }}{% endfor %}
{% for m in fb.months if m.responses %}{{ ratings(m.month, m, "month") }}{% endfor %}</table></div>

<h3>Low ratings, newest first</h3>
<div class="scroll"><table id="low-ratings"><tr><th>rated at</th><th>customer</th><th>campaign</th><th>score</th><th>acknowledged</th><th>comment</th></tr>
{% for r in fb.low_comments %}<tr><td>{{ r.at[:16] }}</td><td>{{ r.customer }}</td><td>{{ r.campaign }}</td><td>{{ r.score }}</td><td>{{ r.acknowledged_at[:16] if r.acknowledged_at else none | dash }}</td><td>{{ r.comment | dash }}</td></tr>{% endfor %}</table></div>
{% else %}<p>No ratings yet.</p>{% endif %}
<script>
// Charts are drawn while the page is still being laid out; fit them to their boxes once it is.
window.addEventListener("load", () => document.querySelectorAll(".plotly-graph-div").forEach(d => Plotly.Plots.resize(d)));
</script>
</body></html>
"""  # noqa: E501, RUF001 (an HTML page: long lines, and a dash for "none")


def _dash(value: Any) -> Any:
    return "–" if value is None else value  # noqa: RUF001 (a dash for "none")


_environment = Environment(autoescape=True)
_environment.filters["dash"] = _dash
_page = _environment.from_string(PAGE)


def report_page(report: dict[str, Any], plotly_src: str | None = None) -> str:
    """A complete HTML page: five charts and the funnel, then every figure of the report in tables.
    Offline with plotly.js inline, or, given `plotly_src`, loading it from there."""
    return _page.render(
        report=report,
        charts=[_html(name, figure) for name, figure in charts(report).items()],
        funnel=FUNNEL,
        campaign_columns=CAMPAIGN_COLUMNS,
        other_columns=OTHER_COLUMNS,
        feedback_columns=feedback_columns(report["feedback"]),
        headings=HEADINGS,
        plotly_src=plotly_src,
        plotly_js=Markup(get_plotlyjs()) if plotly_src is None else "",
    )


def charts(report: dict[str, Any]) -> dict[str, go.Figure]:
    """The dashboard's charts by name."""
    return {
        "activity": activity_chart(report),
        "retention": retention_chart(report),
        "stages": stages_chart(report),
        "risk": risk_chart(report),
        "feedback": feedback_chart(report),
    }


def _html(name: str, figure: go.Figure) -> Markup:
    """One chart as a div; a fixed id keeps the page the same for the same report."""
    figure.update_layout(
        margin={"l": 50, "r": 50, "t": 50, "b": 40},
        template="plotly_white",
        autosize=True,
        legend={"orientation": "h", "yanchor": "top", "y": -0.2},
    )
    return Markup(
        figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{name}",
            config={"displaylogo": False, "responsive": True},
        )
    )


def activity_chart(report: dict[str, Any]) -> go.Figure:
    """Sends and their outcomes per month: the volume as bars, the outcomes as lines."""
    months = [row["month"] for row in report["activity"]]
    figure = go.Figure(
        go.Bar(x=months, y=[row["sent"] for row in report["activity"]], name="sent", marker_color="#c9d9ee")
    )
    for outcome in OUTCOMES:
        figure.add_trace(
            go.Scatter(x=months, y=[row[outcome] for row in report["activity"]], name=outcome, mode="lines+markers")
        )
    return figure.update_layout(title="Sends and outcomes by month", xaxis={"type": "category"})


def retention_chart(report: dict[str, Any]) -> go.Figure:
    """CRR per month, with the customers counted at each month's end behind it."""
    rows = report["retention"]
    months = [row["month"] for row in rows]
    figure = go.Figure(
        go.Bar(
            x=months, y=[row["end"] for row in rows], name="customers at month end", marker_color="#dde6d5", yaxis="y2"
        )
    )
    figure.add_trace(
        go.Scatter(
            x=months,
            y=[row["crr"] for row in rows],
            name="CRR %",
            mode="lines+markers",
            line={"color": "#2e7d32", "width": 3},
        )
    )
    return figure.update_layout(
        title="Retention (CRR) by month",
        xaxis={"type": "category"},
        yaxis={"title": "CRR %", "rangemode": "tozero"},
        yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "customers"},
    )


def stages_chart(report: dict[str, Any]) -> go.Figure:
    stages = report["stages"]
    return go.Figure(
        go.Pie(
            labels=list(stages),
            values=list(stages.values()),
            hole=0.45,
            sort=False,
            marker_colors=[STAGE_COLOURS[s] for s in stages],
        )
    ).update_layout(title="Lifecycle stages")


def risk_chart(report: dict[str, Any]) -> go.Figure:
    risk = report["risk"]
    return go.Figure(
        go.Bar(
            x=list(risk), y=list(risk.values()), text=list(risk.values()), marker_color=[RISK_COLOURS[r] for r in risk]
        )
    ).update_layout(title="Churn risk")


def feedback_chart(report: dict[str, Any]) -> go.Figure:
    """Ratings per month, the low ones apart, with CSAT or NPS and the share of low ratings the team
    took on within 4 hours as lines on a percent axis."""
    rows = report["feedback"]["months"]
    months = [row["month"] for row in rows]
    score = score_figure(report["feedback"])
    figure = go.Figure(
        [
            go.Bar(x=months, y=[r["responses"] - r["low"] for r in rows], name="ratings", marker_color="#c9d9ee"),
            go.Bar(x=months, y=[r["low"] for r in rows], name="low", marker_color="#f0b2ad"),
        ]
    )
    for figure_name, label, colour in ((score, score.upper(), "#1f4e8c"), (SHARE, "low acked in 4h %", "#2e9e5b")):
        figure.add_trace(
            go.Scatter(
                x=months,
                y=[r[figure_name] for r in rows],
                name=label,
                mode="lines+markers",
                yaxis="y2",
                line={"color": colour},
            )
        )
    return figure.update_layout(
        title="Feedback by month",
        barmode="stack",
        xaxis={"type": "category"},
        yaxis={"title": "ratings"},
        yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "%"},
    )
