#define _GNU_SOURCE
#include "CLoadgenRing.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

// The ring through the kernel's own interface (<linux/io_uring.h> and three system calls), so building loadgen needs
// no liburing. What liburing did for us is here, in the same order: set the ring up, map its queues, probe the
// operations, and move the queue heads and tails with the memory ordering the kernel expects (the application
// release-stores the SQ tail and CQ head it owns and acquire-loads the CQ tail and SQ head the kernel owns).

struct lg_ring {
    int fd;              // the ring's descriptor
    int enter_fd;        // what io_uring_enter is given: fd, or its registered index
    unsigned enter_flags;  // IORING_ENTER_REGISTERED_RING when enter_fd is an index
    int registered;      // the ring descriptor is registered (and must be unregistered before closing)

    // Submission queue: the kernel's head, our tail, the index array and the entries.
    unsigned *sq_head, *sq_tail, *sq_flags, *sq_array;
    unsigned sq_mask, sq_entries;
    unsigned sqe_tail;   // entries handed out by get_sqe and not yet published in *sq_tail
    struct io_uring_sqe *sqes;

    // Completion queue: our head, the kernel's tail and the entries.
    unsigned *cq_head, *cq_tail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;

    void *sq_map, *cq_map;
    size_t sq_map_size, cq_map_size, sqes_size;
};

static int sys_setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned submit, unsigned complete, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr) {
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
}

static void unmap(lg_ring *r) {
    if (r->sqes && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_size);
    if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_map_size);
    if (r->sq_map && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_size);
}

static void release(lg_ring *r) {
    if (r->registered) {
        // A registered ring descriptor holds the ring open from this thread's table: drop it before closing.
        struct io_uring_rsrc_update up = { .offset = (unsigned)r->enter_fd };
        sys_register(r->fd, IORING_UNREGISTER_RING_FDS, &up, 1);
    }
    unmap(r);
    close(r->fd);
    free(r);
}

/// Maps the two queues (one mapping when the kernel offers IORING_FEAT_SINGLE_MMAP) and the entries.
static int map_rings(lg_ring *r, const struct io_uring_params *p) {
    r->sq_map_size = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    r->cq_map_size = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    int single = (p->features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) {
        if (r->cq_map_size > r->sq_map_size) r->sq_map_size = r->cq_map_size;
        r->cq_map_size = r->sq_map_size;
    }
    r->sq_map = mmap(NULL, r->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) return -errno;
    if (single) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) return -errno;
    }
    r->sqes_size = p->sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) return -errno;

    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p->sq_off.head);
    r->sq_tail = (unsigned *)(sq + p->sq_off.tail);
    r->sq_flags = (unsigned *)(sq + p->sq_off.flags);
    r->sq_array = (unsigned *)(sq + p->sq_off.array);
    r->sq_mask = *(unsigned *)(sq + p->sq_off.ring_mask);
    r->sq_entries = *(unsigned *)(sq + p->sq_off.ring_entries);
    r->cq_head = (unsigned *)(cq + p->cq_off.head);
    r->cq_tail = (unsigned *)(cq + p->cq_off.tail);
    r->cq_mask = *(unsigned *)(cq + p->cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
    // Entry i of the submission ring always names entry i of the array: entries are used in order.
    for (unsigned i = 0; i < r->sq_entries; i++) r->sq_array[i] = i;
    r->sqe_tail = *r->sq_tail;
    return 0;
}

/// Whether the ring's kernel has every operation in `ops`, by IORING_REGISTER_PROBE. 1, 0, or -errno.
static int supports(lg_ring *r, const int *ops, unsigned count) {
    const unsigned slots = 256;
    struct io_uring_probe *probe = calloc(1, sizeof *probe + slots * sizeof(struct io_uring_probe_op));
    if (!probe) return -ENOMEM;
    if (sys_register(r->fd, IORING_REGISTER_PROBE, probe, slots) < 0) {
        int e = -errno;
        free(probe);
        return e;
    }
    int ok = 1;
    for (unsigned i = 0; i < count; i++) {
        if (ops[i] > probe->last_op || !(probe->ops[ops[i]].flags & IO_URING_OP_SUPPORTED)) ok = 0;
    }
    free(probe);
    return ok;
}

