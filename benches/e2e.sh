#!/usr/bin/env bash
# End to end: blockrep beside the usual ways of copying a disk, on one realistic disk image, on
# this machine, in one run.
#
#   benches/e2e.sh [WORKDIR] [RUNS]       (WORKDIR default /var/tmp/blockrep-e2e, RUNS default 3)
#
# Needs root (drop_caches, loop devices, a private sshd); on a shared machine run it under
# `nice -n 19`. It first runs benches/install-peers (the peers' Debian packages, where missing).
# The image is IMAGE if set, else WORKDIR/disk-4G.img, built by `benches/disk-image.sh IMG 4G` when
# missing (GPT: FAT32 ESP, ext4 root, swap, XFS data; stale data in all free space). Binaries:
# BIN=DIR (prebuilt blockrep and blockrep-receiver), else `cargo build --release`; either way
# copied into WORKDIR/bin first. TOOLS=a,b,... chooses the rows (default all, in this order):
#
#  used       `blockrep send --mode used` -> `blockrep-receiver --once`, mutual TLS on 127.0.0.1
#             (certificates from `blockrep certs`). Checked on the used extents of `blockrep
#             blockmap --json` (benches/disktool.py cmp-extents: equal there, zero elsewhere).
#  full       the same with `--mode full`. cmp.
#  used-raw, full-raw   the same with `--compress never` (no lz4: both ends share this machine's
#             cores, so on loopback compressing costs more than it saves on the wire).
#  nbdcopy    `nbdcopy --flush IMG nbds://127.0.0.1:PORT/?tls-certificates=DIR` into `qemu-nbd -e 4`
#             (up to 4 connections, nbdcopy's default multi-conn) serving the target over TLS with
#             a client certificate required (tls-creds-x509,endpoint=server,verify-peer=on); the
#             x509 directories are made with openssl (ECDSA P-256). cmp.
#  qemu-img   `qemu-img convert -t none -T none -O raw -n IMG TARGET`: local, no network, the
#             reference for copying every byte. cmp.
#  partclone  local, used blocks only: the first MiB and the backup GPT with dd, then for each
#             partition (found by partx and `blkid -p`) `partclone.FS -b` from a read-only loop
#             device over the source partition to a loop device over the target's, the swap
#             header page with dd, a partition holding no filesystem partclone knows whole with dd;
#             then sync. Loop devices are made per partition with --offset/--sizelimit (and
#             --direct-io=on), since this machine has no udev to make the nodes `losetup -P` needs.
#             Checked: e2fsck -fn, xfs_repair -n, fsck.fat -n on the target's partitions; their
#             files equal the source's (both mounted read-only, FAT's copied out with mcopy;
#             `rsync -naHc --delete -i` lists nothing); cmp of the first MiB, the backup GPT and the swap header; sgdisk -v. (Not
#             blockmap's used extents: partclone.xfs leaves out the XFS free-list (AGFL) blocks,
#             which blockrep sends, and which hold no data.)
#  dd-tls     `dd iflag=direct | lz4 -1 | openssl s_client` (TLS 1.3, client certificate) ->
#             `openssl s_server -naccept 1 -Verify 1 | lz4 -d | dd oflag=direct conv=fsync`, with
#             the same openssl-made certificates. s_server's stdout carries only the data (-quiet),
#             its stdin is a FIFO that never ends (an EOF there would make it spin), s_client has
#             -no_ign_eof -nocommands (ends at the end of its input; does not take lines of data
#             starting with R, K or Q for commands). cmp.
#  rsync      `rsync --whole-file --inplace --fsync -e 'ssh -c aes128-gcm@openssh.com'` to a
#             private sshd on 127.0.0.1 (temporary host key, config and authorized_keys; root by
#             key only), started before each run and stopped after; the target is all zero, so
#             the delta algorithm could only cost, and --whole-file sends as a first copy would.
#             Skipped (with a note) when /usr/sbin/sshd is missing. cmp.
#
# Columns (medians of RUNS runs, except peak RSS: the largest seen):
#   seconds   wall clock from the sending side's start until every process of both sides has
#             exited, the copy made durable: blockrep's receiver fdatasyncs before it
#             acknowledges, nbdcopy --flush, qemu-img -t none (O_DIRECT), partclone then sync, dd
#             oflag=direct conv=fsync, rsync --fsync.
#   read      read_bytes of /proc/PID/io for the reading side: each side runs under a shell that
#             reads its own /proc/$$/io after it has waited for the side's command (the kernel
#             adds a reaped child's counts to its parent's), so this covers all the processes of
#             that side, page-cache misses and direct I/O alike; for blockrep also its own count
#             (`read_bytes` of `--progress json`).
#   wire      the change of lo's tx_bytes (/sys/class/net/lo/statistics) over the run, in a network
#             namespace made for this script (`ip netns`), where both sides of the networked
#             tools run: every packet of theirs on loopback, both directions, TCP/IP headers
#             included, and nothing else on the machine; for blockrep also its own count
#             (wire_bytes + received_bytes: TLS bytes written and read, without TCP/IP headers).
#   CPU       user + system seconds of all the processes of each side, children included
#             (/usr/bin/time): sending/receiving side, or the total for the local tools.
#   RSS       the largest max RSS of any one process of each side (/usr/bin/time %M), MiB.
#   ratio     blockrep used mode's median time / this row's median time (below 1: blockrep used
#             mode is faster).
#
# Before every timed run: a fresh all-zero sparse target of the image's size; the machine settles
# (1-minute load average below LOAD_MAX, default 1.0, waiting at most LOAD_WAIT s each time,
# default 120, and LOAD_WAIT_TOTAL s in the whole run, default 300); then sync, drop_caches, and
# the tools' executables and libraries are read back into the page cache (so read counts the
# image, not the programs). Each command is bounded by STEP_TIMEOUT seconds (default 1800); every
# background process is stopped on exit; every copy is checked, and a failed check fails the
# script. The runs of all rows are interleaved (run 1 of every row, then run 2, ...). Markdown
# on stdout, progress on stderr.
set -euo pipefail
work=$(realpath -m "${1:-/var/tmp/blockrep-e2e}")
runs=${2:-3}
[[ $runs =~ ^[1-9][0-9]*$ && $# -le 2 ]] || { sed -n '5p' "$0" >&2; exit 2; }
img=$(realpath -m "${IMAGE:-$work/disk-4G.img}")
cd "$(dirname "$0")/.."
repo=$(pwd)
tools=${TOOLS:-used,used-raw,full,full-raw,nbdcopy,qemu-img,partclone,dd-tls,rsync}
load_max=${LOAD_MAX:-1.0}
load_wait=${LOAD_WAIT:-120}
load_wait_total=${LOAD_WAIT_TOTAL:-300}
step_timeout=${STEP_TIMEOUT:-1800}
MiB=$((1 << 20))
log() { echo "[$(date +%T)] $*" >&2; }
has_tool() { [[ ,$tools, == *,$1,* ]]; }
for t in ${tools//,/ }; do
  [[ ,used,used-raw,full,full-raw,nbdcopy,qemu-img,partclone,dd-tls,rsync, == *,$t,* ]] || { echo "e2e.sh: unknown tool $t in TOOLS" >&2; exit 2; }
done
[[ $(id -u) -eq 0 ]] || { echo "e2e.sh needs root (drop_caches, loop devices, sshd)" >&2; exit 1; }

benches/install-peers >&2
mkdir -p "$work"

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
for b in blockrep blockrep-receiver; do
  [[ $BIN/$b -ef $work/bin/$b ]] || cp "$BIN/$b" "$work/bin/"
done
bin=$work/bin

[[ -f $img ]] || BLOCKREP=$bin/blockrep benches/disk-image.sh "$img" 4G >&2
size=$(stat -c %s "$img")
target=$work/target.img
[[ $target != "$img" ]] || { echo "e2e.sh: the image must not be WORKDIR/target.img" >&2; exit 1; }

# blockrep's certificates, and openssl-made x509 directories in the names qemu and libnbd expect
# (server/: ca-cert.pem, server-cert.pem, server-key.pem; client/: ca-cert.pem, client-cert.pem,
# client-key.pem), also used by openssl s_server/s_client.
c=$work/certs
[[ -d $c ]] || "$bin/blockrep" certs --out "$c" >/dev/null
x509=$work/x509
make_x509() {
  local d=$1 who ext
  rm -rf "$d"
  mkdir -p "$d/server" "$d/client"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -keyout "$d/ca-key.pem" -out "$d/ca-cert.pem" -subj /CN=e2e-bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  for who in server client; do
    if [[ $who == server ]]; then
      ext="subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    else
      ext="extendedKeyUsage=clientAuth"
    fi
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$who/$who-key.pem" \
      -out "$d/$who.csr" -subj "/CN=e2e-bench-$who" 2>/dev/null
    # qemu requires keyEncipherment beside digitalSignature when keyUsage is critical.
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca-cert.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
      -days 365 -out "$d/$who/$who-cert.pem" 2>/dev/null \
      -extfile <(printf '%b\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' "$ext")
    cp "$d/ca-cert.pem" "$d/$who/"
    rm -f "$d/$who.csr"
  done
}
[[ -f $x509/client/client-key.pem && -f $x509/server/server-key.pem ]] || make_x509 "$x509"
xs=$x509/server xc=$x509/client

# Makes the files of the FS at START (sectors) of FILE readable under DIR, read-only and without
# replaying any log: a read-only mount, or for FAT (no vfat module in every kernel here) a copy
# made with mtools.
open_tree() {
  local file=$1 start=$2 sectors=$3 fs=$4 dir=$5 opts
  mkdir -p "$dir"
  if [[ $fs == vfat ]]; then
    MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -n -i "$file@@$((start * 512))" '::*' "$dir/"
    touch -d @0 "$dir" # FAT's root directory has no time of its own
    return
  fi
  opts="ro,loop,offset=$((start * 512)),sizelimit=$((sectors * 512))"
  case $fs in
    ext2 | ext3 | ext4) opts+=",noload" ;;
    xfs) opts+=",norecovery,nouuid" ;; # the target has the source's UUID
  esac
  mount -t "$fs" -o "$opts" "$file" "$dir"
}
close_trees() {
  local m
  for m in "$work/tree-src" "$work/tree-dst"; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" || umount -l "$m" || true; fi
    mountpoint -q "$m" 2>/dev/null || rm -rf "$m"
  done
}

bg_pids=()
fg_pid=""
hold=""
made_run_sshd=0
netns=""
killed=()
kill_tree() {
  local p=$1 ch
  for ch in $(pgrep -P "$p"); do kill_tree "$ch"; done
  kill "$p" 2>/dev/null && killed+=("$p")
  return 0
}
cleanup() {
  local p l _ alive
  for p in "${bg_pids[@]}" $fg_pid; do kill_tree "$p"; done
  # Let them go (at most 10 s) before their loop devices and files are taken away.
  for _ in $(seq 1 100); do
    alive=0
    for p in "${killed[@]}"; do ps -o stat= -p "$p" 2>/dev/null | grep -qv '^Z' && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  close_trees
  [[ -z $hold ]] || exec {hold}>&-
  for l in $(losetup -n -O NAME -j "$target" 2>/dev/null) $(losetup -n -O NAME -j "$img" 2>/dev/null); do
    losetup -d "$l" 2>/dev/null || true
  done
  rm -f "$target" "$work/hold.fifo"
  [[ -z $netns ]] || ip netns del "$netns" 2>/dev/null || true
  ((made_run_sshd == 0)) || rmdir /run/sshd 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  local msg=$1 f
  shift
  for f in "$@"; do [[ -f $work/$f ]] && { echo "== $f" >&2; tail -n 20 "$work/$f" >&2; }; done
  echo "e2e.sh: $msg" >&2
  exit 1
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
# The networked tools run in a network namespace of their own, so the loopback counters there
# count their traffic only.
in_ns() { ip netns exec "$netns" "$@"; }
lo_tx() { in_ns cat /sys/class/net/lo/statistics/tx_bytes; }
free_port() { in_ns python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits (at most 10 s) for a TCP listener on 127.0.0.1:PORT while PID lives.
wait_listen() {
  local port=$1 pid=$2 _
  for _ in $(seq 1 200); do
    in_ns ss -Hltn "sport = :$port" | grep -q . && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# measured NAME CMD...: runs CMD (bounded by STEP_TIMEOUT) under /usr/bin/time, which writes
# "wall user sys maxrss_KiB" (children included) as the last line of WORKDIR/NAME.time, and writes
# the read_bytes of CMD and all it waited for to WORKDIR/NAME.io. It runs in the background and is
# waited for, so that an INT or TERM stops the script at once (timeout puts CMD in a process group
# of its own, out of reach of a Ctrl-C; the cleanup kills the whole tree). `<&0`: keep the caller's
# standard input (a background command would get /dev/null).
measured() {
  local name=$1 rc=0
  shift
  # shellcheck disable=SC2016 # expanded by the inner bash
  /usr/bin/time -o "$work/$name.time" -f '%e %U %S %M' \
    bash -c 'timeout -k 10 "$0" "${@:2}"; rc=$?; sed -n "s/^read_bytes: //p" /proc/$$/io >"$1"; exit $rc' \
    "$step_timeout" "$work/$name.io" "$@" <&0 &
  fg_pid=$!
  wait "$fg_pid" || rc=$?
  fg_pid=""
  return "$rc"
}
cpu_of() { tail -n 1 "$work/$1.time" | awk '{ printf "%.2f", $2 + $3 }'; }
rss_of() { tail -n 1 "$work/$1.time" | awk '{ printf "%.0f", $4 / 1024 }'; }
io_of() { cat "$work/$1.io"; }

# The executables and libraries of the tools, read back after each drop_caches.
warm_files=()
for b in "$bin/blockrep" "$bin/blockrep-receiver" nbdcopy qemu-nbd qemu-img partclone.ext4 partclone.xfs \
  partclone.vfat partclone.ntfs dd lz4 openssl rsync ssh /usr/sbin/sshd bash timeout /usr/bin/time sed sync \
  losetup sleep ip cat python3; do
  p=$(command -v "$b") || continue
  warm_files+=("$(realpath "$p")")
  while read -r lib; do warm_files+=("$lib"); done < <(ldd "$p" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done
mapfile -t warm_files < <(printf '%s\n' "${warm_files[@]}" | sort -u)

# Waits for the machine to be quiet (bounded), then empties the page cache and reads the tools
# back; sets `load`.
waited_total=0
settle() {
  local waited=0
  load=$(cut -d' ' -f1 /proc/loadavg)
  while (($(echo "$load >= $load_max" | bc))) && ((waited < load_wait && waited_total < load_wait_total)); do
    sleep 5
    waited=$((waited + 5)) waited_total=$((waited_total + 5))
    load=$(cut -d' ' -f1 /proc/loadavg)
  done
  ((waited == 0)) || log "  waited ${waited}s for the load average (now $load; ${waited_total}s in all)"
  sync
  echo 3 >/proc/sys/vm/drop_caches
  cat "${warm_files[@]}" >/dev/null 2>&1 || true
}
fresh_target() { rm -f "$target"; truncate -s "$size" "$target"; }
clock_start() { tx0=$(lo_tx); t0=$(date +%s.%N); }
clock_stop() {
  secs=$(echo "$(date +%s.%N) - $t0" | bc -l | xargs printf '%.2f')
  wire=$(($(lo_tx) - tx0))
}
check_cmp() { cmp "$img" "$target" >&2 || fail "$1: the copy differs from the image"; }

# One timed run of each tool. Each sets secs, wire, rd (read_bytes of the reading side), and
# cpu/rss as "sender/receiver" or a total; blockrep also own_rd and own_wire.
run_blockrep() {
  local mode=$1 port="" rpid _
  shift
  fresh_target
  settle
  measured recv "${ns[@]}" "$bin/blockrep-receiver" --listen 127.0.0.1:0 --once --cert "$c/server.pem" \
    --key "$c/server.key" --client-ca "$c/ca.pem" --disk d0="$target" 2>"$work/receiver.log" &
  rpid=$!
  bg_pids=("$rpid")
  for _ in $(seq 1 200); do
    port=$(sed -n 's/^blockrep-receiver listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/receiver.log")
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || fail "blockrep-receiver did not start" receiver.log
  clock_start
  measured send "${ns[@]}" "$bin/blockrep" send --to 127.0.0.1:"$port" --ca "$c/ca.pem" --cert "$c/client.pem" \
    --key "$c/client.key" --disk d0="$img" --mode "$mode" "$@" --progress json >"$work/send.json" 2>"$work/send.log" ||
    fail "blockrep send --mode $mode failed" send.log receiver.log
  wait "$rpid" || fail "blockrep-receiver failed" receiver.log
  bg_pids=()
  clock_stop
  read -r own_rd own_wire < <(tail -n 1 "$work/send.json" | python3 -c '
import json, sys
s = json.load(sys.stdin)["summary"]
print(s["read_bytes"], s["wire_bytes"] + s["received_bytes"])')
  rd=$(io_of send) cpu="$(cpu_of send)/$(cpu_of recv)" rss="$(rss_of send)/$(rss_of recv)"
  if [[ $mode == used ]]; then
    python3 benches/disktool.py cmp-extents "$img" "$target" "$work/blockmap.json" >&2 ||
      fail "used: the copy differs from the image on the used extents"
  else
    check_cmp full
  fi
}

run_nbdcopy() {
  local port spid
  fresh_target
  settle
  port=$(free_port)
  measured nbd-server "${ns[@]}" qemu-nbd -f raw -b 127.0.0.1 -p "$port" -e 4 \
    --object tls-creds-x509,id=tls0,dir="$xs",endpoint=server,verify-peer=on --tls-creds tls0 \
    "$target" >"$work/qemu-nbd.log" 2>&1 &
  spid=$!
  bg_pids=("$spid")
  wait_listen "$port" "$spid" || fail "qemu-nbd did not start" qemu-nbd.log
  clock_start
  measured nbd-client "${ns[@]}" nbdcopy --flush "$img" "nbds://127.0.0.1:$port/?tls-certificates=$xc" \
    >"$work/nbdcopy.log" 2>&1 || fail "nbdcopy failed" nbdcopy.log qemu-nbd.log
  # Not --persistent: qemu-nbd exits when its last client has gone.
  wait "$spid" || fail "qemu-nbd failed" qemu-nbd.log
  bg_pids=()
  clock_stop
  rd=$(io_of nbd-client) cpu="$(cpu_of nbd-client)/$(cpu_of nbd-server)" rss="$(rss_of nbd-client)/$(rss_of nbd-server)"
  check_cmp nbdcopy
}

run_qemu_img() {
  fresh_target
  settle
  clock_start
  measured local qemu-img convert -t none -T none -O raw -n "$img" "$target" >"$work/qemu-img.log" 2>&1 ||
    fail "qemu-img convert failed" qemu-img.log
  clock_stop
  rd=$(io_of local) cpu=$(cpu_of local) rss=$(rss_of local) wire=""
  check_cmp qemu-img
}

# The partclone copy, run as one command under `measured`: partclone-copy SRC DST PLAN LOG.
# PLAN lines: "NR START_SECTOR SECTORS FSTYPE METHOD", METHOD partclone.FS | swap | dd.
# shellcheck disable=SC2016 # expanded by the inner bash
partclone_copy='set -euo pipefail
src=$1 dst=$2 plan=$3 log=$4
loops=()
trap '\''for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done'\'' EXIT
sectors_all=$(($(stat -c %s "$src") / 512))
# The first MiB (protective MBR, GPT, the gap before the first partition) and the backup GPT.
dd if="$src" of="$dst" bs=1M count=1 conv=notrunc status=none
dd if="$src" of="$dst" bs=512 skip=$((sectors_all - 33)) seek=$((sectors_all - 33)) count=33 conv=notrunc status=none
while read -r nr start sectors fs method; do
  case $method in
    partclone.*)
      s=$(losetup --find --show --read-only --direct-io=on --offset $((start * 512)) --sizelimit $((sectors * 512)) "$src")
      loops+=("$s")
      t=$(losetup --find --show --direct-io=on --offset $((start * 512)) --sizelimit $((sectors * 512)) "$dst")
      loops+=("$t")
      echo "== partition $nr ($fs): $method -b -s $s -o $t" >>"$log"
      "$method" -b -q -L "$log.partclone" -s "$s" -o "$t" >>"$log" 2>&1
      losetup -d "$s" "$t"
      loops=() ;;
    swap)
      dd if="$src" of="$dst" bs=4096 count=1 iflag=skip_bytes oflag=seek_bytes skip=$((start * 512)) seek=$((start * 512)) conv=notrunc status=none ;;
    *)
      dd if="$src" of="$dst" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes skip=$((start * 512)) seek=$((start * 512)) count=$((sectors * 512)) conv=notrunc status=none ;;
  esac
done <"$plan"
sync'

# What partclone does with each partition, decided once.
partclone_plan() {
  local nr start sectors fs method
  : >"$work/partclone.plan"
  while read -r nr start sectors; do
    fs=$(blkid -p -O $((start * 512)) -S $((sectors * 512)) -o value -s TYPE "$img" 2>/dev/null || true)
    case $fs in
      ext2 | ext3 | ext4 | xfs | vfat | ntfs | btrfs | exfat) method=partclone.$fs ;;
      swap) method=swap ;;
      *) method='dd' ;;
    esac
    [[ $method != partclone.* ]] || command -v "$method" >/dev/null || method='dd'
    echo "$nr $start $sectors ${fs:-none} $method" >>"$work/partclone.plan"
  done < <(partx -g -o NR,START,SECTORS "$img")
  [[ -s $work/partclone.plan ]] || fail "partclone: no partitions in $img"
}

run_partclone() {
  fresh_target
  settle
  : >"$work/partclone.log"
  rm -f "$work/partclone.log.partclone"
  clock_start
  measured local bash -c "$partclone_copy" partclone-copy "$img" "$target" "$work/partclone.plan" "$work/partclone.log" ||
    fail "the partclone copy failed" partclone.log partclone.log.partclone
  clock_stop
  rd=$(io_of local) cpu=$(cpu_of local) rss=$(rss_of local) wire=""
  check_partclone
}

check_partclone() {
  local nr start sectors fs method t out sectors_all
  cmp -n "$MiB" "$img" "$target" >&2 || fail "partclone: the first MiB differs"
  sectors_all=$((size / 512))
  cmp -n $((33 * 512)) -i $(((sectors_all - 33) * 512)) "$img" "$target" >&2 || fail "partclone: the backup GPT differs"
  sgdisk -v "$target" | grep -q 'No problems found' || fail "partclone: sgdisk -v finds problems in the target's table"
  while read -r nr start sectors fs method; do
    case $method in
      swap)
        cmp -n 4096 -i $((start * 512)) "$img" "$target" >&2 || fail "partclone: the swap header (partition $nr) differs" ;;
      dd)
        cmp -n $((sectors * 512)) -i $((start * 512)) "$img" "$target" >&2 || fail "partclone: partition $nr (copied whole) differs" ;;
      partclone.*)
        t=$(losetup --find --show --read-only --offset $((start * 512)) --sizelimit $((sectors * 512)) "$target")
        case $fs in
          ext2 | ext3 | ext4) out=$(e2fsck -fn "$t" 2>&1) ;;
          xfs) out=$(xfs_repair -n "$t" 2>&1) ;;
          vfat) out=$(fsck.fat -n "$t" 2>&1) ;;
          *) out="no checker for $fs" ;;
        esac || { losetup -d "$t"; echo "$out" >&2; fail "partclone: the filesystem check of partition $nr ($fs) failed"; }
        losetup -d "$t"
        # The files themselves: both trees mounted read-only, compared by rsync's checksums
        # (contents, modes, owners, times, links); any line it prints is a difference.
        close_trees
        open_tree "$img" "$start" "$sectors" "$fs" "$work/tree-src"
        open_tree "$target" "$start" "$sectors" "$fs" "$work/tree-dst"
        out=$(rsync -naHc --delete --itemize-changes "$work/tree-src/" "$work/tree-dst/" 2>&1) || out+=" (rsync failed)"
        close_trees
        [[ -z $out ]] || { echo "$out" | head -n 20 >&2; fail "partclone: the files of partition $nr ($fs) differ"; } ;;
    esac
  done <"$work/partclone.plan"
}


