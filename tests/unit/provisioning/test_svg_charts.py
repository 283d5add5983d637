"""The server-drawn charts are well-formed SVG with a title, a description, labelled axes, one
mark per value and the values as text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from offhook.provisioning.web import svg_charts

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # raises on anything not well-formed


def texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in root.iterfind(".//s:text", NS) if t.get("class") == cls]


def test_bar_chart_has_one_bar_per_value_with_title_desc_axes_and_values() -> None:
    svg = svg_charts.bar_chart(
        "vol", "Calls per day <all>", "3 days & more", ["05-01", "05-02", "05-03"], [4, 0, 7],
        x_label="Day", y_label="Calls",
    )  # fmt: skip
    root = parse(svg)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "vol-title vol-desc"
    assert root.find("s:title", NS).text == "Calls per day <all>"  # type: ignore[union-attr]
    assert root.find("s:desc", NS).text == "3 days & more"  # type: ignore[union-attr]
    bars = [r for r in root.iterfind("s:rect", NS) if r.get("class") == "bar"]
    assert [(b.get("data-label"), b.get("data-value")) for b in bars] == [
        ("05-01", "4"),
        ("05-02", "0"),
        ("05-03", "7"),
    ]
    heights = [float(b.get("height", "")) for b in bars]
    assert heights[1] == 0 and heights[2] > heights[0] > 0
    assert texts(root, "value") == ["4", "7"]
    assert texts(root, "axis-label") == ["Calls", "Day"]


def test_line_chart_leaves_gaps_and_labels_points_with_their_samples() -> None:
    svg = svg_charts.line_chart(
        "mos", "MOS per day", "mean MOS", ["d1", "d2", "d3", "d4"], [4.2, None, 3.1, 3.3],
        x_label="Day", y_label="MOS", y_range=(1.0, 5.0), notes=["2 samples", "", "1 sample", ""],
    )  # fmt: skip
    root = parse(svg)
    points = [c for c in root.iterfind("s:circle", NS) if c.get("class") == "point"]
    assert [p.get("data-value") for p in points] == ["4.20", "3.10", "3.30"]
    assert points[0].find("s:title", NS).text == "d1: 4.20 (2 samples)"  # type: ignore[union-attr]
    lines = [p for p in root.iterfind("s:polyline", NS)]
    assert len(lines) == 1 and len(lines[0].get("points", "").split()) == 2  # d3-d4; d1 alone


def test_heat_map_has_a_cell_per_weekday_and_hour_and_prints_counts() -> None:
    values = [[0] * 24 for _ in range(7)]
    values[0][9] = 5
    values[6][23] = 1
    root = parse(
        svg_charts.heat_map(
            "heat",
            "Busy hours",
            "calls per weekday and hour",
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
            [f"{h:02d}" for h in range(24)],
            values,
            x_label="Hour",
            y_label="Weekday",
        )
    )
    cells = [r for r in root.iterfind("s:rect", NS) if r.get("class") == "cell"]
    assert len(cells) == 7 * 24
    busy = {(c.get("data-row"), c.get("data-col")): c.get("data-value") for c in cells}
    assert busy[("Mon", "09")] == "5" and busy[("Sun", "23")] == "1" and busy[("Tue", "00")] == "0"
    assert sorted(texts(root, "value")) == ["1", "5"]
