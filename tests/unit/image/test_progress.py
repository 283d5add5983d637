"""The build's overall step bar and its closing hint: what the console shows."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from offhook.image.boards import board
from offhook.image.build import BuildOptions, Pjsua2Wheel, Steps, next_command, step_count


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def test_each_step_line_counts_steps_and_elapsed_time() -> None:
    console, out = _console()
    steps = Steps(console, total=3)
    assert steps.run("first", lambda: 41 + 1) == 42
    with steps.timed("second (own progress)"):
        pass
    text = out.getvalue()
    assert "done first" in text and "[1/3, 0:00 elapsed]" in text
    assert "done second (own progress)" in text and "[2/3," in text
    assert set(steps.times) == {"first", "second (own progress)"}


def test_step_count_matches_the_steps_a_build_shows() -> None:
    qemu = BuildOptions(board="qemu-amd64", out=Path("out"))
    # wheel, wheelhouse, rootfs, venv, overlay, boot files, strip, assemble, block map, compress
    assert step_count(qemu, None) == 10
    assert step_count(BuildOptions(board="qemu-amd64", out=Path("o"), compress=False), None) == 9
    compile_plan = Pjsua2Wheel("compile", tarball=Path("pj.tar.gz"))
    assert step_count(BuildOptions(board="rpi", out=Path("o")), compile_plan) == 13
    cached = Pjsua2Wheel("cache", wheel=Path("pjsua2.whl"))
    assert step_count(BuildOptions(board="rpi", out=Path("o")), cached) == 11


def test_build_ends_with_the_next_command() -> None:
    image = Path("out/offhook-qemu-amd64.img")
    qemu = next_command(board("qemu-amd64", "http://m"), image, [image])
    assert qemu.startswith(f"next: offhook image boot-test {image} --call")
    rpi_image = Path("out/offhook-rpi.img")
    outputs = [rpi_image, Path("out/offhook-rpi.img.bmap"), Path("out/offhook-rpi.img.zst")]
    rpi = next_command(board("rpi", "http://m"), rpi_image, outputs)
    assert rpi.startswith("next: offhook flash out/offhook-rpi.img.zst /dev/sdX --seed")
