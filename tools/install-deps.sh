#!/usr/bin/env bash
# Installs the Debian 12 packages softgrad needs, skipping those already installed.
#   tools/install-deps.sh            build + test dependencies
#   tools/install-deps.sh --bench    also PyTorch and NumPy (benchmarks, reference tables;
#                                    dev-only and large, never needed to build or test)
#   tools/install-deps.sh --fuzz     also clang, libFuzzer and clang's OpenMP (make fuzz)
#   tools/install-deps.sh PKG...     also the named extra packages
# Runs apt-get (through sudo when not root) only when something is missing.
set -euo pipefail

packages=(g++ cmake make libopenblas-openmp-dev libfmt-dev doctest-dev libhwy-dev
          zlib1g-dev libcli11-dev nlohmann-json3-dev)
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(python3 python3-torch python3-numpy) ;;
    --fuzz) packages+=(clang libclang-rt-14-dev libomp-14-dev) ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
    *) packages+=("$arg") ;;
  esac
done

is_installed() {
  dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed
}

missing=()
for p in "${packages[@]}"; do
  is_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install-deps: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
