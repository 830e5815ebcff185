// uring-chain: the least an io_uring program can do to create small files, as a reference for loadgen's async writes.
// DEPTH linked chains in flight (openat into a direct slot with O_CREAT|O_EXCL -> write SIZE bytes -> close the
// slot), one ring (SINGLE_ISSUER|DEFER_TASKRUN), io-wq workers capped at IOWQ (default twice the cores), names of 86
// random URL-safe characters + ".txt" like loadgen's and cwrite's. No latency histograms, no per-file bookkeeping
// beyond a counter: what is left is the kernel's cost of io_uring file creation.
// Prints one line: "uring-chain depth=D files=F seconds=X files_per_s=Y".
// Build: cc -O2 -o uring-chain uring-chain.c -luring      Run: ./uring-chain DIR FILES DEPTH SIZE
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: uring-chain DIR FILES DEPTH SIZE\n"); return 2; }
    const char *dir = argv[1];
    long files = atol(argv[2]);
    int depth = atoi(argv[3]), size = atoi(argv[4]);
    if (files < 1 || depth < 1 || depth > 4096 || size < 0 || size > (1 << 20)) { fprintf(stderr, "uring-chain: bad arguments\n"); return 2; }
    struct io_uring ring;
    int rc = io_uring_queue_init((unsigned)depth * 4, &ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (rc < 0) { fprintf(stderr, "uring-chain: io_uring_queue_init: %s\n", strerror(-rc)); return 1; }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned workers = getenv("IOWQ") ? (unsigned)atoi(getenv("IOWQ")) : (unsigned)(2 * (cpus > 0 ? cpus : 1));
    unsigned limits[2] = { workers, workers };
    io_uring_register_iowq_max_workers(&ring, limits);
    if ((rc = io_uring_register_files_sparse(&ring, (unsigned)depth)) < 0) { fprintf(stderr, "uring-chain: sparse files: %s\n", strerror(-rc)); return 1; }
    int dfd = open(dir, O_DIRECTORY | O_RDONLY);
    if (dfd < 0) { perror("uring-chain: open DIR"); return 1; }
    char (*names)[96] = malloc((size_t)depth * 96);
    int *left = calloc((size_t)depth, sizeof *left), *free_slots = malloc((size_t)depth * sizeof *free_slots);
    char *content = malloc((size_t)size + 1);
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (int i = 0; i < size; i++) content[i] = alphabet[(i * 7) & 63];
    int nfree = 0;
    for (int i = depth - 1; i >= 0; i--) free_slots[nfree++] = i;
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)(now() * 1e9);
    long next = 0, done = 0;
    double t0 = now();
    while (done < files) {
        while (next < files && nfree > 0) {
            int s = free_slots[--nfree];
            char *p = names[s];
            for (int k = 0; k < 86; k++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[k] = alphabet[x & 63]; }
            memcpy(p + 86, ".txt", 5);
            struct io_uring_sqe *e = io_uring_get_sqe(&ring);
            io_uring_prep_openat_direct(e, dfd, p, O_CREAT | O_EXCL | O_WRONLY, 0644, (unsigned)s);
            e->flags |= IOSQE_IO_LINK | IOSQE_ASYNC;
            io_uring_sqe_set_data64(e, (uint64_t)s);
            left[s] = 2;
            if (size > 0) {
                e = io_uring_get_sqe(&ring);
                io_uring_prep_write(e, s, content, (unsigned)size, 0);
                e->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
                io_uring_sqe_set_data64(e, (uint64_t)s);
                left[s]++;
            }
            e = io_uring_get_sqe(&ring);
            io_uring_prep_close_direct(e, (unsigned)s);
            io_uring_sqe_set_data64(e, (uint64_t)s);
            next++;
        }
        if ((rc = io_uring_submit_and_wait(&ring, 1)) < 0 && rc != -EINTR) { fprintf(stderr, "uring-chain: submit: %s\n", strerror(-rc)); return 1; }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            int s = (int)io_uring_cqe_get_data64(cqe);
            if (cqe->res < 0) { fprintf(stderr, "uring-chain: %s\n", strerror(-cqe->res)); return 1; }
            if (--left[s] == 0) { free_slots[nfree++] = s; done++; }
            n++;
        }
        io_uring_cq_advance(&ring, n);
    }
    double t = now() - t0;
    printf("uring-chain depth=%d files=%ld seconds=%.3f files_per_s=%.0f\n", depth, files, t, (double)files / t);
    return 0;
}
