// CLoadgen: the few Linux calls Swift's Glibc module hides (GNU extensions) or makes slow to reach.
#ifndef CLOADGEN_H
#define CLOADGEN_H

#include <stdint.h>
#include <time.h>
#include <errno.h>
#include <sys/epoll.h>
#include "CLoadgenRing.h"

/// CLOCK_MONOTONIC in nanoseconds: the one clock every duration and latency is measured with.
/// Shared by all processes of a host, so a worker process and its parent compare instants directly.
static inline uint64_t lg_monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch (for records and clock-offset estimates only).
static inline uint64_t lg_wall_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/// Sleeps until the given CLOCK_MONOTONIC instant (restarting after signals).
void lg_sleep_until_ns(uint64_t deadline_ns);

/// syncfs(2) on the file system holding fd; returns 0 or -errno.
int lg_syncfs(int fd);

/// Names the calling thread (at most 15 characters are kept).
void lg_set_thread_name(const char *name);

/// openat with O_NOFOLLOW|O_DIRECTORY|O_CLOEXEC|O_PATH-free read access: a directory handle that refuses symlinks.
int lg_open_directory_nofollow(int dirfd, const char *name);

/// The file-system magic number of the file system holding fd (statfs f_type), or 0 on failure.
int64_t lg_fs_type(int fd);

/// Creates `path` (relative to `dirfd`) for writing; with `exclusive`, an existing file is an error (EEXIST).
/// Returns the descriptor or -errno.
int lg_create_file(int dirfd, const char *path, int exclusive);

/// Writes all `count` bytes (restarting after EINTR and short writes); returns 0 or -errno.
int lg_write_all(int fd, const void *bytes, uint64_t count);

/// Opens the directory `path` beneath `rootfd`, refusing any symlink and any escape from the root
/// (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS; on kernels without openat2, a walk with O_NOFOLLOW on each
/// component). Returns the descriptor or -errno.
int lg_open_directory_beneath(int rootfd, const char *path);

/// The epoll event bits, as plain constants (Swift's Glibc module has no sys/epoll.h).
static const uint32_t LG_EPOLLIN = EPOLLIN;
static const uint32_t LG_EPOLLOUT = EPOLLOUT;
static const int LG_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
static const int LG_EPOLL_CTL_MOD = EPOLL_CTL_MOD;

/// A close-on-exec epoll instance, or -errno.
static inline int lg_epoll_create(void) { int fd = epoll_create1(EPOLL_CLOEXEC); return fd >= 0 ? fd : -errno; }

/// epoll_wait with a timeout in nanoseconds (epoll_pwait2; on kernels before 5.11, epoll_wait rounded up to the
/// millisecond). Returns the number of events, or -errno (EINTR comes back as 0 events).
int lg_epoll_wait_ns(int epfd, struct epoll_event *events, int max_events, int64_t timeout_ns);

/// Adds (op EPOLL_CTL_ADD) or changes (EPOLL_CTL_MOD) fd's interest with data as its 64-bit cookie; 0 or -errno.
int lg_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);

/// The 64-bit cookie of event i.
static inline uint64_t lg_epoll_event_data(const struct epoll_event *events, int i) { return events[i].data.u64; }

#endif
