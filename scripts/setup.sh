#!/usr/bin/env bash
# Idempotent set-up: Debian packages via apt-get, Python packages into .venv in the checkout.
# Re-running is cheap: apt-get runs only when a package is missing, pip only when pyproject changed.
# Usage: scripts/setup.sh [full|demo]   full (make test, the default): everything the tests run;
# demo (make demo): only what the demo runs (Kamailio, the server, simulated phones).
set -euo pipefail
cd "$(dirname "$0")/.."

SET="${1:-full}"
case "$SET" in
  demo | full) ;;
  *) echo "setup: unknown set '$SET' (full or demo)" >&2; exit 2 ;;
esac

# The demo: Kamailio as registrar, the provisioning server, and offhook sim phones (pjsua2 comes
# as a wheel; pyalsaaudio builds against libasound2-dev).
DEMO_DEB_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config libasound2-dev alsa-utils libspeexdsp1
  kamailio kamailio-tls-modules kamailio-presence-modules openssl ca-certificates
)

DEB_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config
  libasound2-dev alsa-utils libspeexdsp1 sox espeak-ng
  kamailio kamailio-tls-modules kamailio-presence-modules baresip-core linphone-cli sip-tester
  postgresql nginx openssl ca-certificates
  chromium
  qemu-system-x86 qemu-system-arm qemu-user-static binfmt-support debootstrap
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu swig
  mtools dosfstools e2fsprogs fdisk bmap-tools xz-utils zstd util-linux socat kmod
  grub-pc-bin grub-common dbus  # GRUB for the A/B qemu-amd64 card; D-Bus for the host RAUC tests
  rauc squashfs-tools
  # U-Boot for the Pi's A/B card: mkimage/mkenvimage at build time, qemu_arm64 to run its boot
  # script in tests, fw_printenv/fw_setenv (RAUC's uboot backend) against its slot state
  u-boot-tools u-boot-qemu libubootenv-tool
  slapd ldap-utils  # the remote phonebook's tests run a real OpenLDAP
  dnsmasq-base iproute2  # zero-touch tests: DHCP and DNS from dnsmasq, in network namespaces
  systemd ifupdown  # the network page's VLAN files, read by systemd-networkd and ifup --no-act
)
if [ "$SET" = demo ]; then
  DEB_PACKAGES=("${DEMO_DEB_PACKAGES[@]}")
fi

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
# The full set's stamp covers the demo's too (its extras include the demo's).
full_stamp=.venv/.offhook-installed
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
if [ "$SET" = demo ]; then
  extras="server" stamp=.venv/.offhook-installed-demo
else
  extras="server,dev" stamp=$full_stamp
fi
if ! fresh "$full_stamp" && ! fresh "$stamp"; then
  echo "setup: installing Python packages into .venv ($SET)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
echo "setup: ready"
