"""Draw a Screen onto a small monochrome OLED canvas (128x64, or 128x32 with fewer lines).

Layout (128x64): status bar (registration mark, line name, DND/MWI/mute/quality icons, clock),
a rule, up to three text lines with softkey labels under them, or four lines without softkeys.
The dialling screens show the number in a larger font. Fonts are Pillow's built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from luma.core.render import canvas
from PIL import Image, ImageDraw, ImageFont

from offhook.firmware.events import Screen

BITMAP_LINE_PX = 11  # cell height of Pillow's built-in bitmap font (glyphs use rows 2-10)
BIG_TEXT_KINDS = frozenset({"dialing", "transfer"})
INVERTED_MARK = "> "  # a list line the user has selected (history, contacts)

# Colour names work on "1" (panels, dummy) and "RGB" (emulators) canvases alike.
ON = "white"
OFF = "black"

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


@cache
def small_font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()


@cache
def big_font() -> Font:
    # FreeType is part of Pillow's wheels; without it the small bitmap font is still readable.
    try:
        return ImageFont.load_default(size=16)
    except (ImportError, OSError):
        return small_font()


def fit(text: str, font: Font, width: int) -> str:
    """Cut ``text`` so it fits in ``width`` pixels, marking the cut with '.'."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + ".") > width:
        text = text[:-1]
    return text + "."


@dataclass(frozen=True)
class Layout:
    status_y: int  # where the status bar text cell starts (may be above the panel's top)
    rule_y: int  # the line under the status bar
    body_y: int
    pitch: int  # vertical distance between text lines


FULL = Layout(status_y=0, rule_y=11, body_y=13, pitch=BITMAP_LINE_PX)
# 128x32: the bitmap font's empty top rows are tucked away to fit two lines under the status bar.
COMPACT = Layout(status_y=-2, rule_y=9, body_y=9, pitch=10)


def layout_for(height: int) -> Layout:
    return FULL if height >= 64 else COMPACT


def render(screen: Screen, draw_target: ImageDraw.ImageDraw) -> None:
    """Draw ``screen`` on a canvas (e.g. ``with luma.core.render.canvas(device) as draw``)."""
    width, height = draw_target.im.size
    layout = layout_for(height)
    draw_target.rectangle((0, 0, width - 1, height - 1), fill=OFF)
    _status_bar(screen, draw_target, width, layout.status_y)
    draw_target.line((0, layout.rule_y, width - 1, layout.rule_y), fill=ON)
    room = (height - layout.body_y) // layout.pitch
    lines = list(screen.lines)
    show_softkeys = any(screen.softkeys) and len(lines) < room and layout is FULL
    if show_softkeys:
        room -= 1
    y = layout.body_y
    for index, line in enumerate(lines[:room]):
        if screen.kind in BIG_TEXT_KINDS and index == 1 and layout is FULL:
            font = big_font()
            draw_target.text((0, y), fit(line, font, width), font=font, fill=ON)
            y += 18
            continue
        if line.startswith(INVERTED_MARK):
            draw_target.rectangle((0, y + 1, width - 1, y + layout.pitch), fill=ON)
            text = fit(line.removeprefix(INVERTED_MARK), small_font(), width - 2)
            draw_target.text((2, y), text, font=small_font(), fill=OFF)
        else:
            draw_target.text((0, y), fit(line, small_font(), width), font=small_font(), fill=ON)
        y += layout.pitch
    if show_softkeys:
        _softkeys(screen.softkeys, draw_target, width, height)


def _status_bar(screen: Screen, draw: ImageDraw.ImageDraw, width: int, top: int) -> None:
    status = screen.status
    font = small_font()
    # Registration: filled square when registered, hollow when not.
    registered = status.get("reg") == "ok"
    draw.rectangle((0, top + 2, 6, top + 8), outline=ON, fill=ON if registered else OFF)
    clock = status.get("time", "")
    right = width - int(font.getlength(clock))
    draw.text((right, top), clock, font=font, fill=ON)
    right -= 3
    for icon in ("quality", "mute", "dnd", "mwi", "texts"):
        if icon in status:
            right = _ICONS[icon](draw, right, top, status[icon])
    name = fit(status.get("line", ""), font, right - 10)
    draw.text((9, top), name, font=font, fill=ON)


# Icons are drawn leftwards from ``right``; each returns where the next one may end.


def _icon_quality(draw: ImageDraw.ImageDraw, right: int, top: int, value: str) -> int:
    bars = int(value) if value.isdigit() else 0
    left = right - 11
    for i in range(4):
        x = left + i * 3
        if i < bars:
            draw.rectangle((x, top + 8 - 2 * i, x + 1, top + 9), fill=ON)
        else:
            draw.point((x, top + 9), fill=ON)
    return left - 3


def _icon_mute(draw: ImageDraw.ImageDraw, right: int, top: int, value: str) -> int:
    left = right - int(small_font().getlength("M"))
    draw.text((left, top), "M", font=small_font(), fill=ON)
    return left - 3


def _icon_mwi(draw: ImageDraw.ImageDraw, right: int, top: int, value: str) -> int:
    # An envelope: a box with a V for the flap.
    left = right - 9
    draw.rectangle((left, top + 2, right - 1, top + 8), outline=ON)
    draw.line((left, top + 2, left + 4, top + 5, right - 1, top + 2), fill=ON)
    return left - 3


def _icon_dnd(draw: ImageDraw.ImageDraw, right: int, top: int, value: str) -> int:
    # A no-entry sign: a disc with a bar.
    left = right - 8
    draw.ellipse((left, top + 1, right - 1, top + 8), fill=ON)
    draw.rectangle((left + 2, top + 4, right - 3, top + 5), fill=OFF)
    return left - 3


def _icon_texts(draw: ImageDraw.ImageDraw, right: int, top: int, value: str) -> int:
    # A speech bubble: unread text messages.
    left = right - 9
    draw.rectangle((left, top + 1, right - 1, top + 6), outline=ON)
    draw.line((left + 2, top + 7, left + 2, top + 9, left + 4, top + 7), fill=ON)
    return left - 3


_ICONS = {
    "quality": _icon_quality,
    "mute": _icon_mute,
    "dnd": _icon_dnd,
    "mwi": _icon_mwi,
    "texts": _icon_texts,
}


def _softkeys(labels: tuple[str, ...], draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    y = height - BITMAP_LINE_PX
    draw.line((0, y - 1, width - 1, y - 1), fill=ON)
    slot = width // len(labels)
    for i, label in enumerate(labels):
        if not label:
            continue
        text = fit(label, small_font(), slot - 2)
        x = i * slot + (slot - int(small_font().getlength(text))) // 2
        draw.text((x, y), text, font=small_font(), fill=ON)


def render_to_device(screen: Screen, device: object) -> None:
    """Draw ``screen`` on a luma device (real panel, dummy or emulator)."""
    with canvas(device) as draw:
        render(screen, draw)


def render_image(screen: Screen, width: int = 128, height: int = 64) -> Image.Image:
    """The screen as a 1-bit image (for the control API's PNG and for tests)."""
    image = Image.new("1", (width, height), OFF)
    render(screen, ImageDraw.Draw(image))
    return image
