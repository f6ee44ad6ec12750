#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time, failing on the first crash, leak,
# timeout or out-of-memory. CI runs it with a short budget after the tests (scripts/test).
#
#   fuzz/smoke.sh [-t SECONDS] [-k] [TARGET...]
#
#   -t SECONDS  time per target (default 30)
#   -k          keep what the fuzzer finds: new inputs go to fuzz/corpus/TARGET (the long runs
#               behind the issue's figures); without -k they go to a scratch directory, so a
#               smoke run changes nothing in the tree
#   TARGET      the targets to run (default: all of fuzz/Cargo.toml's, in its order)
#
# Each target starts from its committed corpus (fuzz/corpus/TARGET) and its seeds (fuzz/seeds/,
# made with the real tools; see fuzz/README.md). A crash leaves its input in
# fuzz/artifacts/TARGET/ and the script prints the command that reproduces it. The last line of
# each run's statistics (executions, coverage, features) goes to stdout, one line per target;
# full logs to $FUZZ_LOGS (default a scratch directory, removed unless a run fails).
#
# Needs a nightly toolchain and cargo-fuzz; installs whichever is missing.
set -euo pipefail
cd "$(dirname "$0")"

seconds=30
keep=0
while getopts "t:kh" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    k) keep=1 ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "smoke.sh: -t wants whole seconds, not '$seconds'" >&2; exit 2; }

# The seed directories of each target (relative to fuzz/).
declare -A seeds=(
  [frames]=seeds/frames
  [session]=seeds/session
  [chunk]=seeds/chunk
  [bitmap]=seeds/blockmap/bitmap
  [rules]=seeds/rules
  [partitions]=seeds/blockmap/disk
  [blockmap]=seeds/blockmap/disk
  [fs_ext]=seeds/blockmap/fs
  [fs_xfs]=seeds/blockmap/fs
  [fs_fat]=seeds/blockmap/fs
  [fs_ntfs]=seeds/blockmap/fs
)
all=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^blockrep-fuzz$')
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets <<<"$all"
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$all" || { echo "smoke.sh: no fuzz target '$t' (targets: $(echo $all))" >&2; exit 2; }
  [[ -n ${seeds[$t]:-} ]] || { echo "smoke.sh: no seed directory listed for '$t' in $0" >&2; exit 2; }
done

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "smoke.sh: installing the nightly toolchain (cargo-fuzz needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "smoke.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

logs=${FUZZ_LOGS:-$(mktemp -d)}
mkdir -p "$logs"
scratch=$(mktemp -d)
cleanup() {
  rm -rf "$scratch"
  [[ -n ${FUZZ_LOGS:-} || ${failed:-0} -ne 0 ]] || rm -rf "$logs"
}
trap cleanup EXIT

failed=0
echo "smoke.sh: building ${#targets[@]} targets" >&2
cargo +nightly fuzz build >"$logs/build.log" 2>&1 || { cat "$logs/build.log" >&2; failed=1; exit 1; }

failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [[ $keep == 1 ]]; then
    dirs=("corpus/$t")
  else
    mkdir -p "$scratch/$t"
    dirs=("$scratch/$t" "corpus/$t")
  fi
  [[ ! -d ${seeds[$t]} ]] || dirs+=("${seeds[$t]}")
  echo "smoke.sh: $t for ${seconds}s" >&2
  # -timeout: one input taking over 10 s is a finding (every parser here is bounded);
  # -rss_limit_mb: so is a process over 2 GiB; -max_len: the largest seed is 64 KiB + 1.
  if cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=$((64 * 1024 + 1)) -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    stats=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    echo "$t: ok, ${seconds}s, ${execs:-?} executions; last: ${stats:-none}"
  else
    failed=1
    echo "$t: FAILED (log: $logs/$t.log)"
    grep -E 'ERROR: libFuzzer|panicked at|SUMMARY|Test unit written to' "$logs/$t.log" | head -n 8 >&2 || true
    art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t.log" | tail -n 1)
    [[ -z $art ]] || echo "  reproduce: (cd fuzz && cargo +nightly fuzz run $t $art)" >&2
  fi
done
exit "$failed"
