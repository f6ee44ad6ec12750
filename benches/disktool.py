#!/usr/bin/env python3
"""Deterministic data for the end-to-end disk benchmarks (benches/disk-image.sh, benches/rounds.sh).

Everything is derived from a seed, so two runs write the same bytes:

  disktool.py fill IMG OFFSET LENGTH SEED      stale garbage (random and log text, no zero block)
  disktool.py random FILE SIZE SEED            incompressible file (database, archive, initrd)
  disktool.py logs FILE SIZE SEED              log-like text (compresses about 3-4x with lz4)
  disktool.py smallfiles DIR COUNT SEED        many small files, 200 B .. 24 KiB, text and binary
  disktool.py tree-list BUDGET ROOT...         NUL-separated world-readable files and symlinks under
                                               ROOTs (sorted), until BUDGET bytes of 4 KiB blocks
                                               (hard links count once)
  disktool.py change IMG PERCENT SEED KIND     overwrite PERCENT% of the 4 KiB blocks of IMG, chosen
                                               at random over the whole image; KIND random|text
  disktool.py restore BASE TARGET BITMAP       copy back from BASE the granules a native BRCBMAP1
                                               bitmap marks (undoes a round in TARGET)
  disktool.py cmp-extents SRC DST JSON         DST equals SRC on the extents of `blockrep blockmap
                                               --json` (JSON) and is zero everywhere else

Sizes accept K/M/G suffixes (powers of 1024).
"""

import json
import os
import random
import stat
import sys

BLOCK = 4096
PIECE = 4 << 20

WORDS = (
    "GET POST PUT DELETE /api/v1/orders /api/v1/users /static/app.js /healthz /metrics "
    "session user cart checkout payment invoice shipment warehouse sku quantity price "
    "connection timeout retry backend upstream worker queue job completed failed started "
    "INFO WARN ERROR DEBUG kernel systemd sshd nginx postgres cron dockerd containerd"
).split()
HOSTS = ["web-01", "web-02", "db-01", "cache-01", "batch-03"]
UNITS = ["nginx", "postgres", "sshd", "cron", "app", "kernel", "systemd", "redis"]


def parse_size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in mult:
        return int(float(text[:-1]) * mult[text[-1]])
    return int(text)


def log_text(rng, size):
    """Log-like lines (syslog / access-log shaped) totalling exactly `size` bytes."""
    out = []
    n = 0
    t = rng.randrange(1_600_000_000, 1_700_000_000)
    while n < size:
        t += rng.randrange(0, 3)
        host = rng.choice(HOSTS)
        unit = rng.choice(UNITS)
        if rng.random() < 0.5:
            line = '%d %s %s[%d]: 10.%d.%d.%d - - "%s %s HTTP/1.1" %d %d %.3f\n' % (
                t, host, unit, rng.randrange(100, 65535), rng.randrange(256), rng.randrange(256),
                rng.randrange(256), rng.choice(("GET", "POST", "PUT")), rng.choice(WORDS),
                rng.choice((200, 200, 200, 201, 204, 301, 404, 500)), rng.randrange(0, 200000),
                rng.random())
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 14)))
            line = "%d %s %s[%d]: %s id=%08x\n" % (
                t, host, unit, rng.randrange(100, 65535), words, rng.getrandbits(32))
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