run_dd_tls() {
  local port spid
  fresh_target
  settle
  port=$(free_port)
  rm -f "$work/hold.fifo"
  mkfifo "$work/hold.fifo"
  exec {hold}<>"$work/hold.fifo"
  # shellcheck disable=SC2016 # expanded by the inner bash
  measured dd-recv "${ns[@]}" bash -o pipefail -c 'openssl s_server -accept 127.0.0.1:"$1" -naccept 1 -quiet -tls1_3 \
      -cert "$2/server-cert.pem" -key "$2/server-key.pem" -CAfile "$2/ca-cert.pem" -Verify 1 -verify_return_error \
      2>"$3" | lz4 -d -c | dd of="$4" bs=1M oflag=direct conv=notrunc,fsync status=none' \
    s_server "$port" "$xs" "$work/s_server.log" "$target" <&"$hold" 2>"$work/dd-recv.log" &
  spid=$!
  bg_pids=("$spid")
  wait_listen "$port" "$spid" || fail "openssl s_server did not start" s_server.log dd-recv.log
  clock_start
  # shellcheck disable=SC2016 # expanded by the inner bash
  measured dd-send "${ns[@]}" bash -o pipefail -c 'dd if="$1" bs=1M iflag=direct status=none | lz4 -1 -c |
      openssl s_client -connect 127.0.0.1:"$2" -tls1_3 -quiet -no_ign_eof -nocommands \
      -cert "$3/client-cert.pem" -key "$3/client-key.pem" -CAfile "$3/ca-cert.pem" -verify_return_error \
      -verify_ip 127.0.0.1 >/dev/null' \
    s_client "$img" "$port" "$xc" 2>"$work/s_client.log" || fail "the sending pipeline failed" s_client.log s_server.log
  wait "$spid" || fail "the receiving pipeline failed" s_server.log dd-recv.log
  bg_pids=()
  clock_stop
  exec {hold}>&-
  hold=""
  rm -f "$work/hold.fifo"
  rd=$(io_of dd-send) cpu="$(cpu_of dd-send)/$(cpu_of dd-recv)" rss="$(rss_of dd-send)/$(rss_of dd-recv)"
  check_cmp dd-tls
}

