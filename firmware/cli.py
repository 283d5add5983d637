"""``offhook`` console script: dispatches each subcommand to the module that owns it.

Subcommand modules are imported only when used, so the phone never loads the server's stack and a
missing optional dependency only affects its own command.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

from offhook.contract.errors import OffhookError

COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("offhook.firmware.sim:main", "run a simulated phone (emulated board) on this PC"),
    "run": (
        "offhook.firmware.supervisor:main",
        "run the phone under its supervisor (on a Raspberry Pi)",
    ),
    "phone": (
        "offhook.firmware.phone_process:main",
        "run one phone process (used by the supervisor)",
    ),
    "server": ("offhook.provisioning.cli:server_main", "run the provisioning server"),
    "fleet": (
        "offhook.provisioning.cli:fleet_main",
        "manage the fleet: devices, groups, approvals",
    ),
    "image": ("offhook.image.cli:image_main", "build or boot-test an SD card image"),
    "flash": ("offhook.image.cli:flash_main", "flash an image onto an SD card or image file"),
    "demo": (
        "offhook.firmware.demo:main",
        "provisioning server and simulated phones calling each other",
    ),
}


def version() -> str:
    """The installed distribution's version (the image's manifest and the phone report it)."""
    try:
        return metadata.version("offhook")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    head = "usage: offhook COMMAND [ARGS...] | offhook --version"
    return f"{head}\n\ncommands:\n{rows}\n\n'offhook COMMAND --help' for more."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("--version", "-V", "version"):
        print(f"offhook {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"offhook: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # a dependency is missing, not the command's own module
        # A phone's distribution carries neither the server nor the image builder.
        print(
            f"offhook: {name!r} is not part of this installation ({module_name})", file=sys.stderr
        )
        return 2
    try:
        return int(getattr(module, func_name)(rest) or 0)
    except OffhookError as exc:  # a refusal no subcommand reported itself: one line, no traceback
        print(f"offhook {name}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
