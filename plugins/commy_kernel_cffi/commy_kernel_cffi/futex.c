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

/* Sleep while *word == expected, at most timeout_ns; the word's value afterwards, or
 * -errno for a failure other than a timeout, a changed word or a signal. */
int64_t commy_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    uint32_t now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (now != expected)
        return now;
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
