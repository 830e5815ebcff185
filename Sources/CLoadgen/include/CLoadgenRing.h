// CLoadgenRing: the io_uring engine's system calls, made directly (no liburing), behind a few plain functions.
#ifndef CLOADGEN_RING_H
#define CLOADGEN_RING_H

#include <stddef.h>
#include <stdint.h>

/// An io_uring with `files` registered ("direct") file slots.
typedef struct lg_ring lg_ring;

/// Makes a ring of `entries` submission entries and `files` sparse registered file slots, after checking the kernel
/// supports every operation the write engine uses. Returns 0 or -errno; on failure *why names what was missing.
int lg_ring_create(lg_ring **out, unsigned entries, unsigned files, const char **why);

void lg_ring_destroy(lg_ring *ring);

/// Queues one file's chain: openat into registered slot `slot` (linked) -> writes of `length` bytes from `content`
/// in pieces of at most `piece` (hard-linked) -> fsync if asked (hard-linked) -> close of the slot. Hard links keep
/// the close running when a write fails, so the slot is always released. Every entry carries `tag` with its step in
/// the low byte (0 open, 1.. writes, 254 fsync, 255 close). Returns the number of entries queued (completions to
/// expect) or -EBUSY when the submission queue has no room for the chain.
int lg_ring_queue_create(lg_ring *ring, int dirfd, const char *path, unsigned slot, const void *content,
                         uint64_t length, uint64_t piece, int fsync_each, uint64_t tag);

/// Queues an unlinkat of `path` under `dirfd`. Returns 1 or -EBUSY.
int lg_ring_queue_unlink(lg_ring *ring, int dirfd, const char *path, uint64_t tag);

/// Queues a statx of `path` under `dirfd` (size and type; symlinks not followed) into `statxbuf`, which must hold
/// lg_statx_bytes() bytes and stay put until the completion. Returns 1 or -EBUSY.
int lg_ring_queue_statx(lg_ring *ring, int dirfd, const char *path, void *statxbuf, uint64_t tag);
size_t lg_statx_bytes(void);
uint64_t lg_statx_size(const void *statxbuf);

/// Queues one file's read-back: openat read-only into slot `slot` (linked) -> reads of `length` bytes in pieces of
/// at most `piece` (hard-linked; into `buffer` at each piece's offset when `advance`, else all into its start) -> a
/// 1-byte read past the end, which finds nothing in a file of the expected size (step 253) -> close. Steps in the
/// tag's low byte: 0 open, 1.. reads, 253 the probe, 255 close. With `advance` the buffer holds length + 1 bytes;
/// without, piece bytes. Returns the entries queued or -EBUSY.
int lg_ring_queue_read(lg_ring *ring, int dirfd, const char *path, unsigned slot, void *buffer, int advance,
                       uint64_t length, uint64_t piece, uint64_t tag);

/// Submits what is queued and waits for at least `wait` completions. Returns 0 or -errno.
int lg_ring_submit(lg_ring *ring, unsigned wait);

/// Takes up to `max` completions: their tags and results. Returns how many.
unsigned lg_ring_reap(lg_ring *ring, uint64_t *tags, int32_t *results, unsigned max);

#endif
