/* Futex wait/wake on the low 32 bits of a mapped change-sequence word.
 *
 * Called through cffi, which releases the GIL around each call: a watcher thread that
 * sleeps here costs its process nothing, and on wake-up the only Python work left is
 * the caller's (FACTS: 52-74 us idle vs 97-106 us through ctypes on a 2-vCPU VM).
 * Never FUTEX_PRIVATE_FLAG: waiters and wakers are different processes mapping the same
 * file, and the kernel keys a shared futex by inode + offset.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Poll *word for up to spin_ns (0: not at all), then sleep while *word == expected, at
 * most timeout_ns; the word's value afterwards, or -errno for a failure other than a
 * timeout, a changed word or a signal.
 *
 * The poll is for callers who trade a busy core for latency: a sleeping waiter's wake-up
 * costs a cross-core wake (tens of us on a VM whose idle vCPUs are halted); a polling one
 * sees the store as soon as its cache line arrives. The clock is read every 64 polls. */
int64_t commy_futex_wait(uint32_t *word, uint32_t expected, int64_t spin_ns, int64_t timeout_ns)
{
    uint32_t now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (now != expected)
        return now;
    if (spin_ns > 0) {
        int64_t end = now_ns() + spin_ns;
        for (;;) {
            for (int i = 0; i < 64; i++) {
                now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
                if (now != expected)
                    return now;
                cpu_relax();
            }
            if (now_ns() >= end)
                break;
        }
    }
    struct timespec ts;
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    if (syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0) == -1) {
        int err = errno;
        if (err != EAGAIN && err != ETIMEDOUT && err != EINTR)
            return -err;
    }
    return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}

/* Wake every waiter on the word; how many woke, or -errno. */
int64_t commy_futex_wake(uint32_t *word)
{
    long n = syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    return n == -1 ? -errno : n;
}
