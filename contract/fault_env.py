"""Environment variables of the test-only faults an image can be built with: the image build
writes them into the phone's environment file (/etc/default/offhook), the firmware reads them.
Never set on a card that goes out (the build manifest names them)."""

from __future__ import annotations

# ``offhook image build --test-registrar HOST:PORT``: every account registers there instead of
# at its own domain (a broken build whose trial boot must fail its health check and roll back).
TEST_REGISTRAR_ENV = "OFFHOOK_TEST_REGISTRAR"
