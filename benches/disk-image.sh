#!/usr/bin/env bash
# Builds a realistic server disk image for the end-to-end benchmarks, without network.
#
#   benches/disk-image.sh [--force] OUT.img [SIZE]        (SIZE default 4G; needs root)
#
# Layout (GPT, fixed GUIDs): 1 EFI system partition (FAT32, 256 MiB, a few MiB of boot files),
# 2 ext4 root (half the disk, an OS tree copied from this machine's /etc, /usr/bin, /usr/lib,
# /usr/share, plus /boot, /var/log, /home), 3 swap (512 MiB), 4 XFS data (the rest: database-like
# random files, compressible logs, many small files). Below 4 GiB every size and every amount of
# content shrinks in proportion; above it the content stays the same (a bigger disk, same server).
#
# Stale free space: the whole disk is filled with non-zero garbage (seeded: random and log text)
# before any filesystem is made, filesystems are made without discard (mkfs.ext4 -E nodiscard,
# mkfs.xfs -K), and files are written, synced and deleted, so free space holds old data.
#
# Reproducible: garbage, generated files, GUIDs/UUIDs and the changer are seeded; the copied OS
# tree is this machine's (a sorted file list cut at a byte budget). Inode timestamps differ
# between builds, so two builds are alike but not byte-identical.
#
# An existing OUT.img is reused (only the summary is printed) unless --force is given.
set -euo pipefail

