/* Frames over a byte stream (pipe or socket): a 4-byte little-endian length, then the
   payload. Shared by Pipe connections and the pool's worker channels. */
#ifndef FORAGE_FRAME_H
#define FORAGE_FRAME_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "clock.h"

#define FRAME_HEADER 4
#define FRAME_MAX ((size_t)1 << 31)   /* 2 GiB: larger payloads are refused */

/* Incoming bytes, kept across partial reads so that a timeout never loses data. */
typedef struct frame_reader {
    buf in;
    size_t pos;   /* start of the first unconsumed frame */
} frame_reader;

/* Waits until fd has the poll events in `events`; timeout < 0 waits forever.
   Returns 1 when ready, 0 on timeout, -1 on error (errno set). EINTR restarts with the time left. */
int fd_wait(int fd, short events, double timeout);

/* Looks at fds without sleeping, giving the CPU to any other runnable process between
   looks (sched_yield), for up to `seconds`. Returns poll's count (> 0: some are ready, with
   their revents set), 0 when the time ran out, -1 on error. A reply that comes within
   microseconds is then taken without the cost of sleeping and being woken. */
int fds_spin(struct pollfd *fds, unsigned long nfds, double seconds);

/* Writes all n bytes to a blocking or non-blocking fd (waiting for room when needed).
   Returns 0, or -1 with errno set (EPIPE when the reader is gone). */
int fd_write_all(int fd, const char *p, size_t n);

/* Starts a frame in b: a placeholder header whose offset goes in *header_at. */
int frame_begin(buf *b, size_t *header_at);
/* Writes the final length of the frame begun at header_at. Returns -1 when it is too large. */
int frame_end(buf *b, size_t header_at);

/* Reads what fd has (one read call). Returns bytes read, 0 at end of stream, -1 on error
   (errno EAGAIN when a non-blocking fd had nothing). */
long frame_fill(frame_reader *r, int fd);
/* The same without waiting, for a socket: -1 with errno EAGAIN when it had nothing, ENOTSOCK
   on a pipe (then poll first). Saves a poll(2) when a caller would not wait anyway. */
long frame_fill_nowait(frame_reader *r, int fd);
/* Returns 1 and points *p and *n at the next complete frame's payload (consumed), 0 when none is
   complete yet, -1 when the stream is corrupt (a length over FRAME_MAX). */
int frame_next(frame_reader *r, const char **p, size_t *n);
/* frame_next for a peer held to max payload bytes a frame: also returns -3, with the announced
   length in *over, as soon as the next frame's header says more than max. The check comes before
   the payload is read, so a peer cannot make this process buffer what it will refuse.
   max >= FRAME_MAX leaves frame_next's own check alone (-1 over FRAME_MAX, as pipes always had). */
int frame_next_limited(frame_reader *r, size_t max, const char **p, size_t *n, size_t *over);
void frame_reader_free(frame_reader *r);

static inline void put_u32(char *p, uint32_t v) {
    p[0] = (char)(v & 0xff); p[1] = (char)((v >> 8) & 0xff);
    p[2] = (char)((v >> 16) & 0xff); p[3] = (char)((v >> 24) & 0xff);
}
static inline uint32_t get_u32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}
static inline void put_u64(char *p, uint64_t v) {
    put_u32(p, (uint32_t)v); put_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t get_u64(const char *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

#endif
