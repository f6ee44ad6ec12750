#!/usr/bin/env bash
# Used-mode replication and sync rounds (bitmap, delta) of a realistic server disk over mutual
# TLS on loopback, beside a bdsync-like peer; optionally `blockrep blockmap` on a 1 TiB ext4.
#
#   benches/rounds.sh [--tib] [--steps used,full,sync,verify,tib] [WORKDIR] [RUNS]
#
# BIN=DIR measures prebuilt blockrep and blockrep-receiver from DIR instead of building this tree
# with `cargo build --release`.
#
# WORKDIR (default /var/tmp/blockrep-rounds) holds the image (IMAGE, default
# WORKDIR/disk-4G.img, built by benches/disk-image.sh when missing: needs root), certificates,
# targets and logs. Each figure is the median of RUNS (default 3) runs. Prints Markdown tables on
# stdout (progress on stderr) and writes nothing else anywhere.
#
#  used/full  `blockrep send --mode used|full` to a fresh all-zero sparse target; used mode is
#             checked on the used extents of `blockrep blockmap --json` (target zero elsewhere),
#             full mode with cmp.
#  sync       for each change (1% and 5% of the disk's 4 KiB blocks, chosen at random over the
#             whole disk with a fixed seed, overwritten with random bytes, then with log text):
#             a bitmap round (bitmap from `blockrep bitmap diff` of the images before and after,
#             not timed), a delta round, and bdsync-like (benches/peers/bdsync-like.c, our own
#             reimplementation of bdsync's algorithm: md5 per 4 KiB block on both sides, the
#             target side's digests sent to the source side, a diff of the differing blocks, then
#             a patch). Every round starts from a target that is an exact copy of the image before
#             the change and must end byte-identical to the changed image (cmp).
#             KINDS="random text" and PCTS="1 5" (the defaults) choose the changes measured.
#  verify     `blockrep verify --mode used|full` of a copy of the image, beside `dd iflag=direct`
#             reading the whole image (issue 6).
#  tib        `/usr/bin/time -v blockrep blockmap` on a sparse 1 TiB image holding a fresh ext4
#             (/var/tmp/big.img, deleted afterwards): wall time and max RSS.
#
# Before every timed step: sync, drop the page cache, then wait for the 1-minute load average to
# fall below LOAD_MAX (default 1.0), at most LOAD_WAIT seconds (default 120) each time and
# LOAD_WAIT_TOTAL (default 300) in the whole run; the load seen is printed with each figure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

steps=used,full,sync
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --tib) steps+=,tib ;;
    --steps) steps=$2; shift ;;
    *) sed -n '5p' "$0" >&2; exit 2 ;;
  esac
  shift
done
work=${1:-/var/tmp/blockrep-rounds}
runs=${2:-3}
img=${IMAGE:-$work/disk-4G.img}
load_max=${LOAD_MAX:-1.0}
load_wait=${LOAD_WAIT:-120}
load_wait_total=${LOAD_WAIT_TOTAL:-300}
mkdir -p "$work"
has_step() { [[ ,$steps, == *,$1,* ]]; }
log() { echo "[$(date +%T)] $*" >&2; }

# The binaries measured are copied into WORKDIR/bin first, so a rebuild of target/ during the run
# cannot change them half-way.
if [[ -n ${BIN:-} ]]; then
  built="prebuilt binaries from $BIN"
else
  log "building (cargo build --release)"
  cargo build --release --quiet --bin blockrep --bin blockrep-receiver
  BIN=$repo/target/release
  built="commit $(git rev-parse --short HEAD)$([[ -z $(git status --porcelain -- src crates Cargo.toml Cargo.lock) ]] || echo ' plus uncommitted changes')"
fi
mkdir -p "$work/bin"
cp "$BIN/blockrep" "$BIN/blockrep-receiver" "$work/bin/"
bin=$work/bin
gcc -O2 -Wall -o "$work/bdsync-like" benches/peers/bdsync-like.c -lcrypto
tool="python3 $repo/benches/disktool.py"

[[ -f $img ]] || BLOCKREP=$bin/blockrep benches/disk-image.sh "$img" >&2
[[ -d $work/certs ]] || "$bin/blockrep" certs --out "$work/certs" >/dev/null
c=$work/certs
size=$(stat -c %s "$img")