force=0
if [[ ${1:-} == --force ]]; then force=1; shift; fi
[[ $# -ge 1 && $# -le 2 ]] || { sed -n '2,4p' "$0" >&2; exit 2; }
out=$1
size_arg=${2:-4G}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tool="python3 $here/disktool.py"
blockrep=${BLOCKREP:-$repo/target/release/blockrep} # for the summary
MiB=$((1 << 20))

summary() {
  if [[ ! -x $blockrep ]]; then
    (cd "$repo" && cargo build --release --quiet --bin blockrep)
  fi
  echo "== $out"
  sgdisk -p "$out" | sed -n '/^Number/,$p'
  "$blockrep" blockmap "$out"
}

if [[ -f $out && $force -eq 0 ]]; then
  echo "$out exists; reusing it (--force rebuilds)"
  summary
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "disk-image.sh needs root (loop devices and mounts for ext4 and XFS); run it with sudo" >&2
  exit 1
fi
for t in sgdisk partx mkfs.fat mcopy mmd mdel mkfs.ext4 mkfs.xfs mkswap losetup mount tar \
  e2fsck xfs_repair fsck.fat python3; do
  command -v "$t" >/dev/null || { echo "disk-image.sh: $t is missing (gdisk, dosfstools, mtools, e2fsprogs, xfsprogs, util-linux)" >&2; exit 1; }
done

size=$(python3 -c "import sys; sys.path.insert(0, '$here'); import disktool; print(disktool.parse_size('$size_arg'))")
size=$((size / MiB * MiB))
[[ $size -ge $((1024 * MiB)) ]] || { echo "disk-image.sh: SIZE must be at least 1G" >&2; exit 1; }

# Partition sizes (MiB) and content scale (per mille of the 4 GiB image's content).
total_mib=$((size / MiB))
esp_mib=$((total_mib / 16 < 256 ? total_mib / 16 : 256))
swap_mib=$((total_mib / 8 < 512 ? total_mib / 8 : 512))
root_mib=$((total_mib / 2))
scale=$((total_mib >= 4096 ? 1000 : total_mib * 1000 / 4096))
mb() { echo $(($1 * MiB * scale / 1000)); } # bytes: MiB of 4 GiB-image content, scaled

work=$(mktemp -d /var/tmp/disk-image.XXXXXX)
partial=$out.partial
loops=()
mnt=$work/mnt
done_ok=0
cleanup() {
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
  local l
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
  [[ $done_ok -eq 1 ]] || rm -f "$partial"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$mnt"

# A loop device over one partition; its name on stdout.
loop_part() {
  local n=$1 start sectors dev
  read -r start sectors < <(partx -g -o START,SECTORS --nr "$n" "$partial")
  dev=$(losetup --find --show --offset $((start * 512)) --sizelimit $((sectors * 512)) "$partial")
  echo "$dev"
}
# Copies the files of a NUL-separated list (absolute paths) under a directory, keeping modes,
# owners, links and times. tar's status 1 ("file changed as we read it") is not an error here.
copy_list() {
  { tar --null --no-recursion -T "$1" -cf - 2>"$work/tar.err" || [[ $? -eq 1 ]]; } | tar -C "$2" -xpf -
}
part_start() { partx -g -o START --nr "$1" "$partial" | tr -d ' '; }
part_sectors() { partx -g -o SECTORS --nr "$1" "$partial" | tr -d ' '; }

echo "building $out: $((size / MiB)) MiB (ESP $esp_mib MiB, root $root_mib MiB, swap $swap_mib MiB, data the rest)"
rm -f "$partial"
truncate -s "$size" "$partial"

echo "  stale garbage over the whole disk"
$tool fill "$partial" 0 "$size" 1

echo "  GPT"
sgdisk -Z "$partial" >/dev/null 2>&1 || true # garbage may look like a broken table
sgdisk -o -U 5D8A2D5B-8B43-4E7A-9B1C-0B2C5E1D7A01 \
  -n 1:2048:+${esp_mib}M -t 1:ef00 -c 1:"EFI System Partition" -u 1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B \
  -n 2:0:+${root_mib}M -t 2:8304 -c 2:root -u 2:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 \
  -n 3:0:+${swap_mib}M -t 3:8200 -c 3:swap -u 3:0657FD6D-A4AB-43C4-84E5-0933C84B4F4F \
  -n 4:0:0 -t 4:8300 -c 4:data -u 4:A3B2C1D0-1111-4222-8333-944455556666 \
  "$partial" >/dev/null
# `sgdisk -Z` above zeroed the first and last 34 sectors' worth of tables only; put garbage back
# in the gap between the table and the first partition, as an old disk would have.
$tool fill "$partial" $((34 * 512)) $((2048 * 512 - 34 * 512)) 2

echo "  EFI system partition (FAT32, mtools)"
esp_start=$(part_start 1)
esp_sectors=$(part_sectors 1)
# One sector per cluster: FAT32 needs at least 65525 clusters, and the ESP is small.
mkfs.fat -F 32 -s 1 -n ESP -i 1A2B3C4D --offset="$esp_start" "$partial" $((esp_sectors / 2)) >"$work/mkfs.log" 2>&1 ||
  { cat "$work/mkfs.log" >&2; exit 1; }
esp="$partial@@$((esp_start * 512))"
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
$tool random "$work/shimx64.efi" "$(mb 1)" 11
$tool random "$work/grubx64.efi" "$(mb 2)" 12
$tool random "$work/mmx64.efi" "$(mb 1)" 13
$tool random "$work/old-grubx64.efi" "$(mb 2)" 14
# shellcheck disable=SC2016 # grub's variables, not the shell's
printf 'search.fs_uuid 4f68bce3 root\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n' >"$work/grub.cfg"
printf 'shimx64.efi,debian,,This is the boot entry for debian\n' | iconv -t UTF-16 >"$work/BOOTX64.CSV"
mcopy -i "$esp" "$work/shimx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$work/mmx64.efi" "$work/grubx64.efi" ::/EFI/BOOT/
mcopy -i "$esp" "$work/shimx64.efi" "$work/grubx64.efi" "$work/mmx64.efi" "$work/grub.cfg" "$work/BOOTX64.CSV" ::/EFI/debian/
mcopy -i "$esp" "$work/old-grubx64.efi" ::/EFI/debian/grubx64.efi.old
mdel -i "$esp" ::/EFI/debian/grubx64.efi.old # its clusters keep the old data
rm -f "$work"/*.efi "$work/grub.cfg" "$work/BOOTX64.CSV"

echo "  ext4 root: OS tree from this machine"
dev=$(loop_part 2)
loops+=("$dev")
mkfs.ext4 -F -q -L root -U 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 \
  -E nodiscard,lazy_itable_init=0,lazy_journal_init=0,hash_seed=2e1b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d "$dev"
mount -o nodiscard "$dev" "$mnt"
$tool tree-list "$(mb 1150)" /etc /usr/bin /usr/sbin /usr/lib/x86_64-linux-gnu /usr/lib/python3 \
  /usr/lib/python3.11 /usr/lib/systemd /usr/lib/udev /usr/share /usr/lib/gcc /usr/lib/llvm-14 \
  >"$work/tree.list"
copy_list "$work/tree.list" "$mnt"
mkdir -p "$mnt"/{boot,home/admin,root,srv,opt,tmp,var/log/nginx,var/lib/app,var/cache/apt/archives,dev,proc,sys,run}
chmod 1777 "$mnt/tmp"
ln -s usr/bin "$mnt/bin"; ln -s usr/sbin "$mnt/sbin"; ln -s usr/lib "$mnt/lib"
$tool random "$mnt/boot/vmlinuz-6.1.0-18-amd64" "$(mb 8)" 21
$tool random "$mnt/boot/initrd.img-6.1.0-18-amd64" "$(mb 34)" 22
$tool logs "$mnt/boot/System.map-6.1.0-18-amd64" "$(mb 4)" 23
$tool logs "$mnt/var/log/syslog" "$(mb 12)" 24
$tool logs "$mnt/var/log/nginx/access.log" "$(mb 10)" 25
$tool smallfiles "$mnt/home/admin/mail" $((1500 * scale / 1000)) 26
$tool smallfiles "$mnt/var/lib/app/objects" $((1500 * scale / 1000)) 27
# Written, made durable, then deleted: their blocks become stale free space.
$tool random "$mnt/var/cache/apt/archives/linux-image-6.1.0-17-amd64.deb" "$(mb 64)" 28
$tool random "$mnt/var/cache/apt/archives/libllvm15.deb" "$(mb 26)" 29
$tool logs "$mnt/var/log/syslog.1" "$(mb 24)" 30
$tool random "$mnt/boot/initrd.img-6.1.0-17-amd64" "$(mb 34)" 31
sync -f "$mnt"
rm -f "$mnt"/var/cache/apt/archives/*.deb "$mnt/var/log/syslog.1" "$mnt/boot/initrd.img-6.1.0-17-amd64"
sync -f "$mnt"
umount "$mnt"
e2fsck -fn "$dev" >"$work/fsck.log" 2>&1 || { cat "$work/fsck.log" >&2; echo "e2fsck found errors" >&2; exit 1; }
losetup -d "$dev"; loops=()

echo "  swap"
dev=$(loop_part 3)
loops+=("$dev")
mkswap -L swap -U 0657fd6d-a4ab-43c4-84e5-0933c84b4f4f "$dev" >/dev/null
losetup -d "$dev"; loops=()

echo "  XFS data: databases, logs, sources, many small files"
dev=$(loop_part 4)
loops+=("$dev")
mkfs.xfs -q -f -K -L data -m uuid=a3b2c1d0-1111-4222-8333-944455556666 "$dev"
mount "$dev" "$mnt"
mkdir -p "$mnt"/{db,log,src,objects,backup}
$tool random "$mnt/db/orders.dat" "$(mb 64)" 41
$tool random "$mnt/db/customers.dat" "$(mb 16)" 42
for i in 1 2 3 4 5 6 7 8; do $tool logs "$mnt/log/app.log.$i" "$(mb 12)" $((50 + i)); done
$tool tree-list "$(mb 48)" /usr/include >"$work/src.list"
copy_list "$work/src.list" "$mnt/src"
$tool smallfiles "$mnt/objects" $((4000 * scale / 1000)) 43
$tool random "$mnt/backup/db-2024-01-01.tar" "$(mb 96)" 44
sync -f "$mnt"
rm -f "$mnt/backup/db-2024-01-01.tar" "$mnt/log/app.log.7" "$mnt/log/app.log.8"
sync -f "$mnt"
umount "$mnt"
xfs_repair -n "$dev" >"$work/xfs.log" 2>&1 || { cat "$work/xfs.log" >&2; echo "xfs_repair found errors" >&2; exit 1; }
losetup -d "$dev"; loops=()

dev=$(loop_part 1)
loops+=("$dev")
fsck.fat -n "$dev" >"$work/fat.log" 2>&1 || { cat "$work/fat.log" >&2; echo "fsck.fat found errors" >&2; exit 1; }
losetup -d "$dev"; loops=()
sgdisk -v "$partial" | grep -q 'No problems found' || { sgdisk -v "$partial" >&2; exit 1; }

mv "$partial" "$out"
done_ok=1
summary
