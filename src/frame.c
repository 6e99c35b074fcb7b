#include "frame.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int fd_wait(int fd, short events, double timeout) {
    double deadline = timeout < 0 ? 0 : now_seconds() + timeout;
    for (;;) {
        int ms = -1;
        if (timeout >= 0) {
            double left = deadline - now_seconds();
            /* poll takes an int of milliseconds: a longer wait is made of several. */
            double want = left <= 0 ? 0 : left * 1000.0 + 0.999;
            ms = want < INT_MAX ? (int)want : INT_MAX;
        }
        struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
        int rc = poll(&pfd, 1, ms);
        if (rc > 0) return 1;
        if (rc == 0 && (ms < INT_MAX || now_seconds() >= deadline)) return 0;
        if (rc < 0 && errno != EINTR) return -1;
    }
}

int fds_spin(struct pollfd *fds, unsigned long nfds, double seconds) {
    double until = now_seconds() + seconds;
    for (;;) {
        int rc = poll(fds, (nfds_t)nfds, 0);
        if (rc != 0 && !(rc < 0 && errno == EINTR)) return rc;
        if (now_seconds() >= until) return 0;
        sched_yield();
    }
}

int fd_write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            if (fd_wait(fd, POLLOUT, -1) < 0) return -1;
        } else if (w < 0 && errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

int frame_begin(buf *b, size_t *header_at) {
    *header_at = b->len;
    char zero[FRAME_HEADER] = {0};
    return buf_append(b, zero, FRAME_HEADER);
}

int frame_end(buf *b, size_t header_at) {
    size_t n = b->len - header_at - FRAME_HEADER;
    if (n > FRAME_MAX) return -1;
    put_u32(b->data + header_at, (uint32_t)n);
    return 0;
}

/* One read into r: with nowait, recv(MSG_DONTWAIT) on a socket (ENOTSOCK on a pipe). */
static long fill(frame_reader *r, int fd, int nowait) {
    /* Compact first, so the buffer does not grow with consumed frames. */
    if (r->pos > 0) {
        size_t left = r->in.len - r->pos;
        if (left > 0) memmove(r->in.data, r->in.data + r->pos, left);
        r->in.len = left;
        r->pos = 0;
    }
    size_t want = 64 * 1024;
    if (r->in.len >= FRAME_HEADER) {
        size_t need = FRAME_HEADER + (size_t)get_u32(r->in.data);
        if (need > r->in.len && need - r->in.len > want && need <= FRAME_MAX) want = need - r->in.len;
    }
    if (buf_reserve(&r->in, want) != 0) {
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        ssize_t got = nowait ? recv(fd, r->in.data + r->in.len, r->in.cap - r->in.len, MSG_DONTWAIT)
                             : read(fd, r->in.data + r->in.len, r->in.cap - r->in.len);
        if (got >= 0) {
            r->in.len += (size_t)got;
            return (long)got;
        }
        if (errno != EINTR) return -1;
    }
}

long frame_fill(frame_reader *r, int fd) { return fill(r, fd, 0); }

long frame_fill_nowait(frame_reader *r, int fd) { return fill(r, fd, 1); }

int frame_next(frame_reader *r, const char **p, size_t *n) {
    size_t avail = r->in.len - r->pos;
    if (avail < FRAME_HEADER) return 0;
    size_t len = get_u32(r->in.data + r->pos);
    if (len > FRAME_MAX) return -1;
    if (avail - FRAME_HEADER < len) return 0;
    *p = r->in.data + r->pos + FRAME_HEADER;
    *n = len;
    r->pos += FRAME_HEADER + len;
    return 1;
}

int frame_next_limited(frame_reader *r, size_t max, const char **p, size_t *n, size_t *over) {
    if (max < FRAME_MAX && r->in.len - r->pos >= FRAME_HEADER) {
        size_t len = get_u32(r->in.data + r->pos);
        if (len > max) {
            *over = len;
            return -3;
        }
    }
    return frame_next(r, p, n);
}

void frame_reader_free(frame_reader *r) {
    buf_free(&r->in);
    r->pos = 0;
}
