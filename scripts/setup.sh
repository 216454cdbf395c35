#!/usr/bin/env bash
# Installs what pirt needs to build and test on Debian/Ubuntu: compilers and C++ libraries from
# Debian's packages, the Python test tools from PyPI. Safe to run again; skips what is present.
set -euo pipefail

APT_PACKAGES=(
  cmake ninja-build g++ pkg-config
  nlohmann-json3-dev libgtest-dev libgmock-dev   # JSON, GoogleTest
  libmsgpack-cxx-dev libboost-dev                 # msgpack-numpy codec, Boost.Beast websocket server
  libsentencepiece-dev sentencepiece              # PaliGemma tokenizer (and spm_train for the test model)
  python3 python3-numpy
)
PIP_PACKAGES=(numpy openpi-client msgpack websockets sentencepiece)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python test tools go to the `python3` on PATH (openpi's client for the server tests).
PY=$(command -v python3)
if ! "$PY" -c "import openpi_client, numpy, msgpack, websockets, sentencepiece" 2>/dev/null; then
  echo "setup: pip installing ${PIP_PACKAGES[*]}"
  "$PY" -m pip install -q "${PIP_PACKAGES[@]}" || "$PY" -m pip install -q --break-system-packages "${PIP_PACKAGES[@]}"
fi
echo "setup: ok"