ssh_setup() {
  local s=$work/ssh
  rm -rf "$s"
  mkdir -m 700 "$s"
  ssh-keygen -q -t ed25519 -N '' -C e2e-host -f "$s/host_key"
  ssh-keygen -q -t ed25519 -N '' -C e2e-client -f "$s/client_key"
  cp "$s/client_key.pub" "$s/authorized_keys"
  ssh_port=$(free_port)
  cat >"$s/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $ssh_port
HostKey $s/host_key
PidFile $s/sshd.pid
AuthorizedKeysFile $s/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Ciphers aes128-gcm@openssh.com
Compression no
X11Forwarding no
AllowTcpForwarding no
EOF
  if [[ ! -d /run/sshd ]]; then mkdir -p /run/sshd && chmod 755 /run/sshd && made_run_sshd=1; fi
  /usr/sbin/sshd -t -f "$s/sshd_config" || fail "sshd refuses the private configuration"
  ssh_cmd="ssh -F /dev/null -p $ssh_port -i $s/client_key -c aes128-gcm@openssh.com -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
}

run_rsync() {
  local spid _
  fresh_target
  settle
  rm -f "$work/ssh/sshd.pid"
  measured rsync-recv "${ns[@]}" /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config" 2>"$work/sshd.log" &
  spid=$!
  bg_pids=("$spid")
  wait_listen "$ssh_port" "$spid" || fail "sshd did not start" sshd.log
  clock_start
  measured rsync-send "${ns[@]}" rsync --whole-file --inplace --fsync -e "$ssh_cmd" "$img" root@127.0.0.1:"$target" \
    >"$work/rsync.log" 2>&1 || fail "rsync failed" rsync.log sshd.log
  clock_stop
  # Stop the listening sshd (its connection's processes have ended with rsync), so /usr/bin/time
  # reports the server side.
  for _ in $(seq 1 100); do [[ -s $work/ssh/sshd.pid ]] && break; sleep 0.05; done
  kill "$(cat "$work/ssh/sshd.pid")" 2>/dev/null || kill_tree "$spid"
  wait "$spid" || true
  bg_pids=()
  rd=$(io_of rsync-send) cpu="$(cpu_of rsync-send)/$(cpu_of rsync-recv)" rss="$(rss_of rsync-send)/$(rss_of rsync-recv)"
  check_cmp rsync
}

