"""OLED rendering: the text of a Screen really lands on the panel, where the layout puts it."""

from __future__ import annotations

from luma.core.device import dummy
from PIL import Image, ImageChops, ImageDraw, ImageFont

from offhook.firmware.events import Screen
from offhook.firmware.screens import render_image, render_to_device
from offhook.firmware.screens.oled import fit

STATUS = {"time": "12:34", "line": "1001", "reg": "ok"}


def reference(text: str, width: int = 128, height: int = 11, x: int = 0, font=None) -> Image.Image:
    """The text drawn on its own with Pillow's bitmap font: what a screen band must equal."""
    image = Image.new("1", (width, height), 0)
    ImageDraw.Draw(image).text(
        (x, 0), text, font=font or ImageFont.load_default_imagefont(), fill=255
    )
    return image


def band(image: Image.Image, top: int, height: int = 11, left: int = 0, right: int = 128):
    return image.crop((left, top, right, top + height)).convert("1")


def same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a.convert("1"), b.convert("1")).getbbox() is None


def on_dummy(screen: Screen, width: int = 128, height: int = 64, mode: str = "1") -> Image.Image:
    device = dummy(width=width, height=height, mode=mode)
    render_to_device(screen, device)
    return device.image


def test_each_line_is_drawn_in_its_band() -> None:
    lines = ("Carol Smith", "2001", "01:05")
    image = on_dummy(Screen("talking", lines, STATUS, ("Hold", "Xfer", "Conf")))
    for i, text in enumerate(lines):
        assert same(band(image, 13 + 11 * i), reference(text)), f"line {i} {text!r}"


def test_changing_one_line_changes_only_its_band() -> None:
    a = on_dummy(Screen("talking", ("Carol", "2001", "00:01"), STATUS))
    b = on_dummy(Screen("talking", ("Carol", "2001", "00:02"), STATUS))
    box = ImageChops.difference(a, b).getbbox()
    assert box is not None
    assert box[1] >= 35 and box[3] <= 46


def test_status_bar_has_clock_right_and_line_name() -> None:
    image = on_dummy(Screen("idle", ("x",), STATUS))
    clock_width = int(ImageFont.load_default_imagefont().getlength("12:34"))
    assert same(band(image, 0, left=128 - clock_width), reference("12:34", clock_width))
    assert same(band(image, 0, left=9, right=9 + 24), reference("1001", 24))
    assert all(image.getpixel((x, 11)) for x in range(128)), "rule under the status bar"


def test_registration_mark_filled_only_when_registered() -> None:
    registered = on_dummy(Screen("idle", (), STATUS))
    unregistered = on_dummy(Screen("idle", (), {**STATUS, "reg": "none"}))
    assert registered.getpixel((3, 5)) and not unregistered.getpixel((3, 5))
    assert unregistered.getpixel((0, 5)), "hollow square still has its outline"


def test_icons_appear_between_name_and_clock() -> None:
    plain = on_dummy(Screen("idle", (), STATUS))
    icons = on_dummy(Screen("idle", (), {**STATUS, "dnd": "on", "mwi": "2", "quality": "3"}))
    box = ImageChops.difference(plain, icons).getbbox()
    assert box is not None and box[3] <= 11 and box[0] > 30 and box[2] < 100


def test_softkeys_drawn_under_three_lines_and_dropped_for_four() -> None:
    keys = ("Hold", "Xfer", "Conf")
    three = on_dummy(Screen("talking", ("a", "b", "c"), STATUS, keys))
    slot = 128 // 3
    width = int(ImageFont.load_default_imagefont().getlength("Hold"))
    x = (slot - width) // 2
    assert same(band(three, 53, left=x, right=x + width), reference("Hold", width))
    four = on_dummy(Screen("talking", ("a", "b", "c", "Waiting: Dave"), STATUS, keys))
    assert same(band(four, 13 + 33), reference("Waiting: Dave"))


def test_selected_list_line_is_inverted() -> None:
    image = on_dummy(Screen("history", ("History", "> 2001", "  Bob"), STATUS))
    selected = band(image, 24 + 1, height=10, left=2)
    ref = ImageChops.invert(band(reference("2001", 126), 1, height=10, right=126))
    assert same(selected, ref)


def test_dialled_number_is_big() -> None:
    image = on_dummy(Screen("dialing", ("Enter number", "2001"), STATUS, ("Back", "", "Send")))
    big = ImageFont.load_default(size=16)
    assert same(band(image, 24, height=18), reference("2001", height=18, font=big))


def test_long_text_is_cut_to_fit() -> None:
    font = ImageFont.load_default_imagefont()
    text = fit("A very long caller name that does not fit", font, 128)
    assert text.endswith(".") and font.getlength(text) <= 128
    assert fit("short", font, 128) == "short"


def test_compact_panel_shows_status_and_two_lines() -> None:
    image = on_dummy(Screen("talking", ("Carol", "2001", "00:10"), STATUS), height=32)
    # the line cells start on the rule: the font's empty top row is under it
    assert same(band(image, 10, height=9), band(reference("Carol"), 1, height=9))
    assert same(band(image, 20, height=10), band(reference("2001"), 1, height=10))
    assert band(image, 30, height=2).getbbox() is None, "third line does not fit"


def test_rgb_canvas_gets_the_same_picture() -> None:
    screen = Screen("idle", ("1001", "Registered"), {**STATUS, "dnd": "on"})
    mono = on_dummy(screen)
    rgb = on_dummy(screen, mode="RGB")
    assert same(rgb.convert("L").point(lambda v: 255 if v > 127 else 0), mono)


def test_render_image_matches_device_rendering() -> None:
    screen = Screen("incoming", ("Incoming call", "Bob", "2002"), STATUS, ("Reject", "", "Answer"))
    assert same(render_image(screen), on_dummy(screen))
