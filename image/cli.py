"""``offhook image ...`` and ``offhook flash ...``: argument parsing and progress display only."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console

from offhook.image.qemu import MACHINES

console = Console(stderr=True)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"not a count from 0 to 10: {text!r}")
    return value


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4G, 512M)") from None


def _flash_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="offhook flash",
        description="Write an image to SD cards or image files: only mapped blocks, verified.",
    )
    p.add_argument("image", type=Path, help="the .img file (its .bmap must sit beside it)")
    p.add_argument("target", type=Path, nargs="?", help="card (/dev/sdX, /dev/mmcblkN) or file")
    p.add_argument("--bmap", type=Path, help="block map (default: IMAGE.bmap)")
    p.add_argument("--seed", type=Path, help="seed TOML to put on the card (see docs/image.md)")
    p.add_argument("--batch", type=Path, help="CSV with one seed per card (row N -> target N)")
    p.add_argument("--targets", help="comma-separated targets for --batch")
    p.add_argument("--force", action="store_true", help="allow non-removable disks")
    p.add_argument("--no-verify", action="store_true", help="skip reading the card back")
    return p


def flash_main(argv: list[str]) -> int:
    from offhook.image.flash import Flasher, FlashError, describe_image
    from offhook.image.progress import byte_progress
    from offhook.image.seed import Seed, SeedError, load_batch, load_seed

    args = _flash_parser().parse_args(argv)
    try:
        base = load_seed(args.seed) if args.seed else None
        jobs: list[tuple[Path, Seed | None]]
        if args.batch:
            if args.target or not args.targets:
                raise SeedError("--batch needs --targets T1,T2,... and no positional TARGET")
            targets = [Path(t) for t in args.targets.split(",") if t]
            seeds = load_batch(args.batch, base)
            if len(seeds) != len(targets):
                raise SeedError(
                    f"{args.batch}: {len(seeds)} device rows but {len(targets)} targets"
                )
            jobs = list(zip(targets, seeds, strict=True))
        else:
            if not args.target:
                raise SeedError("TARGET is required (or --batch with --targets)")
            jobs = [(args.target, base)]
        flasher = Flasher(args.image, args.bmap, verify=not args.no_verify)
        console.print(f"image {args.image}: {describe_image(args.image)}")
        with byte_progress(console, "checking image", flasher.bmap.mapped_bytes) as advance:
            flasher.check_image(advance)
        for target, _ in jobs:  # every target is checked before the first is written
            flasher.check_target(target, args.force)
        for target, seed in jobs:
            passes = 2 if flasher.verify else 1
            with byte_progress(console, f"{target}", flasher.bmap.mapped_bytes * passes) as advance:
                result = flasher.flash(target, seed=seed, force=args.force, progress=advance)
            rate = result.bytes_written / max(result.seconds, 1e-6) / (1 << 20)
            console.print(
                f"[green]{target}[/]: wrote {result.bytes_written / (1 << 20):.1f} MiB in "
                f"{result.seconds:.1f} s ({rate:.0f} MiB/s)"
                + (", verified" if result.verified else "")
                + (f", seeded as {seed.hostname}" if seed else "")
            )
    except (FlashError, SeedError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    return 0


def _image_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="offhook image", description="Build and test SD images.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an image from Debian packages")
    b.add_argument("--board", choices=["rpi", "qemu-amd64"], required=True)
    b.add_argument("--out", type=Path, required=True, help="output directory")
    b.add_argument("--size", type=_size, help="total image size, e.g. 4G (data fills the rest)")
    b.add_argument(
        "--pjsua2-wheel",
        type=Path,
        help="prebuilt cp311 aarch64 pjsua2 wheel (rpi; default: cached, else compiled)",
    )
    b.add_argument(
        "--pjproject-tarball",
        type=Path,
        help="pinned pjproject release tarball copied in by hand (checked against its sha256)",
    )
    b.add_argument(
        "--pjproject-url",
        help="mirror URL of the pinned pjproject tarball (default: $OFFHOOK_PJPROJECT_URL, "
        "else the release URL); still checked against the pinned sha256",
    )
    b.add_argument("--wheel", type=Path, help="offhook wheel (default: built with pip wheel)")
    b.add_argument("--mirror", default="http://deb.debian.org/debian")
    b.add_argument(
        "--cache",
        type=Path,
        help="cache directory (default: $OFFHOOK_IMAGE_CACHE or ~/.cache/offhook-image)",
    )
    b.add_argument("--no-compress", action="store_true", help="skip the .img.zst copy")
    b.add_argument("--id-seed", default="offhook", help="seed for disk and filesystem ids")
    b.add_argument(
        "--signing-key", type=Path,
        help="PEM key signing the update bundle (default: development keys, made on first use)",
    )  # fmt: skip
    b.add_argument("--signing-cert", type=Path, help="PEM certificate of --signing-key")
    b.add_argument(
        "--firmware-version", help="version of the firmware and its bundle (default: pyproject's)"
    )
    b.add_argument(
        "--test-registrar", default="", metavar="HOST:PORT",
        help="TEST ONLY: a broken firmware whose accounts register here instead (the update "
        "rollback test); never for a real card",
    )  # fmt: skip

    t = sub.add_parser("boot-test", help="boot an image under QEMU and wait for ready")
    t.add_argument("image", type=Path)
    t.add_argument(
        "--machine",
        choices=sorted(MACHINES),
        help="QEMU machine (default: the card's own: amd64, or arm64 = -M virt for a Pi card; "
        "raspi3b: a Pi card on QEMU's Raspberry Pi 3 B model)",
    )
    t.add_argument("--seed", type=Path, help="seed TOML for the data partition")
    t.add_argument("--kamailio", action="store_true", help="run Kamailio and wait for REGISTER")
    t.add_argument(
        "--call",
        action="store_true",
        help="then call a baresip on the host from the phone and check audio both ways "
        "(implies --kamailio)",
    )
    t.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for readiness")
    t.add_argument("--console-log", type=Path, help="write the serial console here")
    t.add_argument(
        "--reboots",
        type=_count,
        default=0,
        help="then cut the power N times and boot the same card again (identity kept?)",
    )

    m = sub.add_parser("bmap", help="write IMAGE.bmap for an image file")
    m.add_argument("image", type=Path)

    s = sub.add_parser("seed", help="write a seed file into an image or card")
    s.add_argument("target", type=Path)
    s.add_argument("seed", type=Path)
    return p


def image_main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    args = _image_parser().parse_args(argv)
    if args.command == "build":
        from offhook.image.build import BuildError, BuildOptions, build

        try:
            build(
                BuildOptions(
                    board=args.board,
                    out=args.out,
                    size=args.size,
                    pjsua2_wheel=args.pjsua2_wheel,
                    pjproject_tarball=args.pjproject_tarball,
                    pjproject_url=args.pjproject_url,
                    wheel=args.wheel,
                    mirror=args.mirror,
                    cache=args.cache,
                    compress=not args.no_compress,
                    id_seed=args.id_seed,
                    signing_key=args.signing_key,
                    signing_cert=args.signing_cert,
                    firmware_version=args.firmware_version,
                    test_registrar=args.test_registrar,
                ),
                console=console,
            )
        except BuildError as exc:
            console.print(f"[red]build failed:[/] {exc}")
            return 1
        return 0
    if args.command == "boot-test":
        from offhook.image.boottest import BootTestError, boot_test

        def milestone(name: str, seconds: float) -> None:
            console.print(f"[green]{seconds:6.1f} s[/] {name.replace('_', ' ')}")

        try:
            result = boot_test(
                args.image,
                seed_path=args.seed,
                kamailio=args.kamailio,
                call=args.call,
                timeout=args.timeout,
                console_log=args.console_log,
                reboots=args.reboots,
                on_milestone=milestone,
                machine=args.machine,
            )
        except BootTestError as exc:
            console.print(f"[red]boot test failed:[/] {exc}")
            return 1
        console.print(f"[green]boot test passed[/]: {result.summary()}")
        return 0
    if args.command == "bmap":
        from offhook.image.bmap import create_bmap, write_bmap

        out = args.image.with_name(args.image.name + ".bmap")
        write_bmap(create_bmap(args.image), out)
        console.print(f"wrote {out}")
        return 0
    if args.command == "seed":
        from offhook.image.layout import LayoutError, boot_partition_offset
        from offhook.image.seed import SeedError, load_seed, write_seed

        try:
            write_seed(args.target, boot_partition_offset(args.target), load_seed(args.seed))
        except (SeedError, LayoutError) as exc:
            console.print(f"[red]error:[/] {exc}")
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(image_main(sys.argv[1:]))
