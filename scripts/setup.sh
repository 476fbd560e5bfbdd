#!/bin/sh
# Installs everything the test suite needs on a fresh Debian machine. First the Debian packages
# used as reference implementations and for browser tests (when missing, which needs root),
# then the npm packages from package-lock.json.
set -eu
cd "$(dirname "$0")/.."

APT_PACKAGES="python3-numpy python3-scipy python3-pil python3-torch python3-onnx python3-nibabel python3-nipy python3-skimage python3-h5py python3-pydicom dcm2niix chromium"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "setup: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  else
    echo "setup: missing Debian packages:$missing" >&2
    echo "setup: run as root, or: sudo apt-get install$missing" >&2
    exit 1
  fi
fi
npm ci --no-audit --no-fund
