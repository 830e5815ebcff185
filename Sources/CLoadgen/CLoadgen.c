#define _GNU_SOURCE
#include "CLoadgen.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <string.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <linux/openat2.h>

void lg_sleep_until_ns(uint64_t deadline_ns) {
    struct timespec t = { .tv_sec = (time_t)(deadline_ns / 1000000000ull), .tv_nsec = (long)(deadline_ns % 1000000000ull) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {}
}

int lg_epoll_wait_ns(int epfd, struct epoll_event *events, int max_events, int64_t timeout_ns) {
    /* Set once by whichever loop thread first meets a kernel without epoll_pwait2; read by all. */
    static int no_pwait2 = 0;
    int n;
    if (!__atomic_load_n(&no_pwait2, __ATOMIC_RELAXED)) {
        struct timespec t = { .tv_sec = (time_t)(timeout_ns / 1000000000ll), .tv_nsec = (long)(timeout_ns % 1000000000ll) };
        n = epoll_pwait2(epfd, events, max_events, &t, NULL);
        if (n >= 0) return n;
        if (errno != ENOSYS) return errno == EINTR ? 0 : -errno;
        __atomic_store_n(&no_pwait2, 1, __ATOMIC_RELAXED);
    }
    n = epoll_wait(epfd, events, max_events, (int)((timeout_ns + 999999) / 1000000));
    if (n >= 0) return n;
    return errno == EINTR ? 0 : -errno;
}

int lg_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event = { .events = events, .data.u64 = data };
    return epoll_ctl(epfd, op, fd, &event) == 0 ? 0 : -errno;
}

int lg_syncfs(int fd) {
    return syncfs(fd) == 0 ? 0 : -errno;
}

void lg_set_thread_name(const char *name) {
    char buf[16];
    int i = 0;
    for (; name[i] && i < 15; i++) buf[i] = name[i];
    buf[i] = 0;
    pthread_setname_np(pthread_self(), buf);
}

int lg_open_directory_nofollow(int dirfd, const char *name) {
    return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

int64_t lg_fs_type(int fd) {
    struct statfs s;
    if (fstatfs(fd, &s) != 0) return 0;
    return (int64_t)s.f_type;
}

int lg_create_file(int dirfd, const char *path, int exclusive) {
    int flags = O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (exclusive ? O_EXCL : O_TRUNC);
    int fd = openat(dirfd, path, flags, 0644);
    return fd >= 0 ? fd : -errno;
}

int lg_write_all(int fd, const void *bytes, uint64_t count) {
    const char *p = bytes;
    while (count > 0) {
        ssize_t n = write(fd, p, count > 0x40000000ull ? 0x40000000ull : (size_t)count);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) return -EIO;
        p += n;
        count -= (uint64_t)n;
    }
    return 0;
}

static int open_beneath_walk(int rootfd, const char *path) {
    char *copy = strdup(path);
    if (!copy) return -ENOMEM;
    int fd = dup(rootfd);
    if (fd < 0) { free(copy); return -errno; }
    char *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (strcmp(part, ".") == 0) continue;
        if (strcmp(part, "..") == 0) { close(fd); free(copy); return -EXDEV; }
        int next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        close(fd);
        if (next < 0) { free(copy); return -saved; }
        fd = next;
    }
    free(copy);
    return fd;
}

int lg_open_directory_beneath(int rootfd, const char *path) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const char *p = (path[0] == 0) ? "." : path;
    long fd = syscall(SYS_openat2, rootfd, p, &how, sizeof how);
    if (fd >= 0) return (int)fd;
    if (errno == ENOSYS || errno == EPERM) return open_beneath_walk(rootfd, p);
    return -errno;
}
