#!/usr/bin/env bash
# Install everything the testbed needs on Debian 12, as root: system packages through apt and
# the Python packages into .venv at the repository root. Safe to run again (it only adds what
# is missing). PyTorch is pinned (torch==2.14.1, torchvision==0.29.1) in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SYSTEM_PACKAGES=(python3 python3-venv iproute2 iperf3 openssh-server openssh-client ethtool procps
                 hostapd wpasupplicant qemu-system-x86 kmod tcpdump)
# chromium (the largest package) only renders the HTML report headless in one test
[ "${TESTBED_NO_CHROMIUM:-0}" = 1 ] || SYSTEM_PACKAGES+=(chromium)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: missing system packages: ${missing[*]}; run as root (or install them with apt-get)" >&2
    exit 1
  fi
  echo "install.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "install.sh: ready (.venv/bin/testbed)"