receiver_pid=""
cleanup() {
  # The receiver runs under /usr/bin/time: stop the receiver itself, then time.
  if [[ -n $receiver_pid ]]; then kill $(pgrep -P "$receiver_pid") "$receiver_pid" 2>/dev/null || true; fi
  rm -f "$work"/target.img "$work"/changed.img "$work"/bdsync.diff /var/tmp/big.img
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
secs_since() { echo "$(date +%s.%N) - $1" | bc -l | xargs printf '%.2f'; }

# Empties the page cache, then waits for the machine to be quiet (at most LOAD_WAIT seconds
# here, LOAD_WAIT_TOTAL in the whole run); sets `load`.
waited_total=0
settle() {
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  local waited=0
  load=$(cut -d' ' -f1 /proc/loadavg)
  while (($(echo "$load >= $load_max" | bc))) && ((waited < load_wait && waited_total < load_wait_total)); do
    sleep 5
    waited=$((waited + 5)) waited_total=$((waited_total + 5))
    load=$(cut -d' ' -f1 /proc/loadavg)
  done
  ((waited == 0)) || log "  waited ${waited}s for the load average (now $load; ${waited_total}s in all)"
}

# Starts a receiver for TARGET on 127.0.0.1:0; sets receiver_pid and port.
start_receiver() {
  local target=$1 _
  /usr/bin/time -o "$work/receiver.time" -f '%U %S %M' \
    "$bin/blockrep-receiver" --listen 127.0.0.1:0 --once --cert "$c/server.pem" --key "$c/server.key" \
    --client-ca "$c/ca.pem" --disk d0="$target" 2>"$work/receiver.log" &
  receiver_pid=$!
  port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's/^blockrep-receiver listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/receiver.log")
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || { echo "receiver did not start" >&2; cat "$work/receiver.log" >&2; exit 1; }
}

# One timed `blockrep send` of the image to TARGET: send_round TARGET MODE [ARGS...].
# Sets secs, sent (raw bytes sent), wire (bytes written to the connection), recv (bytes of
# frames received back), cpu ("sender/receiver" user+system seconds), rss ("sender/receiver"
# peak MiB) and load.
send_round() {
  local target=$1 mode=$2 t0
  shift 2
  settle
  start_receiver "$target"
  t0=$(date +%s.%N)
  if ! /usr/bin/time -o "$work/send.time" -f '%U %S %M' "$bin/blockrep" send --to 127.0.0.1:"$port" --ca "$c/ca.pem" --cert "$c/client.pem" \
    --key "$c/client.key" --disk d0="$img_src" --mode "$mode" --progress json "$@" >"$work/send.json" 2>"$work/send.log"; then
    cat "$work/send.log" "$work/receiver.log" >&2
    exit 1
  fi
  secs=$(secs_since "$t0")
  wait "$receiver_pid"
  receiver_pid=""
  read -r sent wire recv < <(tail -n 1 "$work/send.json" | python3 -c '
import json, sys
s = json.load(sys.stdin)["summary"]
print(s["sent_bytes"], s["wire_bytes"], s["received_bytes"])')
  read -r cpu rss < <(cpu_rss "$work/send.time" "$work/receiver.time")
}

# "a/b" CPU seconds and "a/b" peak MiB from /usr/bin/time -f '%U %S %M' files.
cpu_rss() {
  awk '{ c = c (NR > 1 ? "/" : "") sprintf("%.1f", $1 + $2); m = m (NR > 1 ? "/" : "") sprintf("%.0f", $3 / 1024) }
       END { print c, m }' "$@"
}

fresh_target() { rm -f "$work/target.img"; truncate -s "$size" "$work/target.img"; }
mb() { echo "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'; }
runs_list() { printf '%s ' "$@" | sed 's/ $//'; }

used_bytes=$("$bin/blockrep" blockmap "$img" --json >"$work/blockmap.json" && python3 -c '
import json; print(json.load(open("'"$work"'/blockmap.json"))["used_bytes"])')
img_src=$img

echo "Image: \`$img\` (benches/disk-image.sh): $(mb "$size") ($size bytes), used per \`blockrep blockmap\`: $(mb "$used_bytes") ($used_bytes bytes, $(echo "100 * $used_bytes / $size" | bc -l | xargs printf '%.1f')%). Binaries: $built. Medians of $runs runs; $(nproc) cores; load = 1-minute load average just before each timed run."
echo

if has_step used || has_step full; then
  echo "| mode | disk size | used (blockmap) | raw bytes sent | bytes on the wire (sent + received) | median (s) | runs (s) | CPU s sender/receiver | peak RSS MiB sender/receiver | load |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for mode in used full; do
    has_step "$mode" || continue
    times=() loads=() cpus=() rsss=()
    for r in $(seq 1 "$runs"); do
      log "$mode round, run $r"
      fresh_target
      send_round "$work/target.img" "$mode"
      times+=("$secs") loads+=("$load") cpus+=("$cpu") rsss+=("$rss")
      if [[ $mode == used ]]; then
        $tool cmp-extents "$img" "$work/target.img" "$work/blockmap.json" >&2
      else
        cmp "$img" "$work/target.img"
      fi
    done
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$(mb "$size")" "$(mb "$used_bytes")" \
      "$(mb "$sent")" "$(mb $((wire + recv)))" "$(median "${times[@]}")" "$(runs_list "${times[@]}")" \
      "$(runs_list "${cpus[@]}")" "$(runs_list "${rsss[@]}")" "$(runs_list "${loads[@]}")"
  done
  rm -f "$work/target.img"
  echo
fi

if has_step sync; then
  echo "Sync rounds: the target is an exact copy of the image before the change; every round ends with the target byte-identical to the changed image (cmp). Wire = bytes written to the connection by the sender + bytes of frames it received (digests, acknowledgements); for bdsync-like, the target side's md5 digests + the diff."
  echo
  echo "| change | changed bytes | round | bytes on the wire | sent / received | median (s) | runs (s) | CPU s (sender/receiver) | load |"
  echo "|---|---|---|---|---|---|---|---|---|"
  log "target: a copy of the image"
  cp "$img" "$work/target.img"
  for kind in ${KINDS:-random text}; do
    for pct in ${PCTS:-1 5}; do
      label="$pct% of 4 KiB blocks, $([[ $kind == random ]] && echo "random bytes" || echo "log text")"
      log "change: $label"
      cp "$img" "$work/changed.img"
      changed=$($tool change "$work/changed.img" "$pct" $((1000 + pct)) "$kind" | awk '{ print $3 }' | tr -d '(')
      bitmap=$work/change-$kind-$pct.bitmap
      "$bin/blockrep" bitmap diff "$img" "$work/changed.img" --block-size 4KiB --out "$bitmap" >&2
      img_src=$work/changed.img
      declare -A t=() l=() w=() s=() u=()
      for r in $(seq 1 "$runs"); do
        for round in bitmap delta; do
          log "  $round round, run $r"
          if [[ $round == bitmap ]]; then
            send_round "$work/target.img" bitmap --bitmap d0="$bitmap"
          else
            send_round "$work/target.img" delta
          fi
          t[$round]+="$secs " l[$round]+="$load " u[$round]+="$cpu "
          w[$round]=$((wire + recv)) s[$round]="$(mb "$wire") / $(mb "$recv")"
          cmp "$work/changed.img" "$work/target.img"
          $tool restore "$img" "$work/target.img" "$bitmap"
        done
        log "  bdsync-like, run $r"
        settle
        t0=$(date +%s.%N)
        out=$(/usr/bin/time -o "$work/bd.time" -f '%U %S %M' \
          "$work/bdsync-like" diff "$work/changed.img" "$work/target.img" "$work/bdsync.diff")
        dsecs=$(secs_since "$t0")
        t0=$(date +%s.%N)
        /usr/bin/time -o "$work/bdp.time" -f '%U %S %M' "$work/bdsync-like" patch "$work/target.img" "$work/bdsync.diff"
        psecs=$(secs_since "$t0")
        cmp "$work/changed.img" "$work/target.img"
        $tool restore "$img" "$work/target.img" "$bitmap"
        digests=$(sed -n 's/.*digest_bytes=\([0-9]*\).*/\1/p' <<<"$out")
        diffb=$(sed -n 's/.*diff_bytes=\([0-9]*\).*/\1/p' <<<"$out")
        read -r cpu _ < <(cpu_rss "$work/bd.time")
        u[bd]+="$cpu " u[bdp]+="$(awk -v d="$cpu" '{ printf "%.1f", d + $1 + $2 }' "$work/bdp.time") "
        t[bd]+="$dsecs " t[bdp]+="$(echo "$dsecs + $psecs" | bc -l | xargs printf '%.2f') " l[bd]+="$load "
        w[bd]=$((digests + diffb)) s[bd]="$(mb "$diffb") diff / $(mb "$digests") digests"
      done
      for round in bitmap delta bd bdp; do
        case $round in
          bitmap) name="blockrep bitmap round" ;;
          delta) name="blockrep delta round" ;;
          bd) name="bdsync-like diff (our reimplementation of its algorithm, md5 per 4 KiB)" ;;
          bdp) name="bdsync-like diff + patch" ;;
        esac
        key=$round; [[ $round == bdp ]] && key=bd
        # shellcheck disable=SC2086 # the lists are space-separated numbers
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(mb "$changed")" "$name" \
          "$(mb "${w[$key]}")" "${s[$key]}" "$(median ${t[$round]})" "${t[$round]% }" "${u[$round]% }" "${l[$key]% }"
      done
      unset t l w s u
    done
  done
  img_src=$img
  echo "| quoted in issue 3 / issue 7 (earlier runs, not this one) | 5% of 4 KiB blocks, random | real bdsync | 215 MB diff | | 16 (bdsync), 15.7 (bdsync + patch) | | | |"
  rm -f "$work/target.img" "$work/changed.img" "$work/bdsync.diff"
  echo
