/*
 * bdsync-like: our own small reimplementation of bdsync's published algorithm, as a same-run
 * reference for `blockrep send --mode delta` (benches/rounds.sh). Not bdsync's code.
 *
 *   bdsync-like diff LOCAL REMOTE DIFF   make DIFF, the blocks of LOCAL that differ on REMOTE
 *   bdsync-like patch TARGET DIFF        write DIFF's blocks into TARGET, then fdatasync
 *
 * The algorithm: a client (LOCAL, the source) and a server (REMOTE, the target) each read the
 * whole device in 4 KiB blocks and compute an MD5 digest per block, both at once; the server
 * sends its digests to the client over a socketpair (the "network"); the client compares them
 * with its own and writes a diff: for each differing block its offset and its data. Bytes on
 * the wire = the server's digests + the diff. `diff` prints one line:
 *
 *   blocks=N differing=M digest_bytes=D diff_bytes=F
 *
 * DIFF format (little-endian): "BDLIKE01", u64 device size, then records {u64 offset,
 * u32 length, length bytes}.
 *
 * Build: gcc -O2 -o bdsync-like bdsync-like.c -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK 4096u
#define BATCH 256u /* blocks per read: 1 MiB */
#define DIGEST 16u /* MD5 */

static void die(const char *what)
{
    fprintf(stderr, "bdsync-like: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void read_full(int fd, void *buf, size_t len, const char *what)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            die(what);
        }
        p += n;
        len -= (size_t)n;
    }
}

static void write_full(int fd, const void *buf, size_t len, const char *what)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(what);
        p += n;
        len -= (size_t)n;
    }
}

static uint64_t device_size(int fd)
{
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0 || lseek(fd, 0, SEEK_SET) < 0)
        die("seek");
    return (uint64_t)end;
}

/* Digests of the blocks in buf (len bytes; the last block may be short). */
static void digest_blocks(EVP_MD_CTX *ctx, const uint8_t *buf, size_t len, uint8_t *out)
{
    for (size_t at = 0, i = 0; at < len; at += BLOCK, i++) {
        size_t n = len - at < BLOCK ? len - at : BLOCK;
        unsigned int dlen = 0;
        if (!EVP_DigestInit_ex(ctx, EVP_md5(), NULL) || !EVP_DigestUpdate(ctx, buf + at, n) ||
            !EVP_DigestFinal_ex(ctx, out + i * DIGEST, &dlen))
            die("md5");
    }
}

/* The server: reads REMOTE, sends one digest per block. */
static void serve(const char *path, int sock)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die(path);
    uint64_t size = device_size(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    write_full(sock, &size, sizeof size, "send size");
    uint8_t *buf = malloc(BATCH * BLOCK), digests[BATCH * DIGEST];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!buf || !ctx)
        die("alloc");
    for (uint64_t at = 0; at < size; at += BATCH * BLOCK) {
        size_t n = size - at < BATCH * BLOCK ? (size_t)(size - at) : BATCH * BLOCK;
        read_full(fd, buf, n, "read remote");
        digest_blocks(ctx, buf, n, digests);
        write_full(sock, digests, (n + BLOCK - 1) / BLOCK * DIGEST, "send digests");
    }
    exit(0);
}

static int cmd_diff(const char *local, const char *remote, const char *diff_path)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(sv[0]);
        serve(remote, sv[1]);
    }
    close(sv[1]);
    int sock = sv[0];

    int fd = open(local, O_RDONLY);
    if (fd < 0)
        die(local);
    uint64_t size = device_size(fd), remote_size;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    read_full(sock, &remote_size, sizeof remote_size, "receive size");
    if (remote_size != size) {
        fprintf(stderr, "bdsync-like: sizes differ (%llu vs %llu)\n", (unsigned long long)size,
                (unsigned long long)remote_size);
        return 1;
    }
    FILE *out = fopen(diff_path, "wb");
    if (!out)
        die(diff_path);
    static char outbuf[4 << 20];
    setvbuf(out, outbuf, _IOFBF, sizeof outbuf);
    fwrite("BDLIKE01", 1, 8, out);
    fwrite(&size, sizeof size, 1, out);

    uint8_t *buf = malloc(BATCH * BLOCK), mine[BATCH * DIGEST], theirs[BATCH * DIGEST];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!buf || !ctx)
        die("alloc");
    uint64_t blocks = 0, differing = 0, digest_bytes = sizeof remote_size, diff_bytes = 16;
    for (uint64_t at = 0; at < size; at += BATCH * BLOCK) {
        size_t n = size - at < BATCH * BLOCK ? (size_t)(size - at) : BATCH * BLOCK;
        size_t count = (n + BLOCK - 1) / BLOCK;
        read_full(fd, buf, n, "read local");
        digest_blocks(ctx, buf, n, mine);
        read_full(sock, theirs, count * DIGEST, "receive digests");
        digest_bytes += count * DIGEST;
        for (size_t i = 0; i < count; i++) {
            if (memcmp(mine + i * DIGEST, theirs + i * DIGEST, DIGEST) == 0)
                continue;
            uint64_t off = at + i * BLOCK;
            uint32_t len = (uint32_t)(n - i * BLOCK < BLOCK ? n - i * BLOCK : BLOCK);
            fwrite(&off, sizeof off, 1, out);
            fwrite(&len, sizeof len, 1, out);
            fwrite(buf + i * BLOCK, 1, len, out);
            diff_bytes += sizeof off + sizeof len + len;
            differing++;
        }
        blocks += count;
    }
    if (fflush(out) != 0 || ferror(out) || fclose(out) != 0)
        die("write diff");
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bdsync-like: server failed\n");
        return 1;
    }
    printf("blocks=%llu differing=%llu digest_bytes=%llu diff_bytes=%llu\n",
           (unsigned long long)blocks, (unsigned long long)differing,
           (unsigned long long)digest_bytes, (unsigned long long)diff_bytes);
    return 0;
}

static int cmd_patch(const char *target, const char *diff_path)
{
    int fd = open(target, O_WRONLY);
    if (fd < 0)
        die(target);
    FILE *in = fopen(diff_path, "rb");
    if (!in)
        die(diff_path);
    static char inbuf[4 << 20];
    setvbuf(in, inbuf, _IOFBF, sizeof inbuf);
    char magic[8];
    uint64_t size;
    if (fread(magic, 1, 8, in) != 8 || memcmp(magic, "BDLIKE01", 8) != 0 ||
        fread(&size, sizeof size, 1, in) != 1) {
        fprintf(stderr, "bdsync-like: %s is not a diff\n", diff_path);
        return 1;
    }
    if (device_size(fd) < size) {
        fprintf(stderr, "bdsync-like: %s is smaller than the diff's device\n", target);
        return 1;
    }
    uint8_t block[BLOCK];
    uint64_t off;
    uint32_t len;
    while (fread(&off, sizeof off, 1, in) == 1) {
        if (fread(&len, sizeof len, 1, in) != 1 || len > BLOCK || off > size - len ||
            fread(block, 1, len, in) != len) {
            fprintf(stderr, "bdsync-like: truncated or bad record in %s\n", diff_path);
            return 1;
        }
        if (pwrite(fd, block, len, (off_t)off) != (ssize_t)len)
            die("write target");
    }
    if (ferror(in))
        die("read diff");
    if (fdatasync(fd) < 0)
        die("fdatasync");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "diff") == 0)
        return cmd_diff(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "patch") == 0)
        return cmd_patch(argv[2], argv[3]);
    fprintf(stderr, "usage: bdsync-like diff LOCAL REMOTE DIFF | bdsync-like patch TARGET DIFF\n");
    return 2;
}
