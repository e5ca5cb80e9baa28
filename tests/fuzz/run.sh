#!/usr/bin/env bash
# tests/fuzz/run.sh: build the libFuzzer targets with clang (ASan+UBSan) in their own
# folder and run each for a while from the seed corpus (docs/fuzzing.md).
#
#   tests/fuzz/run.sh                 every target 30 s
#   tests/fuzz/run.sh 600             every target 10 minutes
#   tests/fuzz/run.sh 120 wire time   only these targets
#   tests/fuzz/run.sh --brief         15 s each from the seeds only (ctest fuzz.brief)
#
# Options: --build-dir DIR (default build-fuzz/ at the top of the tree), --keep-going
# (libFuzzer's -fork=1 -ignore_crashes=1: go on after a crash and collect them all).
#
# New inputs the fuzzers find go to DIR/fuzz-corpus/<target>/ (kept between runs, never
# into the seed corpus); crashes to DIR/fuzz-artifacts/<target>/; full logs to
# DIR/fuzz-logs/<target>.log. Exit status 1 when any target crashed or leaked.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$top/tests/fuzz
all_targets=(wire qrow profile time jsonc config)
secs=30
brief=0
keep_going=0
build=$top/build-fuzz
targets=()

usage() {
  sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case $1 in
  --brief) brief=1; secs=15 ;;
  --keep-going) keep_going=1 ;;
  --build-dir) build=${2:?--build-dir needs a folder}; shift ;;
  -h | --help) usage 0 ;;
  [0-9]*) secs=$1 ;;
  -*) echo "run.sh: unknown option $1" >&2; usage 2 >&2 ;;
  *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

# Longest input each target is given: a batch of a few hundred readings, a profile or
# config of a few dozen entries, a query parameter.
max_len() {
  case $1 in
  wire) echo 16384 ;;
  qrow) echo 4096 ;;
  profile | config) echo 8192 ;;
  jsonc) echo 4096 ;;
  time) echo 64 ;;
  esac
}

say() { printf 'fuzz: %s\n' "$*" >&2; }

cc=$(command -v clang || command -v clang-14) ||
  { say "clang is not installed (Debian: clang libclang-rt-14-dev)"; exit 1; }
say "building the fuzz targets in $build"
mkdir -p "$build/fuzz-logs"
CC=$cc cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLK_FUZZ=ON \
  -DSANITIZE=ON >"$build/fuzz-logs/configure.log" 2>&1 ||
  { cat "$build/fuzz-logs/configure.log" >&2; exit 1; }
grep -q '^MLK_HAVE_LIBFUZZER:INTERNAL=1' "$build/CMakeCache.txt" ||
  { say "clang cannot link -fsanitize=fuzzer (Debian: libclang-rt-14-dev)"; exit 1; }
cmake --build "$build" --target fuzzers -j "$(nproc 2>/dev/null || echo 2)" \
  >"$build/fuzz-logs/build.log" 2>&1 || { cat "$build/fuzz-logs/build.log" >&2; exit 1; }

export MLK_PROFILES=${MLK_PROFILES:-$top/agent/profiles}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
row='%-8s %7s %11s %8s %6s %7s %7s  %s'
# shellcheck disable=SC2059 # the format is ours
summary=$(printf "$row" target seconds execs exec/s cov ft corpus result)
for t in "${targets[@]}"; do
  exe=$build/tests/fuzz/fuzz_$t
  [ -x "$exe" ] || { say "no such target: $t (have: ${all_targets[*]})"; exit 2; }
  work=$build/fuzz-corpus/$t
  art=$build/fuzz-artifacts/$t
  log=$build/fuzz-logs/$t.log
  # brief: from the seeds alone each time, so the test does not depend on earlier runs
  [ $brief -eq 0 ] || rm -rf "$work" "$art"
  mkdir -p "$work" "$art"
  args=(-max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$art/")
  [ ! -f "$here/dict/$t.dict" ] || args+=(-dict="$here/dict/$t.dict")
  [ $keep_going -eq 0 ] || args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  say "$t: ${secs} s, -max_len=$(max_len "$t")"
  touch "$log.start" # reproducers older than this are from earlier runs
  rc=0
  (cd "$art" && "$exe" "${args[@]}" "$work" "$here/corpus/$t") >"$log" 2>&1 || rc=$?

  # libFuzzer's last status line: "#123 DONE cov: 45 ft: 67 corp: 8/90b ..." (fork mode:
  # "#123: cov: 45 ft: 67 corp: 8 exec/s 9 ...").
  last=$(grep -E '^#[0-9]+:?[[:space:]].*cov: ' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(printf '%s' "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')
  # fork mode restarts the fuzzer after each crash, and its exec/s is per job: use the total
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  if [ $keep_going -ne 0 ] || [ -z "$rate" ]; then
    rate=
    [ -z "$execs" ] || rate=$((execs / secs))
  fi
  cov=$(printf '%s' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  ft=$(printf '%s' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(printf '%s' "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
  found=$(find "$art" -type f -newer "$log.start" \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ $rc -ne 0 ] || [ -n "$found" ]; then
    failed=1
    nfound=$(printf '%s' "$found" | grep -c . || true)
    result="FAILED (exit $rc, $nfound new reproducers in $art/), log $log"
    for f in $(printf '%s\n' "$found" | head -n 3); do result+=$'\n'"    $f"; done
  else
    result=ok
  fi
  # shellcheck disable=SC2059
  summary+=$'\n'$(printf "$row" "$t" "$secs" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")
done

printf '%s\n' "$summary"
if [ $failed -ne 0 ]; then
  say "findings: reproduce one with $build/tests/fuzz/fuzz_<target> FILE, minimise with" \
    "-minimize_crash=1 -runs=100000 FILE"
fi
exit $failed
