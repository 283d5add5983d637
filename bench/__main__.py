"""``make bench``: run every bench/bench_*.py (or those named on the command line).

Each benchmark module has ``main() -> int`` and prints its own figures with the ratio to the peer it
was measured against in the same run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    failed = 0
    for name in names:
        print(f"\n=== {name}", flush=True)
        try:
            failed += int(importlib.import_module(f"bench.{name}").main() or 0) != 0
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name}: FAILED: {exc!r}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
