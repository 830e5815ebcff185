// cphases: the physical-limit baseline for the small-file benchmark's phases, the system calls loadgen makes.
// T threads share F files of S bytes in one fresh directory DIR, each thread its own contiguous share; the phases run
// one after another, each timed from the first thread's start to the last thread's end:
//   create  openat(dirfd, name, O_CREAT|O_EXCL|O_WRONLY|O_NOFOLLOW|O_CLOEXEC), write S bytes, close
//   stat    fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW), its size checked
//   read    openat(dirfd, name, O_RDONLY|O_CLOEXEC|O_NOFOLLOW), read to the end (64 KiB reads), close
//   remove  unlinkat(dirfd, name, 0)
// Names are 86 URL-safe characters + ".txt" (loadgen's length), computed from the file's index so every phase
// finds create's files; each operation is timed with CLOCK_MONOTONIC, as a load generator that reports latency must.
// Prints one line per phase: "cphases phase=P threads=T files=F seconds=X files_per_s=Y".
// Build: cc -O2 -pthread -o cphases cphases.c      Run: ./cphases DIR FILES THREADS SIZE
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int dirfd_, nthreads, size, phase;
static long total;
static char *content;
static uint64_t worst[1024];
static pthread_barrier_t barrier;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void name(long index, char *out) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(index + 1);
    for (int k = 0; k < 86; k++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        out[k] = alphabet[x & 63];
    }
    memcpy(out + 86, ".txt", 5);
}

static void *worker(void *arg) {
    long id = (long)arg;
    long per = total / nthreads, extra = total % nthreads;
    long first = id * per + (id < extra ? id : extra), count = per + (id < extra);
    char path[96], buffer[65536];
    struct stat st;
    pthread_barrier_wait(&barrier);
    for (long i = first; i < first + count; i++) {
        name(i, path);
        uint64_t t0 = now_ns();
        if (phase == 0) {
            int fd = openat(dirfd_, path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (fd < 0) { perror("openat"); exit(1); }
            if (size > 0 && write(fd, content, size) != size) { perror("write"); exit(1); }
            close(fd);
        } else if (phase == 1) {
            if (fstatat(dirfd_, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_size != size) { perror("fstatat"); exit(1); }
        } else if (phase == 2) {
            int fd = openat(dirfd_, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) { perror("openat"); exit(1); }
            long got = 0;
            ssize_t n;
            while ((n = read(fd, buffer, sizeof buffer)) > 0) got += n;
            if (n < 0 || got != size) { perror("read"); exit(1); }
            close(fd);
        } else {
            if (unlinkat(dirfd_, path, 0) != 0) { perror("unlinkat"); exit(1); }
        }
        uint64_t d = now_ns() - t0;
        if (d > worst[id]) worst[id] = d;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: cphases DIR FILES THREADS SIZE\n"); return 2; }
    total = atol(argv[2]); nthreads = atoi(argv[3]); size = atoi(argv[4]);
    if (nthreads < 1 || nthreads > 1024 || total < 1 || size < 0) { fprintf(stderr, "cphases: bad arguments\n"); return 2; }
    if (mkdir(argv[1], 0755) != 0) { perror("mkdir"); return 1; }
    dirfd_ = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd_ < 0) { perror("open"); return 1; }
    content = malloc(size + 1);
    memset(content, 'x', size + 1);
    static const char *names[] = { "create", "stat", "read", "remove" };
    for (phase = 0; phase < 4; phase++) {
        pthread_t threads[1024];
        pthread_barrier_init(&barrier, NULL, nthreads + 1);
        for (long t = 0; t < nthreads; t++) pthread_create(&threads[t], NULL, worker, (void *)t);
        pthread_barrier_wait(&barrier);
        uint64_t start = now_ns();
        for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
        double seconds = (double)(now_ns() - start) / 1e9;
        pthread_barrier_destroy(&barrier);
        printf("cphases phase=%s threads=%d files=%ld seconds=%.4f files_per_s=%.0f\n", names[phase], nthreads, total,
               seconds, (double)total / seconds);
    }
    close(dirfd_);
    rmdir(argv[1]);
    return 0;
}
