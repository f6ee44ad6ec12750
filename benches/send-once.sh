#!/usr/bin/env bash
# One replication on loopback, timed per side: the quick A/B tool behind some BENCHMARKS.md rows.
#
#   benches/send-once.sh IMG [blockrep send args...]     e.g. --mode used --compress never
#
# WORK (default /var/tmp/blockrep-once) holds certificates, a fresh sparse target the size of
# IMG, and the logs; BIN=DIR runs other blockrep binaries (default target/release, which must be
# built). Drops the page cache first (needs root). SPERF/RPERF prefix the sender/receiver command
# (e.g. SPERF="perf record -g -o s.perf --"). Prints the sender's wall time, CPU seconds and peak
# RSS of each side, and the bytes written to the connection.
set -euo pipefail
img=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$here/target/release}
w=${WORK:-/var/tmp/blockrep-once}
mkdir -p "$w"
[[ -d $w/certs ]] || "$bin/blockrep" certs --out "$w/certs" >/dev/null
c=$w/certs
rm -f "$w/target.img"
truncate -s "$(stat -c %s "$img")" "$w/target.img"
sync
echo 3 >/proc/sys/vm/drop_caches
# shellcheck disable=SC2086 # RPERF/SPERF are command prefixes
${RPERF:-} /usr/bin/time -f "%e %U %S %M" -o "$w/receiver.time" "$bin/blockrep-receiver" --listen 127.0.0.1:0 \
  --once --cert "$c/server.pem" --key "$c/server.key" --client-ca "$c/ca.pem" --disk d0="$w/target.img" 2>"$w/receiver.log" &
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/^blockrep-receiver listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$w/receiver.log")
  [[ -n $port ]] && break
  sleep 0.05
done
[[ -n $port ]] || { echo "the receiver did not start" >&2; cat "$w/receiver.log" >&2; exit 1; }
# shellcheck disable=SC2086
${SPERF:-} /usr/bin/time -f "%e %U %S %M" -o "$w/send.time" "$bin/blockrep" send --to 127.0.0.1:"$port" \
  --ca "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key" --disk d0="$img" --progress json "$@" \
  >"$w/send.json" 2>"$w/send.log"
wait
read -r se su ss sm <"$w/send.time"
read -r _ ru rs rm <"$w/receiver.time"
wire=$(tail -n 1 "$w/send.json" | sed -n 's/.*"wire_bytes":\([0-9]*\).*/\1/p')
echo "wall $se s  sender CPU $(echo "$su + $ss" | bc) s, RSS $((sm / 1024)) MiB  receiver CPU $(echo "$ru + $rs" | bc) s, RSS $((rm / 1024)) MiB  wire $wire"