netns=blockrep-e2e-$$
ip netns add "$netns"
ns=(ip netns exec "$netns")
in_ns ip link set lo up

# ---- the image
"$bin/blockrep" blockmap "$img" --json >"$work/blockmap.json"
"$bin/blockrep" blockmap "$img" >"$work/blockmap.txt"
used_bytes=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["used_bytes"])' "$work/blockmap.json")
# Unwritten (preallocated) extents of the image file read as zeros without any I/O: no read_bytes
# counts them.
unwritten=$(filefrag -v "$img" 2>/dev/null | awk '/blocks of/ { bs = $(NF - 1) } /unwritten/ { n += $6 } END { printf "%d", n * bs }')
has_tool partclone && partclone_plan
notes=()
if has_tool rsync; then
  if [[ -x /usr/sbin/sshd ]]; then
    ssh_setup
  else
    tools=${tools//rsync/}
    notes+=("rsync: skipped, /usr/sbin/sshd is not installed.")
  fi
fi

# ---- the runs, interleaved
declare -A T=() RD=() ORD=() W=() OW=() CS=() CR=() RS=() RR=() LD=()
record() {
  local k=$1
  T[$k]+="$secs " RD[$k]+="$rd " LD[$k]+="$load "
  [[ -z $wire ]] || W[$k]+="$wire "
  [[ -z ${own_rd:-} ]] || ORD[$k]+="$own_rd "
  [[ -z ${own_wire:-} ]] || OW[$k]+="$own_wire "
  CS[$k]+="${cpu%%/*} " RS[$k]+="${rss%%/*} "
  if [[ $cpu == */* ]]; then CR[$k]+="${cpu#*/} " RR[$k]+="${rss#*/} "; fi
  local w=none
  [[ -z $wire ]] || w=$(mb "$wire")
  log "  $k: ${secs}s, read $(mb "$rd"), wire $w, CPU $cpu s, RSS $rss MiB, load $load"
}
for r in $(seq 1 "$runs"); do
  for k in ${tools//,/ }; do
    log "$k, run $r of $runs"
    own_rd="" own_wire="" wire=""
    case $k in
      used | full) run_blockrep "$k" ;;
      used-raw | full-raw) run_blockrep "${k%-raw}" --compress never ;;
      nbdcopy) run_nbdcopy ;;
      qemu-img) run_qemu_img ;;
      partclone) run_partclone ;;
      dd-tls) run_dd_tls ;;
      rsync) run_rsync ;;
    esac
    record "$k"
  done
