#define _GNU_SOURCE
#include "CLoadgenRing.h"
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct lg_ring {
    struct io_uring ring;
};

int lg_ring_create(lg_ring **out, unsigned entries, unsigned files, const char **why) {
    *out = NULL;
    *why = "";
    struct io_uring_probe *probe = io_uring_get_probe();
    if (!probe) {
        *why = "io_uring is not available (disabled by the kernel, a sysctl, or a seccomp filter)";
        return -ENOSYS;
    }
    int ops[] = { IORING_OP_OPENAT, IORING_OP_WRITE, IORING_OP_FSYNC, IORING_OP_CLOSE, IORING_OP_UNLINKAT };
    for (unsigned i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (!io_uring_opcode_supported(probe, ops[i])) {
            io_uring_free_probe(probe);
            *why = "the kernel's io_uring lacks an operation the write engine needs (Linux 5.19 or later is)";
            return -EOPNOTSUPP;
        }
    }
    io_uring_free_probe(probe);
    lg_ring *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    // Completions from io-wq workers are run as task work in this (the only submitting) thread when it waits,
    // rather than waking it for each: far fewer wakeups (Linux 6.1+; older kernels get the default setup).
    int rc = io_uring_queue_init(entries, &r->ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (rc == -EINVAL) rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) {
        free(r);
        *why = "io_uring_setup failed";
        return rc;
    }

    // File creation always runs in io-wq workers (O_CREAT cannot be done without blocking). Workers sleep on the
    // directory's lock, so one per core leaves cores idle; many more only queue on the lock and on each other.
    // Twice the cores did best in runs with the cap set by hand on this 2-core machine (100,000 2-byte files on tmpfs,
    // 64 in flight: medians about 0.71 of the 2-thread C limit with 2 workers, about 0.76 with 4; noisy, few rounds).
    unsigned cpus = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    unsigned cap = cpus ? 2 * cpus : 2;
    unsigned limits[2] = { cap, cap };
    io_uring_register_iowq_max_workers(&r->ring, limits);
    io_uring_register_ring_fd(&r->ring);
    rc = io_uring_register_files_sparse(&r->ring, files);
    if (rc < 0) {
        io_uring_queue_exit(&r->ring);
        free(r);
        *why = "registering direct file slots failed (Linux 5.19 or later is needed)";
        return rc;
    }
    *out = r;
    return 0;
}

void lg_ring_destroy(lg_ring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);
    free(r);
}

int lg_ring_queue_create(lg_ring *r, int dirfd, const char *path, unsigned slot, const void *content,
                         uint64_t length, uint64_t piece, int fsync_each, uint64_t tag) {
    uint64_t pieces = length == 0 ? 0 : (length + piece - 1) / piece;
    if (pieces > 250) return -E2BIG;
    unsigned needed = 2 + (unsigned)pieces + (fsync_each ? 1 : 0);
    if (io_uring_sq_space_left(&r->ring) < needed) return -EBUSY;

    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    // No O_CLOEXEC: a direct descriptor is in no file table, and the kernel refuses the flag with a slot.
    io_uring_prep_openat_direct(sqe, dirfd, path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, 0644, slot);
    // O_CREAT always goes to an io-wq worker: say so at once rather than after a non-blocking attempt. Every step
    // posts a completion: skipping successful ones (IOSQE_CQE_SKIP_SUCCESS) lost the close's completion of chains
    // whose write failed on a full disk, leaving them in flight forever.
    sqe->flags |= IOSQE_IO_LINK | IOSQE_ASYNC;
    io_uring_sqe_set_data64(sqe, tag);

    for (uint64_t i = 0; i < pieces; i++) {
        uint64_t offset = i * piece;
        uint64_t size = length - offset < piece ? length - offset : piece;
        sqe = io_uring_get_sqe(&r->ring);
        io_uring_prep_write(sqe, (int)slot, content, (unsigned)size, offset);
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
        io_uring_sqe_set_data64(sqe, tag | (i + 1));
    }
    if (fsync_each) {
        sqe = io_uring_get_sqe(&r->ring);
        io_uring_prep_fsync(sqe, (int)slot, 0);
        sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;
        io_uring_sqe_set_data64(sqe, tag | 254);
    }
    sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_close_direct(sqe, slot);
    io_uring_sqe_set_data64(sqe, tag | 255);
    return (int)needed;
}

int lg_ring_queue_unlink(lg_ring *r, int dirfd, const char *path, uint64_t tag) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_unlinkat(sqe, dirfd, path, 0);
    io_uring_sqe_set_data64(sqe, tag);
    return 1;
}

int lg_ring_submit(lg_ring *r, unsigned wait) {
    int rc;
    do {
        rc = io_uring_submit_and_wait(&r->ring, wait);
    } while (rc == -EINTR);
    return rc < 0 ? rc : 0;
}

unsigned lg_ring_reap(lg_ring *r, uint64_t *tags, int32_t *results, unsigned max) {
    struct io_uring_cqe *cqe;
    unsigned head, count = 0;
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        if (count == max) break;
        tags[count] = io_uring_cqe_get_data64(cqe);
        results[count] = cqe->res;
        count++;
    }
    io_uring_cq_advance(&r->ring, count);
    return count;
}