fi

if has_step verify; then
  log "verify: the target is a copy of the image"
  cp "$img" "$work/target.img"
  declare -A t=() l=() chk=()
  for r in $(seq 1 "$runs"); do
    log "  dd, run $r"
    settle
    t0=$(date +%s.%N)
    dd if="$img" of=/dev/null bs=4M iflag=direct status=none
    t[dd]+="$(secs_since "$t0") " l[dd]+="$load "
    for mode in used full; do
      log "  verify --mode $mode, run $r"
      settle
      start_receiver "$work/target.img"
      t0=$(date +%s.%N)
      "$bin/blockrep" verify --to 127.0.0.1:"$port" --ca "$c/ca.pem" --cert "$c/client.pem" \
        --key "$c/client.key" --disk d0="$img" --mode "$mode" --json >"$work/verify.json" 2>"$work/verify.log" ||
        { cat "$work/verify.log" "$work/receiver.log" >&2; exit 1; }
      t[$mode]+="$(secs_since "$t0") " l[$mode]+="$load "
      wait "$receiver_pid"
      receiver_pid=""
      chk[$mode]=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["consistent"]; print(v["checked_bytes"])' "$work/verify.json")
    done
  done
  echo "Verification of a replica (a copy of the image) against the image: both sides read and hash, only digests cross the wire; beside \`dd iflag=direct bs=4M\` reading the whole image once. Page cache dropped before each run."
  echo
  echo "| what | bytes read per side | median (s) | runs (s) | load |"
  echo "|---|---|---|---|---|"
  printf '| dd of the whole image | %s | %s | %s | %s |\n' "$(mb "$size")" "$(median ${t[dd]})" "${t[dd]% }" "${l[dd]% }"
  for mode in used full; do
    printf '| blockrep verify --mode %s | %s | %s | %s | %s |\n' "$mode" "$(mb "${chk[$mode]}")" "$(median ${t[$mode]})" "${t[$mode]% }" "${l[$mode]% }"
  done
  rm -f "$work/target.img"
  unset t l chk
  echo
