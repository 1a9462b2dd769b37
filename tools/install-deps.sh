#!/usr/bin/env bash
# Installs the Debian 12 packages softgrad needs, skipping those already installed.
#   tools/install-deps.sh            build + test dependencies (gnuplot-nox included: the
#                                    tools/plot-metrics test runs it)
#   tools/install-deps.sh --plot     only gnuplot-nox, for tools/plot-metrics (no build tools)
#   tools/install-deps.sh --bench    also PyTorch and NumPy (benchmarks, reference tables;
#                                    dev-only and large, never needed to build or test)
#   tools/install-deps.sh --fuzz     also clang, libFuzzer and clang's OpenMP (make fuzz)
#   tools/install-deps.sh PKG...     also the named extra packages
# Runs apt-get (through sudo when not root) only when something is missing.
set -euo pipefail

# gnuplot with the pngcairo terminal and nothing for X11; a gnuplot-qt or gnuplot-x11
# already there does as well (they conflict with gnuplot-nox: apt would remove them).
# libdnnl-dev is oneDNN (bfloat16 GEMMs); its CMake config (Debian's build has an OpenCL
# GPU runtime) does find_package(OpenCL), hence ocl-icd-opencl-dev, never used otherwise.
# openmpi-bin + libopenmpi-dev: Open MPI (mpirun, the MPI library) for distributed/ and its
# tests under mpirun; softgrad still builds without them (one process only).
# "a|b" is a set of alternatives: any one installed is enough, else the first is installed.
plot_packages=("gnuplot-nox|gnuplot-qt|gnuplot-x11")
base_packages=(g++ cmake make libopenblas-openmp-dev libfmt-dev doctest-dev libhwy-dev
               zlib1g-dev libdnnl-dev ocl-icd-opencl-dev libcli11-dev nlohmann-json3-dev
               openmpi-bin libopenmpi-dev "${plot_packages[@]}")
extra=()
plot_only=0
for arg in "$@"; do
  case "$arg" in
    --bench) extra+=(python3 python3-torch python3-numpy) ;;
    --fuzz) extra+=(clang libclang-rt-14-dev libomp-14-dev) ;;
    --plot) plot_only=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "install-deps.sh: unknown option $arg" >&2; exit 2 ;;
    *) extra+=("$arg") ;;
  esac
done

# --plot drops the build packages; any other option or name given with it still counts.
if [ "$plot_only" -eq 1 ]; then
  packages=("${plot_packages[@]}" ${extra[@]+"${extra[@]}"})
else
  packages=("${base_packages[@]}" ${extra[@]+"${extra[@]}"})
fi

is_installed() {
  dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed
}
any_installed() {
  local alt alts
  IFS='|' read -ra alts <<<"$1"
  for alt in "${alts[@]}"; do is_installed "$alt" && return 0; done
  return 1
}

missing=()
for p in "${packages[@]}"; do
  any_installed "$p" || missing+=("${p%%|*}")
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
