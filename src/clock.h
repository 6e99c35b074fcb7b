/* Time, one way: the monotonic clock in seconds, seconds as a timespec, and the pause
   instruction of a spin loop. */
#ifndef FORAGE_CLOCK_H
#define FORAGE_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock. */
double now_seconds(void);

/* A duration or an absolute time of s seconds (s >= 0, finite) as a timespec, with
   tv_nsec always below 1e9. */
struct timespec seconds_to_timespec(double s);

/* Tells the processor this is a spin-wait loop. */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