fi

if has_step tib; then
  big=/var/tmp/big.img
  log "1 TiB sparse ext4 image"
  rm -f "$big"
  truncate -s 1T "$big"
  mkfs.ext4 -F -q -E nodiscard,lazy_itable_init=1 "$big"
  "$bin/blockrep" blockmap "$big" >"$work/big.blockmap"
  times=() rss=() loads=()
  for r in $(seq 1 "$runs"); do
    log "  blockmap, run $r"
    settle
    /usr/bin/time -v "$bin/blockrep" blockmap "$big" >/dev/null 2>"$work/time.txt"
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt" |
      awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }')
    times+=("$wall") loads+=("$load")
    rss+=("$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")")
  done
  rm -f "$big"
  echo "\`blockrep blockmap\` of a sparse 1 TiB image holding a fresh ext4 (\`mkfs.ext4 -E nodiscard,lazy_itable_init=1\`), page cache dropped before each run:"
  echo
  echo "| image | used (blockmap) | median wall (s) | runs (s) | median max RSS | RSS runs (KiB) | load |"
  echo "|---|---|---|---|---|---|---|"
  printf '| 1 TiB ext4 | %s | %s | %s | %s MiB | %s | %s |\n' \
    "$(sed -n 's/.*to send: \(.*\) of .*/\1/p' "$work/big.blockmap")" "$(median "${times[@]}")" \
    "$(runs_list "${times[@]}")" "$(echo "$(median "${rss[@]}") / 1024" | bc -l | xargs printf '%.1f')" \
    "$(runs_list "${rss[@]}")" "$(runs_list "${loads[@]}")"
  echo
fi
