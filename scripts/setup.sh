#!/usr/bin/env bash
# Idempotent set-up: Debian packages via apt-get, Python packages into .venv in the checkout.
# Re-running is cheap: apt-get runs only when a package is missing, pip only when pyproject changed.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config
  libasound2-dev alsa-utils sox espeak-ng
  kamailio kamailio-tls-modules baresip-core linphone-cli sip-tester
  postgresql nginx openssl ca-certificates
  chromium
  qemu-system-x86 qemu-system-arm qemu-user-static binfmt-support debootstrap
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu swig
  mtools dosfstools e2fsprogs fdisk bmap-tools xz-utils zstd util-linux socat kmod
  grub-pc-bin grub-common dbus  # GRUB for the A/B qemu-amd64 card; D-Bus for the host RAUC tests
  rauc squashfs-tools
)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.offhook-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[server,dev]"
  touch "$stamp"
fi
echo "setup: ready"
