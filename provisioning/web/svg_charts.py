"""Small charts drawn on the server as inline SVG: bars, a line with gaps, a heat map.

No script, no CDN, no chart library. Each chart is ``role="img"`` labelled by its own ``<title>``
and ``<desc>`` (what a screen reader says), has labelled axes, and prints its values as text, so
the numbers are there without hovering or seeing colours. Each mark also carries a ``<title>``
(a tooltip). Ids are made from ``chart_id``, which must be unique on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 720
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 44
BAR_FILL = "#2f6fb0"
LINE_STROKE = "#8a4b08"


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def _frame(chart_id: str, title: str, desc: str, height: int, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{_t(chart_id)}" '
        f'role="img" aria-labelledby="{_t(chart_id)}-title {_t(chart_id)}-desc" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'font-family="sans-serif" font-size="11">'
        f'<title id="{_t(chart_id)}-title">{_t(title)}</title>'
        f'<desc id="{_t(chart_id)}-desc">{_t(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _axes(
    height: int, x_label: str, y_label: str, y_ticks: Sequence[tuple[float, str]]
) -> list[str]:
    """Axis lines, y tick labels at (y pixel, text), and both axis titles."""
    bottom = height - BOTTOM
    out = [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>',
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" '
        'stroke="#333"/>',
    ]
    for y, text in y_ticks:
        out.append(
            f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_t(text)}</text>'
        )
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>'
        )
    mid = (TOP + bottom) / 2
    out.append(
        f'<text class="axis-label" x="14" y="{mid:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {mid:.1f})">{_t(y_label)}</text>'
    )
    out.append(
        f'<text class="axis-label" x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{height - 4}" '
        f'text-anchor="middle">{_t(x_label)}</text>'
    )
    return out


def _every(count: int, room: int = 16) -> int:
    """Label every n-th x position so at most ``room`` labels share the axis."""
    return max(1, -(-count // room))


def bar_chart(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
    y_label: str,
    height: int = 240,
    fmt: str = "{:g}",
) -> Markup:
    """Vertical bars, one per label, each with its value printed above it."""
    top = max(values, default=0) or 1
    bottom = height - BOTTOM
    plot_h = bottom - TOP - 14  # room for the value above the tallest bar
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(values))
    ticks = [(bottom - plot_h * f, fmt.format(top * f)) for f in (0, 0.5, 1)]
    body = _axes(height, x_label, y_label, ticks)
    every = _every(len(labels))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top
        x = LEFT + i * slot + slot * 0.15
        w = slot * 0.7
        text = fmt.format(value)
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{bottom - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{BAR_FILL}" data-label="{_t(label)}" data-value="{_t(text)}">'
            f"<title>{_t(label)}: {_t(text)}</title></rect>"
        )
        if value:
            body.append(
                f'<text class="value" x="{x + w / 2:.1f}" y="{bottom - h - 3:.1f}" '
                f'text-anchor="middle">{_t(text)}</text>'
            )
        if i % every == 0:
            body.append(
                f'<text class="tick" x="{x + w / 2:.1f}" y="{bottom + 14}" '
                f'text-anchor="middle">{_t(label)}</text>'
            )
    return _frame(chart_id, title, desc, height, body)


def line_chart(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float],
    height: int = 240,
    fmt: str = "{:.2f}",
    notes: Sequence[str] = (),
) -> Markup:
    """A line through the points that have a value (None leaves a gap), each point labelled;
    ``notes`` (one per point, e.g. "3 samples") go into the point's tooltip."""
    lo, hi = y_range
    bottom = height - BOTTOM
    plot_h = bottom - TOP - 14
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(values))

    def y_of(v: float) -> float:
        return bottom - plot_h * (min(max(v, lo), hi) - lo) / (hi - lo)

    ticks = [(y_of(lo + (hi - lo) * f), fmt.format(lo + (hi - lo) * f)) for f in (0, 0.5, 1)]
    body = _axes(height, x_label, y_label, ticks)
    every = _every(len(labels))
    run: list[str] = []
    runs: list[list[str]] = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + i * slot + slot / 2
        if i % every == 0:
            body.append(
                f'<text class="tick" x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">'
                f"{_t(label)}</text>"
            )
        if value is None:
            if run:
                runs.append(run)
            run = []
            continue
        y = y_of(value)
        run.append(f"{x:.1f},{y:.1f}")
        text = fmt.format(value)
        note = f" ({notes[i]})" if i < len(notes) and notes[i] else ""
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{LINE_STROKE}" '
            f'data-label="{_t(label)}" data-value="{_t(text)}">'
            f"<title>{_t(label)}: {_t(text)}{_t(note)}</title></circle>"
        )
        body.append(
            f'<text class="value" x="{x:.1f}" y="{y - 6:.1f}" text-anchor="middle">'
            f"{_t(text)}</text>"
        )
    if run:
        runs.append(run)
    for points in runs:
        if len(points) > 1:
            body.insert(
                0,
                f'<polyline class="line" fill="none" stroke="{LINE_STROKE}" stroke-width="2" '
                f'points="{" ".join(points)}"/>',
            )
    return _frame(chart_id, title, desc, height, body)


def heat_map(
    chart_id: str,
    title: str,
    desc: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    values: Sequence[Sequence[int]],
    *,
    x_label: str,
    y_label: str,
) -> Markup:
    """A grid of cells shaded by value (darker = more), each non-zero count printed in its cell."""
    cell_h = 24
    height = TOP + cell_h * len(row_labels) + BOTTOM
    cell_w = (WIDTH - LEFT - RIGHT) / max(1, len(col_labels))
    top = max((v for row in values for v in row), default=0) or 1
    body: list[str] = []
    for r, label in enumerate(row_labels):
        y = TOP + r * cell_h
        body.append(
            f'<text class="tick" x="{LEFT - 4}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end">'
            f"{_t(label)}</text>"
        )
        for c, col in enumerate(col_labels):
            v = values[r][c]
            share = v / top
            # light blue to dark blue; white text once the cell is dark enough to need it
            light = round(96 - 62 * share) if v else 97
            x = LEFT + c * cell_w
            body.append(
                f'<rect class="cell" x="{x:.1f}" y="{y}" width="{cell_w - 1:.1f}" '
                f'height="{cell_h - 1}" fill="hsl(210, 60%, {light}%)" data-row="{_t(label)}" '
                f'data-col="{_t(col)}" data-value="{v}"><title>{_t(label)} {_t(col)}: {v}</title>'
                "</rect>"
            )
            if v:
                colour = "#fff" if share > 0.5 else "#111"
                body.append(
                    f'<text class="value" x="{x + cell_w / 2:.1f}" y="{y + cell_h / 2 + 4:.1f}" '
                    f'text-anchor="middle" fill="{colour}">{v}</text>'
                )
    bottom = TOP + cell_h * len(row_labels)
    for c, col in enumerate(col_labels):
        if c % 2 == 0:
            body.append(
                f'<text class="tick" x="{LEFT + c * cell_w + cell_w / 2:.1f}" y="{bottom + 14}" '
                f'text-anchor="middle">{_t(col)}</text>'
            )
    mid = (TOP + bottom) / 2
    body.append(
        f'<text class="axis-label" x="14" y="{mid:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {mid:.1f})">{_t(y_label)}</text>'
    )
    body.append(
        f'<text class="axis-label" x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{height - 4}" '
        f'text-anchor="middle">{_t(x_label)}</text>'
    )
    return _frame(chart_id, title, desc, height, body)