class Garbage:
    """Stale data: 4 MiB pieces, about half random, half log text (never a zero 4 KiB block)."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.text = log_text(random.Random(seed ^ 0x5EED), 16 << 20)

    def piece(self, n):
        if self.rng.random() < 0.5:
            return self.rng.randbytes(n)
        at = self.rng.randrange(0, len(self.text) - n)
        return self.text[at:at + n]


def cmd_fill(img, offset, length, seed):
    offset, length = parse_size(offset), parse_size(length)
    g = Garbage(int(seed))
    fd = os.open(img, os.O_WRONLY)
    try:
        done = 0
        while done < length:
            n = min(PIECE, length - done)
            os.pwrite(fd, g.piece(n), offset + done)
            done += n
    finally:
        os.close(fd)


def write_file(path, data_fn, size):
    with open(path, "wb") as f:
        done = 0
        while done < size:
            n = min(PIECE, size - done)
            f.write(data_fn(n))
            done += n


def cmd_random(path, size, seed):
    rng = random.Random(int(seed))
    write_file(path, rng.randbytes, parse_size(size))


def cmd_logs(path, size, seed):
    rng = random.Random(int(seed))
    write_file(path, lambda n: log_text(rng, n), parse_size(size))


def cmd_smallfiles(root, count, seed):
    rng = random.Random(int(seed))
    text = log_text(random.Random(int(seed) + 1), 4 << 20)
    for i in range(int(count)):
        d = os.path.join(root, "%02x" % (i % 64), "%02x" % (i // 64 % 16))
        os.makedirs(d, exist_ok=True)
        size = int(rng.lognormvariate(8.3, 1.0))  # median ~4 KiB
        size = max(200, min(size, 24 << 10))
        if rng.random() < 0.7:
            at = rng.randrange(0, len(text) - size)
            data = text[at:at + size]
            name = "msg-%06d.txt" % i
        else:
            data = rng.randbytes(size)
            name = "obj-%06d.bin" % i
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def cmd_tree_list(budget, *roots):
    budget = parse_size(budget)
    used = 0
    seen = set()  # hard links cost once (tar keeps them linked)
    out = sys.stdout.buffer
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    cost = 0
                elif stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IROTH:
                    # Only world-readable files: no keys, shadow files or other secrets.
                    ino = (st.st_dev, st.st_ino)
                    cost = 0 if ino in seen else (st.st_size + BLOCK - 1) // BLOCK * BLOCK
                    seen.add(ino)
                else:
                    continue
                if used + cost > budget:
                    return
                used += cost
                out.write(path.encode() + b"\0")


def cmd_change(img, percent, seed, kind):
    size = os.path.getsize(img)
    nblocks = size // BLOCK
    count = round(nblocks * float(percent) / 100)
    rng = random.Random(int(seed))
    blocks = sorted(rng.sample(range(nblocks), count))
    if kind == "random":
        data = lambda: rng.randbytes(BLOCK)  # noqa: E731
    elif kind == "text":
        # Slices of a 32 MiB log at random offsets: text that compresses like real logs.
        pool = log_text(random.Random(int(seed) ^ 0x7E47), 32 << 20)
        data = lambda: pool[(at := rng.randrange(len(pool) - BLOCK)):at + BLOCK]  # noqa: E731
    else:
        sys.exit("change: KIND is random or text")
    fd = os.open(img, os.O_WRONLY)
    try:
        for b in blocks:
            os.pwrite(fd, data(), b * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)
    print("%d blocks (%d bytes) of %d changed" % (count, count * BLOCK, nblocks))


def bitmap_runs(path):
    """(offset, length) runs of the granules a native BRCBMAP1 bitmap marks (docs/BITMAP.md)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"BRCBMAP1":
        sys.exit("%s: not a BRCBMAP1 bitmap" % path)
    gran = int.from_bytes(data[8:12], "little")
    size = int.from_bytes(data[16:24], "little")
    bits = data[32:]
    runs = []
    for byte_index, byte in enumerate(bits):
        if not byte:
            continue
        for bit in range(8):
            if byte >> bit & 1:
                off = (byte_index * 8 + bit) * gran
                end = min(off + gran, size)
                if runs and runs[-1][0] + runs[-1][1] == off:
                    runs[-1][1] += end - off
                else:
                    runs.append([off, end - off])
    return runs


def cmd_restore(base, target, bitmap):
    with open(base, "rb") as a, open(target, "r+b") as b:
        for off, length in bitmap_runs(bitmap):
            a.seek(off)
            b.seek(off)
            b.write(a.read(length))


def cmd_cmp_extents(src, dst, json_path):
    with open(json_path) as f:
        doc = json.load(f)
    extents = find_extents(doc)
    if extents is None:
        sys.exit("cmp-extents: no extent list in %s" % json_path)
    size = os.path.getsize(src)
    zero = bytes(PIECE)
    bad = 0
    with open(src, "rb") as a, open(dst, "rb") as b:
        at = 0
        for off, length in sorted(extents) + [(size, 0)]:
            # Outside the extents the target must still be zero.
            while at < off:
                n = min(PIECE, off - at)
                b.seek(at)
                if b.read(n) != zero[:n]:
                    print("non-zero target bytes outside the used extents in [%d, %d)" % (at, at + n))
                    bad += 1
                at += n
            end = off + length
            while at < end:
                n = min(PIECE, end - at)
                a.seek(at)
                b.seek(at)
                if a.read(n) != b.read(n):
                    print("used extent differs in [%d, %d)" % (at, at + n))
                    bad += 1
                at += n
            at = max(at, end)
    total = sum(length for _, length in extents)
    if bad:
        sys.exit("cmp-extents: %d differences" % bad)
    print("identical on %d extents (%d bytes), zero elsewhere" % (len(extents), total))


def find_extents(doc):
    """The extent list of a `blockrep blockmap --json` document, as (offset, length) pairs."""
    if isinstance(doc, dict):
        for key in ("extents", "used_extents"):
            if key in doc and isinstance(doc[key], list):
                return [to_pair(e) for e in doc[key]]
        for v in doc.values():
            found = find_extents(v)
            if found is not None:
                return found
    return None


def to_pair(e):
    if isinstance(e, dict):
        off = e.get("offset", e.get("start"))
        if "length" in e or "len" in e:
            return off, e.get("length", e.get("len"))
        return off, e["end"] - off
    return e[0], e[1]


COMMANDS = {
    "fill": cmd_fill,
    "random": cmd_random,
    "logs": cmd_logs,
    "smallfiles": cmd_smallfiles,
    "tree-list": cmd_tree_list,
    "change": cmd_change,
    "restore": cmd_restore,
    "cmp-extents": cmd_cmp_extents,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
