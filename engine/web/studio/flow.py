"""A campaign's flow drawn as an SVG diagram, generated on the server from the parsed YAML:
trigger, audience, the holdout's split, each step with its delay (and, for an A/B step, each
variant with its share), then the exits and the goal. No script and no style sheet: only SVG
presentation attributes, so it shows under the studio's content security policy and can be saved
as a file."""

from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import escape

from engine.campaigns.language import Campaign
from engine.config.durations import format_duration
from engine.web.studio import words

WIDTH = 640
MAIN_X, MAIN_W = 16, 420  # the column the customer walks down
SIDE_X, SIDE_W = 452, 172  # notes beside it: holdout, send window, exits, goal
LINE = 17  # px a line of text
PAD = 10
GAP = 34  # between boxes: room for the arrow and its label
CHARS_MAIN, CHARS_SIDE = 52, 20  # characters a line holds before it is cut
COLOURS = {
    "trigger": ("#e8f1fb", "#3f7fbf"),
    "audience": ("#eef7ee", "#2e7d32"),
    "step": ("#ffffff", "#57606a"),
    "variant": ("#fff8e6", "#b07d00"),
    "note": ("#f6f7f9", "#8c959f"),
    "goal": ("#f3eefc", "#6f42c1"),
}


@dataclass
class Box:
    kind: str
    title: str
    lines: list[str] = field(default_factory=list)
    tag: str = ""  # data-node, so that tests and scripts find each box

    def height(self) -> int:
        return PAD * 2 + LINE * (1 + len(self.lines))


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _box(box: Box, x: int, y: int, w: int, chars: int) -> str:
    fill, stroke = COLOURS[box.kind]
    parts = [
        f'<g data-node="{escape(box.tag)}"><title>{escape(box.title)}: {escape("; ".join(box.lines))}</title>',
        f'<rect x="{x}" y="{y}" width="{w}" height="{box.height()}" rx="8" fill="{fill}" stroke="{stroke}"/>',
        f'<text x="{x + PAD}" y="{y + PAD + 13}" font-weight="600" fill="#1f2328">'
        f"{escape(_cut(box.title, chars))}</text>",
    ]
    for i, line in enumerate(box.lines, start=1):
        parts.append(
            f'<text x="{x + PAD}" y="{y + PAD + 13 + i * LINE}" fill="#3d444d">{escape(_cut(line, chars))}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _arrow(x: int, y1: int, y2: int, label: str = "") -> str:
    text = (
        f'<text x="{x + 8}" y="{(y1 + y2) // 2 + 5}" fill="#57606a" font-size="12">{escape(label)}</text>'
        if label
        else ""
    )
    return (
        f'<line x1="{x}" y1="{y1}" x2="{x}" y2="{y2 - 6}" stroke="#8c959f" stroke-width="1.5"/>'
        f'<path d="M{x - 5},{y2 - 8} L{x},{y2} L{x + 5},{y2 - 8} Z" fill="#8c959f"/>{text}'
    )


def flow_svg(campaign: Campaign, locale: str) -> str:
    """The diagram for one campaign, subjects in `locale` (or the campaign's first)."""
    out: list[str] = []
    y = 12
    centre = MAIN_X + MAIN_W // 2
    main = [
        Box("trigger", "Trigger", [words.trigger(campaign.trigger)], "trigger"),
        Box("audience", "Audience", words.audience(campaign), "audience"),
    ]
    for i, box in enumerate(main):
        if i:
            out.append(_arrow(centre, y - GAP, y))
        out.append(_box(box, MAIN_X, y, MAIN_W, CHARS_MAIN))
        y += box.height() + GAP
    side_y = 12 + main[0].height() + GAP
    for note in _side_notes(campaign):
        out.append(_box(note, SIDE_X, side_y, SIDE_W, CHARS_SIDE))
        side_y += note.height() + 12
    for number, step in enumerate(campaign.steps, start=1):
        out.append(_arrow(centre, y - GAP, y, words.delay(step)))
        choices = step.choices()
        extra = [f"only if {words.condition(c)}" for c in step.audience]
        if step.variants is None:
            box = Box(
                "step",
                f"Step {number}: {choices[0].template}",
                [words.subject(choices[0].subject, locale), *extra],
                f"step-{number}",
            )
            out.append(_box(box, MAIN_X, y, MAIN_W, CHARS_MAIN))
            y += box.height() + GAP
            continue
        header = Box("step", f"Step {number}: A/B split", extra, f"step-{number}")
        out.append(_box(header, MAIN_X, y, MAIN_W, CHARS_MAIN))
        y += header.height() + 8
        total = sum(v.weight for v in choices)
        width = (MAIN_W - 8 * (len(choices) - 1)) // len(choices)
        boxes = [
            Box(
                "variant",
                f"{v.name} · {round(100 * v.weight / total)}%",
                [v.template, words.subject(v.subject, locale)],
                f"step-{number}-{v.name}",
            )
            for v in choices
        ]
        for i, box in enumerate(boxes):
            out.append(_box(box, MAIN_X + i * (width + 8), y, width, max(8, width // 8)))
        y += max(b.height() for b in boxes) + GAP
    end = Box("note", "End", ["after the last step"], "end")
    out.append(_arrow(centre, y - GAP, y))
    out.append(_box(end, MAIN_X, y, MAIN_W, CHARS_MAIN))
    height = max(y + end.height(), side_y) + 12
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" font-family="system-ui, sans-serif" font-size="14" role="img" '
        f'aria-label="flow of {escape(campaign.name)}">' + "".join(out) + "</svg>"
    )


def _side_notes(campaign: Campaign) -> list[Box]:
    notes = []
    if campaign.holdout:
        notes.append(Box("note", "Holdout", [f"{campaign.holdout:g}% get nothing", "(for the lift)"], "holdout"))
    if campaign.send_window:
        notes.append(Box("note", "Send window", [words.window(campaign.send_window), "customer's time"], "window"))
    notes.append(Box("note", "Expires", [f"{format_duration(campaign.expire_after)} late"], "expire"))
    if campaign.exit:
        lines = [f"{e.event}" + (f" where {words.where(e.where)}" if e.where else "") for e in campaign.exit]
        notes.append(Box("note", "Exits on", lines, "exit"))
    if campaign.goal:
        notes.append(
            Box("goal", "Goal", [campaign.goal.event, f"within {format_duration(campaign.goal.within)}"], "goal")
        )
    return notes
