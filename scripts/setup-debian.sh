#!/usr/bin/env bash
# Installs what building and testing berth needs on Debian 12, once.
# Safe to run again: it installs only what is missing.
set -euo pipefail
packages=(clang libclang-dev librocksdb-dev pkg-config ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
