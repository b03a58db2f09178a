#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz for SECONDS each, from a seed corpus made by
# make_corpus.py with a release vitq, under ASan + UBSan. Fails on the first crash, sanitizer
# report, leak, allocation above 2 GiB or RSS above 4 GiB; the reproducer is left in
# FUZZ_DIR/artifacts. Prints runs and coverage per harness.
#   usage: tests/fuzz/run_fuzz.sh FUZZ_BUILD_DIR VITQ_BINARY SECONDS [harness ...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$1"; vitq="$2"; seconds="$3"; shift 3
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors config model plan image idx class_map quantized_model)
work="$(mktemp -d "${TMPDIR:-/tmp}/vitq-fuzz-run-XXXXXX")"
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$here/make_corpus.py" --vitq "$vitq" --source-dir "$here/../.." --out "$work/seeds"
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
for h in "${harnesses[@]}"; do
  bin="$build/tests/fuzz/fuzz_$h"
  [ -x "$bin" ] || { echo "run_fuzz: $bin not built (cmake --build $build --target fuzz_all)" >&2; exit 2; }
  mkdir -p "$work/corpus/$h"
  if ! "$bin" -max_total_time="$seconds" -malloc_limit_mb=2048 -rss_limit_mb=4096 -timeout=25 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$h-" "$work/corpus/$h" "$work/seeds/$h" >"$work/$h.log" 2>&1; then
    echo "run_fuzz: fuzz_$h FAILED; log tail and reproducer in $artifacts:" >&2
    tail -40 "$work/$h.log" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$h.log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$work/$h.log" | tail -1 | grep -o '[0-9]*' || echo "?")
  echo "run_fuzz: fuzz_$h ok: $runs runs in ${seconds} s, coverage $cov edges"
done