int lg_ring_create(lg_ring **out, unsigned entries, unsigned files, const char **why) {
    *out = NULL;
    *why = "";
    lg_ring *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;

    // Completions from io-wq workers are run as task work in this (the only submitting) thread when it waits,
    // rather than waking it for each: far fewer wakeups (Linux 6.1+; older kernels get the default setup).
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int fd = sys_setup(entries, &p);
    if (fd < 0 && errno == EINVAL) {
        memset(&p, 0, sizeof p);
        fd = sys_setup(entries, &p);
    }
    if (fd < 0) {
        int e = errno;
        free(r);
        *why = (e == ENOSYS || e == EPERM)
            ? "io_uring is not available (disabled by the kernel, a sysctl, or a seccomp filter)"
            : "io_uring_setup failed";
        return -e;
    }
    r->fd = fd;
    r->enter_fd = fd;
    int rc = map_rings(r, &p);
    if (rc < 0) {
        release(r);
        *why = "mapping the io_uring queues failed";
        return rc;
    }

    int ops[] = { IORING_OP_OPENAT, IORING_OP_WRITE, IORING_OP_FSYNC, IORING_OP_CLOSE, IORING_OP_UNLINKAT,
                  IORING_OP_STATX, IORING_OP_READ };
    rc = supports(r, ops, sizeof ops / sizeof ops[0]);
    if (rc <= 0) {
        release(r);
        *why = "the kernel's io_uring lacks an operation the write engine needs (Linux 5.19 or later is)";
        return rc < 0 ? rc : -EOPNOTSUPP;
    }

    // File creation always runs in io-wq workers (O_CREAT cannot be done without blocking). Workers sleep on the
    // directory's lock, so one per core leaves cores idle; many more only queue on the lock and on each other.
    // Twice the cores did best in runs with the cap set by hand on this 2-core machine (100,000 2-byte files on tmpfs,
    // 64 in flight: medians about 0.71 of the 2-thread C limit with 2 workers, about 0.76 with 4; noisy, few rounds).
    unsigned cpus = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    unsigned cap = cpus ? 2 * cpus : 2;
    unsigned limits[2] = { cap, cap };
    sys_register(r->fd, IORING_REGISTER_IOWQ_MAX_WORKERS, limits, 2);

    // A registered ring descriptor spares each io_uring_enter the descriptor table look-up (Linux 5.18+; optional).
    struct io_uring_rsrc_update up = { .offset = -1U, .data = (uint64_t)r->fd };
    if (sys_register(r->fd, IORING_REGISTER_RING_FDS, &up, 1) == 1) {
        r->registered = 1;
        r->enter_fd = (int)up.offset;
        r->enter_flags = IORING_ENTER_REGISTERED_RING;
    }

    struct io_uring_rsrc_register files_reg;
    memset(&files_reg, 0, sizeof files_reg);
    files_reg.nr = files;
    files_reg.flags = IORING_RSRC_REGISTER_SPARSE;
    if (sys_register(r->fd, IORING_REGISTER_FILES2, &files_reg, sizeof files_reg) < 0) {
        int e = errno;
        release(r);
        *why = "registering direct file slots failed (Linux 5.19 or later is needed)";
        return -e;
    }
    *out = r;
    return 0;
}

void lg_ring_destroy(lg_ring *r) {
    if (!r) return;
    release(r);
}

static unsigned sq_space_left(const lg_ring *r) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    return r->sq_entries - (r->sqe_tail - head);
}

/// The next free submission entry, zeroed, or NULL when the queue is full.
static struct io_uring_sqe *get_sqe(lg_ring *r) {
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (r->sqe_tail - head >= r->sq_entries) return NULL;
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof *sqe);
    return sqe;
}

int lg_ring_queue_create(lg_ring *r, int dirfd, const char *path, unsigned slot, const void *content,
                         uint64_t length, uint64_t piece, int fsync_each, uint64_t tag) {
    uint64_t pieces = length == 0 ? 0 : (length + piece - 1) / piece;
    if (pieces > 250) return -E2BIG;
    unsigned needed = 2 + (unsigned)pieces + (fsync_each ? 1 : 0);
    if (sq_space_left(r) < needed) return -EBUSY;

    struct io_uring_sqe *sqe = get_sqe(r);
    // No O_CLOEXEC: a direct descriptor is in no file table, and the kernel refuses the flag with a slot.
    sqe->opcode = IORING_OP_OPENAT;
    sqe->fd = dirfd;
    sqe->addr = (uint64_t)(uintptr_t)path;
    sqe->len = 0644;
    sqe->open_flags = O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW;
    sqe->file_index = slot + 1;  // a direct open names its slot plus one (0 means an ordinary descriptor)
    // O_CREAT always goes to an io-wq worker: say so at once rather than after a non-blocking attempt. Every step
    // posts a completion: skipping successful ones (IOSQE_CQE_SKIP_SUCCESS) lost the close's completion of chains
    // whose write failed on a full disk, leaving them in flight forever.
    sqe->flags = IOSQE_IO_LINK | IOSQE_ASYNC;
    sqe->user_data = tag;

    for (uint64_t i = 0; i < pieces; i++) {
        uint64_t offset = i * piece;
        uint64_t size = length - offset < piece ? length - offset : piece;
        sqe = get_sqe(r);
        sqe->opcode = IORING_OP_WRITE;
        sqe->fd = (int)slot;
        sqe->addr = (uint64_t)(uintptr_t)content;
        sqe->len = (unsigned)size;
        sqe->off = offset;
        sqe->flags = IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
        sqe->user_data = tag | (i + 1);
    }
    if (fsync_each) {
        sqe = get_sqe(r);
        sqe->opcode = IORING_OP_FSYNC;
        sqe->fd = (int)slot;
        sqe->flags = IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
        sqe->user_data = tag | 254;
    }
    sqe = get_sqe(r);
    sqe->opcode = IORING_OP_CLOSE;
    sqe->file_index = slot + 1;
    sqe->user_data = tag | 255;
    return (int)needed;
}

