"""``offhook sim``: the real firmware on a PC, under the same supervisor as on the phone.

The emulated board turns the keyboard into the keypad and hook switch and draws the OLED in the
terminal; ``--headless`` drops the terminal UI and leaves the control API as the only way in
(that is how the end-to-end tests and the demo drive simulated phones). Audio uses the PC's ALSA
devices named in the config's [audio] section. See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from firmware.config import ConfigError, load_config
from firmware.logs import kv, setup_logging
from firmware.phone_process import TEST_HOOKS_ENV, default_state_dir
from firmware.supervisor import Supervisor, install_signal_handlers, log, phone_argv


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="offhook sim", description="run a simulated phone (emulated board) on this PC"
    )
    parser.add_argument("--config", required=True, type=Path, help="phone config (TOML)")
    parser.add_argument("--headless", action="store_true", help="no terminal UI: control API only")
    parser.add_argument("--state-dir", type=Path, default=None, help="call history etc.")
    parser.add_argument(
        "--test-hooks",
        action="store_true",
        help="enable fault injection endpoints (/api/v1/test/*); for tests only",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"offhook sim: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or default_state_dir(config, args.config)
    state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not args.headless and "OFFHOOK_LOG_FILE" not in env:
        # the terminal belongs to the emulated OLED and keypad; logs go to a file
        env["OFFHOOK_LOG_FILE"] = str(state_dir / "offhook.log")
        os.environ["OFFHOOK_LOG_FILE"] = env["OFFHOOK_LOG_FILE"]
    if args.test_hooks:
        env[TEST_HOOKS_ENV] = "1"
    setup_logging(config.logging.level)
    extra = ["--state-dir", str(state_dir)]
    supervisor = Supervisor(phone_argv(args.config, "emulated", args.headless, extra), env=env)
    install_signal_handlers(supervisor)
    log.info(
        "simulator started",
        extra=kv(config=args.config, headless=args.headless, control=config.control.listen),
    )
    if not args.headless:
        print(
            f"offhook sim: control API on http://{config.control.listen}/api/v1/state;"
            f" log in {env['OFFHOOK_LOG_FILE']}",
            file=sys.stderr,
        )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
