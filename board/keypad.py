"""Key matrix scanner with debounce and ghost rejection.

Wiring: rows are outputs, idle HIGH; the scanner drives one row LOW at a time and reads the columns,
which are inputs with pull-ups. A pressed key joins its row and column, so its column reads LOW
while its row is driven. Without diodes, three keys on the corners of a rectangle make the fourth
corner read as pressed too (ghosting): such a scan is ambiguous and is ignored, so any two keys at
once are always reported correctly (2-key rollover) and a possible ghost is never reported.

Debounce: a key changes state only after ``debounce_scans`` consecutive scans agree.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from offhook.board.gpio import GpioApi
from offhook.board.worker import Worker
from offhook.contract.logs import kv

log = logging.getLogger(__name__)

Position = tuple[int, int]


class MatrixKeypad:
    def __init__(
        self,
        gpio: GpioApi,
        rows: Sequence[int],
        cols: Sequence[int],
        keys: Sequence[Sequence[str]],
        on_key: Callable[[str], None],
        debounce_scans: int = 3,
        scan_hz: float = 200.0,
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        if len(keys) != len(rows) or any(len(r) != len(cols) for r in keys):
            raise ValueError(f"keys grid must be {len(rows)} rows x {len(cols)} columns")
        if debounce_scans < 1:
            raise ValueError("debounce_scans must be at least 1")
        self._gpio = gpio
        self._rows = list(rows)
        self._cols = list(cols)
        self._keys = [list(r) for r in keys]
        self._on_key = on_key
        self._on_release = on_release
        self._debounce = debounce_scans
        self.scan_period_s = 1.0 / scan_hz
        self._stable: set[Position] = set()
        self._streak: dict[Position, int] = {}  # scans in a row a key differed from _stable
        self._worker = Worker("keypad-scan", self._run)
        self.ghost_scans = 0  # scans discarded as ambiguous

    def setup(self) -> None:
        for row in self._rows:
            self._gpio.setup(row, self._gpio.OUT, initial=self._gpio.HIGH)
        for col in self._cols:
            self._gpio.setup(col, self._gpio.IN, pull_up_down=self._gpio.PUD_UP)

    @property
    def pressed(self) -> list[str]:
        """Keys held now (debounced)."""
        return [self._keys[r][c] for r, c in sorted(self._stable)]

    def scan_matrix(self) -> set[Position]:
        """One raw pass over the matrix: positions whose column read LOW with their row driven."""
        gpio = self._gpio
        closed: set[Position] = set()
        for r, row in enumerate(self._rows):
            gpio.output(row, gpio.LOW)
            for c, col in enumerate(self._cols):
                if gpio.input(col) == gpio.LOW and self._keys[r][c]:
                    closed.add((r, c))
            gpio.output(row, gpio.HIGH)
        return closed

    @staticmethod
    def ambiguous(closed: set[Position]) -> bool:
        """A key with another closed key in its row and another in its column: an L-shape, whose
        missing corner would read closed too, so a real key and a ghost cannot be told apart."""
        rows = {r for r, _ in closed}
        cols = {c for _, c in closed}
        if len(closed) < 3 or len(rows) == len(closed) or len(cols) == len(closed):
            return False
        return any(
            any(r2 == r and c2 != c for r2, c2 in closed)
            and any(c2 == c and r2 != r for r2, c2 in closed)
            for r, c in closed
        )

    def scan_once(self) -> list[str]:
        """Scan, debounce, call back for new presses; returns the keys newly pressed."""
        closed = self.scan_matrix()
        if self.ambiguous(closed):
            self.ghost_scans += 1
            return []
        pressed: list[str] = []
        for pos in closed ^ self._stable | set(self._streak):
            if (pos in closed) == (pos in self._stable):
                self._streak.pop(pos, None)  # bounced back: start counting again
                continue
            count = self._streak.get(pos, 0) + 1
            if count < self._debounce:
                self._streak[pos] = count
                continue
            self._streak.pop(pos, None)
            key = self._keys[pos[0]][pos[1]]
            if pos in closed:
                self._stable.add(pos)
                pressed.append(key)
            else:
                self._stable.discard(pos)
                if self._on_release is not None:
                    self._on_release(key)
        for key in pressed:
            log.debug("key pressed", extra=kv(key=key))
            self._on_key(key)
        return pressed

    def start(self) -> None:
        """Scan in a background thread at the configured rate."""
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.scan_period_s):
            try:
                self.scan_once()
            except Exception:  # a flaky read must not kill the keypad for good
                log.exception("keypad scan failed")
