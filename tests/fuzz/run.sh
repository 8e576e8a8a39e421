#!/usr/bin/env bash
# Builds the libFuzzer targets, replays every kept regression input, then fuzzes each target for a
# bounded time. Run by `make fuzz` (which `make test` runs); by hand:
#   tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Environment: FUZZ_SECONDS (default 30), FUZZ_BUILD (default build/fuzz), FUZZ_PARALLEL (targets
# fuzzed at once, default: the number of CPUs, at most 2), CXX_FUZZ (default clang++).
#
# A crash, leak, timeout or out-of-memory input found while fuzzing is written by libFuzzer straight
# into tests/fuzz/regressions/<target>/ (crash-<sha1>, leak-..., timeout-..., oom-...) and the run
# fails. Commit that file with the fix: every later run replays it first.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
FUZZ="$ROOT/tests/fuzz"
OUT="${FUZZ_BUILD:-$ROOT/build/fuzz}"
SECS="${1:-${FUZZ_SECONDS:-30}}"
shift || true
CXX_FUZZ="${CXX_FUZZ:-clang++}"
NPROC="$(nproc 2>/dev/null || echo 1)"
PARALLEL="${FUZZ_PARALLEL:-$(( NPROC < 2 ? 1 : 2 ))}"

TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(procfs stats_doc options smaps_vmas prometheus warmup_requests)

mkdir -p "$OUT/core"
FLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
       -std=c++17 -I"$ROOT/include")
JANSSON=($(pkg-config --cflags --libs jansson))

# The pure units, as plugin/sources.txt (the one source list) names them: compiled once with the
# fuzzing flags into one archive every target links (each takes only what it uses).
CORE=()
while read -r line; do
  case "$line" in core/*) CORE+=("$ROOT/plugin/$line") ;; esac
done < "$ROOT/plugin/sources.txt"
build_core() {
  local objs=() src obj changed=0
  for src in "${CORE[@]}"; do
    obj="$OUT/core/$(basename "$src" .cc).o"
    if [ ! -f "$obj" ] || [ -n "$(find "$src" "$ROOT"/include/cowguard/*.h "$0" -newer "$obj" -print -quit)" ]; then
      "$CXX_FUZZ" "${FLAGS[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" $(pkg-config --cflags jansson) \
        -c "$src" -o "$obj"
      changed=1
    fi
    objs+=("$obj")
  done
  if [ "$changed" = 1 ] || [ ! -f "$OUT/libcore.a" ]; then
    rm -f "$OUT/libcore.a" && ar rcs "$OUT/libcore.a" "${objs[@]}"
  fi
}

build() {
  local t="$1" bin="$OUT/fuzz_$1" src="$FUZZ/fuzz_$1.cc"
  if [ -x "$bin" ] && [ "$bin" -nt "$src" ] && [ "$bin" -nt "$OUT/libcore.a" ]; then return 0; fi
  "$CXX_FUZZ" "${FLAGS[@]}" "$src" "$OUT/libcore.a" "${JANSSON[@]}" -lpthread -o "$bin.tmp" && mv "$bin.tmp" "$bin"
}

echo "[fuzz] building ${TARGETS[*]} with $CXX_FUZZ (libFuzzer + ASan + UBSan)"
build_core > "$OUT/build_core.log" 2>&1 || { cat "$OUT/build_core.log"; exit 1; }
pids=()
for t in "${TARGETS[@]}"; do
  [ -f "$FUZZ/fuzz_$t.cc" ] || { echo "[fuzz] unknown target $t" >&2; exit 2; }
  build "$t" > "$OUT/build_$t.log" 2>&1 &
  pids+=($!)
  if [ ${#pids[@]} -ge "$PARALLEL" ]; then wait "${pids[0]}" || { cat "$OUT"/build_*.log; exit 1; }; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || { cat "$OUT"/build_*.log; exit 1; }; done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

# 1. Regressions: every input ever found crashing, replayed (one run each).
for t in "${TARGETS[@]}"; do
  dir="$FUZZ/regressions/$t"
  mkdir -p "$dir"
  mapfile -t inputs < <(find "$dir" -type f ! -name '.gitkeep' ! -name '*.md' | sort)
  if [ ${#inputs[@]} -eq 0 ]; then
    echo "[fuzz] $t: no regression inputs kept"
    continue
  fi
  if ! "$OUT/fuzz_$t" -runs=1 "${inputs[@]}" > "$OUT/replay_$t.log" 2>&1; then
    cat "$OUT/replay_$t.log"
    echo "[fuzz] $t: a kept regression input fails again (see above)" >&2
    exit 1
  fi
  echo "[fuzz] $t: replayed ${#inputs[@]} regression input(s): ok"
done

# 2. Bounded fuzzing, PARALLEL targets at a time. New inputs go to a scratch corpus under $OUT;
# the committed seeds are only read.
fuzz_one() {
  local t="$1" work="$OUT/corpus_$t" dict=()
  mkdir -p "$work"
  [ -f "$FUZZ/$t.dict" ] && dict=(-dict="$FUZZ/$t.dict")
  "$OUT/fuzz_$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$FUZZ/regressions/$t/" "${dict[@]}" "$work" "$FUZZ/corpus/$t" > "$OUT/fuzz_$t.log" 2>&1
}

echo "[fuzz] fuzzing ${TARGETS[*]} for ${SECS}s each, $PARALLEL at a time"
declare -A STATUS=()
running=()
names=()
for t in "${TARGETS[@]}"; do
  fuzz_one "$t" &
  running+=($!)
  names+=("$t")
  if [ ${#running[@]} -ge "$PARALLEL" ]; then
    if wait "${running[0]}"; then STATUS[${names[0]}]=0; else STATUS[${names[0]}]=$?; fi
    running=("${running[@]:1}"); names=("${names[@]:1}")
  fi
done
for i in "${!running[@]}"; do
  if wait "${running[$i]}"; then STATUS[${names[$i]}]=0; else STATUS[${names[$i]}]=$?; fi
done

failed=0
for t in "${TARGETS[@]}"; do
  log="$OUT/fuzz_$t.log"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
  corpus="$(find "$OUT/corpus_$t" -type f | wc -l)"
  if [ "${STATUS[$t]}" = 0 ]; then
    echo "[fuzz] $t: ok: ${execs:-?} executions in ${SECS}s, coverage ${cov:-?} edges, ${corpus} new corpus inputs"
  else
    failed=1
    tail -60 "$log"
    echo "[fuzz] $t: FAILED (status ${STATUS[$t]}): the input is kept in tests/fuzz/regressions/$t/ (see above);" \
         "commit it with the fix" >&2
  fi
done
exit $failed
