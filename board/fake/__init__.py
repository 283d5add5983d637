"""Fakes for hardware: they model the electrics so the real board code runs in tests."""

from offhook.board.fake.gpio import FakeGPIO

__all__ = ["FakeGPIO"]
