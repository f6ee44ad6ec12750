#!/usr/bin/env bash
# End-to-end throughput of `blockrep send` -> `blockrep-receiver` over mutual TLS on loopback.
#
#   benches/loopback.sh [WORKDIR] [RUNS]
#
# Builds release binaries, makes two 1 GiB images (mixed: random, real text, zeros, a hole;
# and random), replicates each RUNS times (default 3) to a fresh sparse target, checks every
# copy with cmp, and prints the median time and rate as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /var/tmp/blockrep-bench.XXXXXX)}
runs=${2:-3}
mkdir -p "$work"
cargo build --release --quiet --bin blockrep --bin blockrep-receiver
bin=target/release
MiB=$((1 << 20))

make_mixed() { # 256 MiB each: random, real text (source files on this machine), zeros, hole
  local img=$1.partial
  # The crate sources cargo downloaded for this build are always there, and are real text.
  head -c $((256 * MiB)) /dev/urandom >"$img"
  { find "${CARGO_HOME:-$HOME/.cargo}/registry/src" /usr/share /usr/include -type f \( -name '*.rs' -o -name '*.h' -o -name '*.py' -o -name '*.md' -o -name '*.txt' \) -print0 2>/dev/null | sort -z |
      xargs -0 cat 2>/dev/null || true; } | head -c $((256 * MiB)) >"$work/text"
  [[ $(stat -c %s "$work/text") -eq $((256 * MiB)) ]] || { echo "not enough text on this system" >&2; exit 1; }
  cat "$work/text" >>"$img"
  head -c $((256 * MiB)) /dev/zero >>"$img"
  truncate -s $((1024 * MiB)) "$img"
  rm -f "$work/text"
  mv "$img" "$1"
}

[[ -f $work/mixed.img ]] || make_mixed "$work/mixed.img"
[[ -f $work/random.img ]] || { head -c $((1024 * MiB)) /dev/urandom >"$work/random.partial" && mv "$work/random.partial" "$work/random.img"; }
[[ -d $work/certs ]] || $bin/blockrep certs --out "$work/certs" >/dev/null
c=$work/certs

# Runs one replication; prints "seconds wire_bytes".
replicate() {
  local img=$1 target=$work/target.img
  rm -f "$target"
  truncate -s "$(stat -c %s "$img")" "$target"
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  $bin/blockrep-receiver --listen 127.0.0.1:0 --once --cert "$c/server.pem" --key "$c/server.key" \
    --client-ca "$c/ca.pem" --disk d0="$target" 2>"$work/receiver.log" &
  local rpid=$! port="" i
  for i in $(seq 1 100); do
    port=$(sed -n 's/^blockrep-receiver listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/receiver.log")
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || { echo "receiver did not start" >&2; cat "$work/receiver.log" >&2; exit 1; }
  local t0 t1
  t0=$(date +%s.%N)
  $bin/blockrep send --to 127.0.0.1:"$port" --ca "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key" \
    --disk d0="$img" --mode full --progress json >"$work/send.json"
  t1=$(date +%s.%N)
  wait "$rpid"
  cmp "$img" "$target" || { echo "copy of $img differs" >&2; exit 1; }
  local wire
  wire=$(tail -n 1 "$work/send.json" | sed -n 's/.*"wire_bytes":\([0-9]*\).*/\1/p')
  echo "$(echo "$t1 - $t0" | bc -l) $wire"
}

echo "| image | size | median of $runs (s) | MB/s | wire bytes | runs (s) |"
echo "|---|---|---|---|---|---|"
for name in mixed random; do
  img=$work/$name.img
  size=$(stat -c %s "$img")
  times=() wire=0
  for r in $(seq 1 "$runs"); do
    read -r t wire < <(replicate "$img")
    times+=("$t")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")
  printf '| %s | %d MiB | %.2f | %.0f | %d | %s |\n' "$name" $((size / MiB)) "$median" \
    "$(echo "$size / $median / 1000000" | bc -l)" "$wire" "$(printf '%.2f ' "${times[@]}")"
done
rm -f "$work/target.img"