int lg_ring_queue_unlink(lg_ring *r, int dirfd, const char *path, uint64_t tag) {
    struct io_uring_sqe *sqe = get_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = IORING_OP_UNLINKAT;
    sqe->fd = dirfd;
    sqe->addr = (uint64_t)(uintptr_t)path;
    sqe->user_data = tag;
    return 1;
}

int lg_ring_queue_statx(lg_ring *r, int dirfd, const char *path, void *statxbuf, uint64_t tag) {
    struct io_uring_sqe *sqe = get_sqe(r);
    if (!sqe) return -EBUSY;
    sqe->opcode = IORING_OP_STATX;
    sqe->fd = dirfd;
    sqe->addr = (uint64_t)(uintptr_t)path;
    sqe->len = STATX_SIZE | STATX_TYPE;
    sqe->statx_flags = AT_SYMLINK_NOFOLLOW;
    sqe->off = (uint64_t)(uintptr_t)statxbuf;  // addr2: where the kernel writes the struct statx
    sqe->user_data = tag;
    return 1;
}

size_t lg_statx_bytes(void) { return sizeof(struct statx); }

uint64_t lg_statx_size(const void *statxbuf) { return ((const struct statx *)statxbuf)->stx_size; }

int lg_ring_queue_read(lg_ring *r, int dirfd, const char *path, unsigned slot, void *buffer, int advance,
                       uint64_t length, uint64_t piece, uint64_t tag) {
    uint64_t pieces = length == 0 ? 0 : (length + piece - 1) / piece;
    if (pieces > 250) return -E2BIG;
    unsigned needed = 3 + (unsigned)pieces;
    if (sq_space_left(r) < needed) return -EBUSY;

    struct io_uring_sqe *sqe = get_sqe(r);
    sqe->opcode = IORING_OP_OPENAT;
    sqe->fd = dirfd;
    sqe->addr = (uint64_t)(uintptr_t)path;
    sqe->open_flags = O_RDONLY | O_NOFOLLOW;
    sqe->file_index = slot + 1;
    sqe->flags = IOSQE_IO_LINK;
    sqe->user_data = tag;

    char *at = buffer;
    for (uint64_t i = 0; i <= pieces; i++) {
        // The pieces, then one more read past the expected end, which must find the end of the file.
        uint64_t offset = i * piece;
        uint64_t size = i == pieces ? 1 : (length - offset < piece ? length - offset : piece);
        sqe = get_sqe(r);
        sqe->opcode = IORING_OP_READ;
        sqe->fd = (int)slot;
        sqe->addr = (uint64_t)(uintptr_t)(advance ? at + offset : at);
        sqe->len = (unsigned)size;
        sqe->off = offset;
        sqe->flags = IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
        sqe->user_data = tag | (i == pieces ? 253 : i + 1);
    }
    sqe = get_sqe(r);
    sqe->opcode = IORING_OP_CLOSE;
    sqe->file_index = slot + 1;
    sqe->user_data = tag | 255;
    return (int)needed;
}

int lg_ring_submit(lg_ring *r, unsigned wait) {
    // Publish the entries queued since the last call: the release store makes them visible before the new tail.
    __atomic_store_n(r->sq_tail, r->sqe_tail, __ATOMIC_RELEASE);
    unsigned flags = r->enter_flags;
    // Waiting, or completions held back (an overflowed CQ, deferred task work): only GETEVENTS posts them.
    unsigned pending = __atomic_load_n(r->sq_flags, __ATOMIC_RELAXED);
    if (wait || (pending & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN))) flags |= IORING_ENTER_GETEVENTS;
    for (;;) {
        // Entries the kernel has not consumed yet (a short submission leaves them in the queue for the next call).
        unsigned submit = r->sqe_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
        int rc = sys_enter(r->enter_fd, submit, wait, flags);
        if (rc >= 0) return 0;
        if (errno != EINTR) return -errno;
    }
}

unsigned lg_ring_reap(lg_ring *r, uint64_t *tags, int32_t *results, unsigned max) {
    unsigned head = *r->cq_head;  // ours alone to move
    unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    unsigned count = 0;
    while (head != tail && count < max) {
        const struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
        tags[count] = cqe->user_data;
        results[count] = cqe->res;
        count++;
        head++;
    }
    // Release: our reads of the entries happen before the kernel may reuse them.
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return count;
}
