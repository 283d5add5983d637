"""The phone process's handlers for the features' commands, each off the Runtime's loop thread.

The Phone asks (SearchDirectory, LookupCaller, ApplyNetwork, FactoryReset, TrustServer); these
carry it out on threads of their own and post the answers back as events: the directory
(firmware/ldap_directory.py), the network settings (firmware/network_settings.py), the factory
reset (firmware/factory_reset.py) and zero-touch trust (firmware/provisioning/zero_touch.py).
``commands()`` is the Runtime's ``services`` table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from offhook.contract.config import DirectorySettings
from offhook.contract.errors import OffhookError
from offhook.contract.logs import kv
from offhook.firmware.factory_reset import FactoryResetter
from offhook.firmware.features.events import (
    ApplyNetwork,
    FactoryReset,
    FactoryResetDone,
    LookupCaller,
    NetworkApplied,
    SearchDirectory,
    TrustServer,
)
from offhook.firmware.ldap_directory import DirectoryService
from offhook.firmware.network_settings import NetworkSettings

log = logging.getLogger(__name__)


class DeviceServices:
    def __init__(
        self,
        post: Callable[[Any], None],
        directory: Callable[[], DirectorySettings],
        network: NetworkSettings | None,
        resetter: FactoryResetter | None,
        after_reset: Callable[[], None],
        trust: Callable[[TrustServer], None] | None = None,
    ) -> None:
        self._post = post
        self.directory = DirectoryService(directory, post)
        self.network = network
        self.resetter = resetter
        self._after_reset = after_reset
        self._trust = trust

    def start(self) -> None:
        self.directory.start()

    def stop(self) -> None:
        self.directory.stop()

    def set_trust(self, trust: Callable[[TrustServer], None] | None) -> None:
        self._trust = trust

    def post_network_status(self, addresses: tuple[str, ...]) -> None:
        if self.network is not None:
            self._post(self.network.status(addresses))

    def commands(self) -> dict[type[Any], Callable[[Any], None]]:
        return {
            SearchDirectory: self.directory.submit,
            LookupCaller: self.directory.submit,
            ApplyNetwork: self._apply_network,
            FactoryReset: self._factory_reset,
            TrustServer: self._trust_server,
        }

    def _in_background(self, name: str, job: Callable[[], None]) -> None:
        threading.Thread(target=job, name=name, daemon=True).start()

    def _apply_network(self, command: ApplyNetwork) -> None:
        network = self.network
        if network is None:
            self._post(NetworkApplied("network settings are not available here"))
            return

        def job() -> None:
            try:
                network.apply(command)
            except OffhookError as exc:
                log.warning("network settings refused", extra=kv(error=exc))
                self._post(NetworkApplied(str(exc)))
                return
            self._post(NetworkApplied(""))
            self._post(network.status())

        self._in_background("network-settings", job)

    def _factory_reset(self, command: FactoryReset) -> None:
        resetter = self.resetter
        if resetter is None:
            self._post(FactoryResetDone("factory reset works on the phone's data partition only"))
            return

        def job() -> None:
            try:
                resetter.reset()
            except OffhookError as exc:
                log.error("factory reset failed", extra=kv(error=exc))
                self._post(FactoryResetDone(str(exc)))
                return
            self._post(FactoryResetDone(""))
            self._after_reset()  # a fresh phone process starts on the default config

        self._in_background("factory-reset", job)

    def _trust_server(self, command: TrustServer) -> None:
        if self._trust is not None:
            self._trust(command)
        else:
            log.warning("trust answer without a discovered server", extra=kv(url=command.url))
