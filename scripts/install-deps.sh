#!/usr/bin/env bash
# Debian packages Paradice needs to build and to verify its specs against the real headers.
set -euo pipefail
packages=(gcc libc6-dev linux-libc-dev libdrm-dev libasound2-dev libevdev-dev libv4l-dev libxen-dev iproute2 python3 libssl-dev openssl)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "Swift 6 is needed on PATH (swift.org toolchain for Debian)"; exit 1; }
