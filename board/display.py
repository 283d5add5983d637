"""The OLED: a luma.oled device over I2C or SPI on a Pi, or luma's dummy device headless.

Every variant is a luma ``device`` (``display(image)``, ``size``, ``mode``), so the screen
renderer and the control API's screenshot never care which one they draw on.
"""

from __future__ import annotations

import logging
from typing import Any

from offhook.board.base import Display
from offhook.board.profile import DisplayWiring
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv

log = logging.getLogger(__name__)


class DisplayError(OffhookError, RuntimeError):
    pass


def make_dummy_display(width: int = 128, height: int = 64, rotate: int = 0) -> Display:
    """A headless panel: keeps the last image shown (``device.image``), in 1-bit mode."""
    from luma.core.device import dummy

    return dummy(width=width, height=height, rotate=rotate, mode="1")


def make_display(wiring: DisplayWiring) -> Display | None:
    """The real panel described by ``wiring``; None when the board has no display."""
    if wiring.driver == "none":
        return None
    import luma.core.error
    from luma.core.interface.serial import i2c, spi
    from luma.oled.device import sh1106, ssd1306

    driver = {"ssd1306": ssd1306, "sh1106": sh1106}[wiring.driver]
    try:
        if wiring.bus == "i2c":
            serial = i2c(port=wiring.port, address=wiring.address)
        else:
            extra = {}
            if wiring.dc_pin is not None:
                extra["gpio_DC"] = wiring.dc_pin
            if wiring.reset_pin is not None:
                extra["gpio_RST"] = wiring.reset_pin
            serial = spi(port=wiring.port, device=wiring.spi_device, **extra)
        device = driver(serial, width=wiring.width, height=wiring.height, rotate=wiring.rotate)
    except (luma.core.error.Error, OSError, ImportError, RuntimeError) as exc:
        where = (
            f"i2c bus {wiring.port} address 0x{wiring.address:02x}"
            if wiring.bus == "i2c"
            else f"spi {wiring.port}.{wiring.spi_device}"
        )
        raise DisplayError(f"cannot open {wiring.driver} display on {where}: {exc}") from exc
    log.info("display opened", extra=kv(driver=wiring.driver, bus=wiring.bus))
    return device


def apply_settings(wiring: DisplayWiring, settings: Any) -> DisplayWiring:
    """The profile's wiring with the phone config's ``[board]`` choices (driver, bus, address)."""
    return wiring.model_copy(
        update={
            "driver": settings.display,
            "bus": settings.display_bus,
            "address": settings.display_address,
            "rotate": settings.display_rotate,
        }
    )
