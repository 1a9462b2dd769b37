#!/usr/bin/env bash
# ctest cases for tools/plot-metrics (registered in CMakeLists.txt):
#   plot_metrics_test.sh png SOURCE_DIR WORK_DIR        a real run's CSV becomes a 900x400
#       PNG, and the same CSV with its columns shuffled and CRLF line ends plots the same
#       epochs; exits 77 (ctest: skipped) only when there is no gnuplot
#   plot_metrics_test.sh malformed SOURCE_DIR WORK_DIR  bad CSVs and arguments fail with
#       a message naming the file and the problem, and write no PNG
set -uo pipefail

mode=$1 src=$2 work=$3
tool=$src/tools/plot-metrics
data=$src/tests/data
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

rm -rf "$work" && mkdir -p "$work" || exit 1

# run NAME ARGS...: runs the tool, keeps its status in $status and its output in $output.
run() {
  local name=$1; shift
  output=$("$tool" "$@" 2>&1); status=$?
  printf '== %s: status %d\n%s\n' "$name" "$status" "$output"
}
# expect_png FILE: a PNG (signature, then an IHDR of 900x400) of a plausible size.
expect_png() {
  local f=$1 size
  [ -f "$f" ] || { fail "$f was not written"; return; }
  [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$f lacks the PNG signature"
  # IHDR: bytes 12-15 the chunk type, 16-19 width, 20-23 height (big-endian)
  [ "$(od -An -tx1 -j12 -N12 "$f" | tr -d ' \n')" = 494844520000038400000190 ] ||
    fail "$f is not a 900x400 PNG (IHDR bytes:$(od -An -tx1 -j12 -N12 "$f"))"
  size=$(stat -c %s "$f")
  # Two panels of curves, axes and text are tens of KB; a blank 900x400 image is ~2 KB.
  { [ "$size" -gt 15000 ] && [ "$size" -lt 200000 ]; } || fail "$f is $size bytes"
}
# expect_error TEXT...: the last run failed, printed every TEXT, and wrote no PNG.
expect_error() {
  [ "$status" -ne 0 ] || fail "status 0, expected a failure"
  local t
  for t in "$@"; do
    grep -qF -- "$t" <<<"$output" || fail "the message lacks \"$t\""
  done
  [ ! -e "$work/out.png" ] || fail "a PNG was written despite the error"
}

case "$mode" in
  png)
    if ! command -v gnuplot >/dev/null; then
      echo "SKIPPED: gnuplot is not installed (tools/install-deps.sh installs gnuplot-nox); the PNG is not tested"
      exit 77
    fi
    run "the 8-epoch mnist_mlp run" "$data/metrics_mnist_mlp.csv" "$work/run.png" --title "test: it's {x}_1"
    [ "$status" -eq 0 ] || fail "status $status"
    grep -qF "8 epoch(s) of $data/metrics_mnist_mlp.csv, final test accuracy 98.51%" <<<"$output" ||
      fail "the summary line is wrong"
    expect_png "$work/run.png"

    # The trainer's order is not assumed: columns found by name, CRLF line ends accepted.
    awk -F, 'BEGIN { OFS = "," } { print $6, $5, $1, $8, $3, $2, $4, $7 "\r" }' \
      "$data/metrics_mnist_mlp.csv" >"$work/shuffled.csv"
    run "shuffled columns, CRLF" "$work/shuffled.csv" "$work/shuffled.png"
    [ "$status" -eq 0 ] || fail "status $status"
    grep -qF "8 epoch(s) of $work/shuffled.csv, final test accuracy 98.51%" <<<"$output" ||
      fail "the shuffled CSV was read differently"
    expect_png "$work/shuffled.png"

    # A resumed run appending epochs 4-8 again: one point per epoch, the last row's.
    { cat "$data/metrics_mnist_mlp.csv"; sed -n '5,9p' "$data/metrics_mnist_mlp.csv"; } >"$work/resumed.csv"
    run "repeated epochs" "$work/resumed.csv" "$work/resumed.png"
    [ "$status" -eq 0 ] || fail "status $status"
    grep -qF "5 row(s) repeat an earlier epoch" <<<"$output" || fail "no note of the repeated epochs"
    grep -qF "8 epoch(s) of" <<<"$output" || fail "the repeated epochs were counted twice"
    expect_png "$work/resumed.png"
    ;;
  malformed)
    # None of these reach gnuplot, so they run without it too.
    f=$data/metrics_missing_column.csv
    run "missing column" "$f" "$work/out.png"
    expect_error "plot-metrics: $f:" "lacks the column(s) test_loss"
    f=$data/metrics_bad_row.csv
    run "not a number" "$f" "$work/out.png"
    expect_error "plot-metrics: $f:" 'line 3: test_loss is "nan", not a number'
    head -1 "$data/metrics_mnist_mlp.csv" >"$work/header_only.csv"
    run "no rows" "$work/header_only.csv" "$work/out.png"
    expect_error "$work/header_only.csv: no data rows after the header"
    printf 'epoch,train_loss,train_acc,test_loss,test_acc\n1,0.5,80,0.4\n' >"$work/short_row.csv"
    run "short row" "$work/short_row.csv" "$work/out.png"
    expect_error "$work/short_row.csv: line 2 has 4 fields, the header has 5"
    : >"$work/empty.csv"
    run "empty file" "$work/empty.csv" "$work/out.png"
    expect_error "$work/empty.csv: empty file"
    run "no such file" "$work/absent.csv" "$work/out.png"
    expect_error "$work/absent.csv: no such file"
    run "not a .png" "$data/metrics_mnist_mlp.csv" "$work/out.jpg"
    expect_error "$work/out.jpg: the output must be a .png file"
    [ ! -e "$work/out.jpg" ] || fail "out.jpg was written"
    run "no arguments"
    expect_error "METRICS.csv OUT.png"
    ;;
  *) echo "usage: $0 png|malformed SOURCE_DIR WORK_DIR" >&2; exit 2 ;;
esac

if [ "$failures" -gt 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all checks passed"