done
rm -f "$target"

# ---- the table
echo "Image: \`$img\`: $(mb "$size") ($size bytes), used per \`blockrep blockmap\`: $(mb "$used_bytes") ($used_bytes bytes, $(echo "100 * $used_bytes / $size" | bc -l | xargs printf '%.1f')%). In the image file $(mb "${unwritten:-0}") are unwritten extents (allocated, never written: they read as zeros without I/O, so no read_bytes below counts them). Binaries: $built. $runs run(s) of each row, interleaved, medians; $(nproc) cores; $(date +%F)."
echo
echo '```'
sed 's/^/  /' "$work/blockmap.txt"
echo '```'
echo
echo "| tool | command (short) | median (s) | runs (s) | read from the source | on the wire | CPU s | peak RSS MiB | blockrep used / this | check |"
echo "|---|---|---|---|---|---|---|---|---|---|"
# shellcheck disable=SC2086 # the lists are space-separated numbers
{
  used_median=""
  [[ -z ${T[used]:-} ]] || used_median=$(median ${T[used]})
  for k in ${tools//,/ }; do
    [[ -n ${T[$k]:-} ]] || continue
    m=$(median ${T[$k]})
    case $k in
      used) name="blockrep, used mode"; cmd="blockrep send --mode used → blockrep-receiver --once (mutual TLS 1.3)"; chk="used extents equal, zero elsewhere" ;;
      full) name="blockrep, full mode"; cmd="blockrep send --mode full → blockrep-receiver --once (mutual TLS 1.3)"; chk='cmp' ;;
      used-raw) name="blockrep, used mode, no lz4"; cmd="blockrep send --mode used --compress never → blockrep-receiver --once"; chk="used extents equal, zero elsewhere" ;;
      full-raw) name="blockrep, full mode, no lz4"; cmd="blockrep send --mode full --compress never → blockrep-receiver --once"; chk='cmp' ;;
      nbdcopy) name="nbdcopy → qemu-nbd"; cmd="nbdcopy --flush IMG nbds://127.0.0.1:P/?tls-certificates=D → qemu-nbd -e 4 --tls-creds (x509, verify-peer=on)"; chk='cmp' ;;
      qemu-img) name="qemu-img convert (local)"; cmd="qemu-img convert -t none -T none -O raw -n IMG TARGET"; chk='cmp' ;;
      partclone) name="partclone (local, used blocks)"
        cmd="dd first MiB + backup GPT; $(awk '{ printf "%sp%s %s", (NR > 1 ? "; " : ""), $1, ($5 == "swap" ? "swap header (dd 4 KiB)" : $5 == "dd" ? "dd whole" : $5 " -b") }' "$work/partclone.plan"); sync"
        chk="e2fsck -fn, xfs_repair -n, fsck.fat -n; files equal (rsync -c dry run); table, swap header cmp" ;;
      dd-tls) name="dd, lz4, openssl s_client → s_server"; cmd="dd iflag=direct bs=1M \\| lz4 -1 \\| openssl s_client -tls1_3 → openssl s_server -Verify 1 \\| lz4 -d \\| dd oflag=direct conv=fsync"; chk='cmp' ;;
      rsync) name="rsync over ssh"; cmd="rsync --whole-file --inplace --fsync -e 'ssh -c aes128-gcm@openssh.com' → private sshd"; chk='cmp' ;;
    esac
    read_cell="$(mb "$(median ${RD[$k]})") (/proc)"
    [[ -z ${ORD[$k]:-} ]] || read_cell+="; own: $(mb "$(median ${ORD[$k]})")"
    wire_cell="none (local)"
    if [[ -n ${W[$k]:-} ]]; then
      wire_cell="$(mb "$(median ${W[$k]})") (lo tx)"
      [[ -z ${OW[$k]:-} ]] || wire_cell+="; own: $(mb "$(median ${OW[$k]})")"
    fi
    cpu_cell=$(median ${CS[$k]}) rss_cell=$(maxof ${RS[$k]})
    if [[ -n ${CR[$k]:-} ]]; then
      cpu_cell+=" / $(median ${CR[$k]})" rss_cell+=" / $(maxof ${RR[$k]})"
    else
      cpu_cell+=" (total)"
    fi
    ratio="n/a"
    [[ -z $used_median ]] || ratio=$(echo "$used_median / $m" | bc -l | xargs printf '%.2f')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$cmd" "$m" "${T[$k]% }" \
      "$read_cell" "$wire_cell" "$cpu_cell" "$rss_cell" "$ratio" "$chk"
  done
}
echo
loads=""
for k in ${tools//,/ }; do [[ -z ${LD[$k]:-} ]] || loads+=" $k: ${LD[$k]% };"; done
echo "Load (1-minute average before each run):${loads%;}."
echo
echo "Read: /proc = read_bytes of /proc/PID/io of all the reading side's processes (page-cache misses and direct reads); own = blockrep's read_bytes. Wire: lo tx = change of lo's tx_bytes in a network namespace holding only the two sides (both directions, TCP/IP headers included); own = blockrep's wire_bytes + received_bytes (TLS bytes, no TCP/IP headers). CPU: user + system s, sending side / receiving side (children included). Peak RSS: the largest of any one process of that side, over all runs."
for n in "${notes[@]}"; do echo; echo "$n"; done
