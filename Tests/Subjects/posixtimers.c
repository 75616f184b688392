/*
 * posixtimers — POSIX timers (timer_create) of every kind, with sparse IDs.
 *
 *   posixtimers --out OUT --pidfile PID
 *
 * Timers (IDs are sparse: 40 spare timers are created first and all but two deleted):
 *   A  CLOCK_MONOTONIC, every 20 ms, SIGRTMIN+1 to the process, si_value VAL_A
 *   C  CLOCK_MONOTONIC, every 25 ms, SIGRTMIN+2 to the worker thread only (SIGEV_THREAD_ID),
 *      si_value VAL_C
 *   B  CLOCK_REALTIME, once in 1000 s, SIGUSR1, si_value VAL_B
 *   D  CLOCK_BOOTTIME, once in 500 s, SIGEV_NONE
 *   E  CLOCK_MONOTONIC, never armed
 *   G  CLOCK_MONOTONIC, once after 1 ms, SIGRTMIN+3 (blocked in every thread), si_value VAL_G:
 *      fired before "ready", its signal stays pending
 *   two spare timers, disarmed
 * Every timer signal is checked as it arrives: si_code SI_TIMER, the timer's ID in si_timerid,
 * its si_value, and (C) the worker's tid. At SIGTERM:
 *   - timer_gettime works on every timer by the ID the process holds (IDs kept) and gives the
 *     interval it was set with; remaining times: A, C within one interval; B, D no more than
 *     set and no less than set minus the time since; E and the spares disarmed;
 *   - A and C still fire at their interval: the expirations (signals + si_overrun) counted in
 *     a 400 ms window are 20 and 16, within 4;
 *   - B never fired;
 *   - G's signal is still pending and is the timer's (SI_TIMER, si_timerid G, VAL_G);
 *   - the PR_TIMER_CREATE_RESTORE_IDS mode a restorer uses to pick IDs is off again (the
 *     prctl reads 0, or EINVAL on kernels without it);
 *   - a new timer can be created and gets an ID of its own.
 */
#include "subject.h"

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define VAL_A 0xA1A1A1A1A1A1A1A1ull
#define VAL_B 0xB2B2B2B2B2B2B2B2ull
#define VAL_C 0xC3C3C3C3C3C3C3C3ull
#define VAL_G 0xD4D4D4D4D4D4D4D4ull
#define SPARES 40
#ifndef PR_TIMER_CREATE_RESTORE_IDS
#define PR_TIMER_CREATE_RESTORE_IDS 77
#define PR_TIMER_CREATE_RESTORE_IDS_GET 2
#endif

static timer_t g_a, g_b, g_c, g_d, g_e, g_g, g_spare[2];
static long g_expired_a, g_expired_c, g_fired_b;
static long g_bad;
static char g_bad_what[256];
static pid_t g_worker_tid;
static volatile int g_worker_stop;

static int timer_id(timer_t t) { return (int)(intptr_t)t; }

static void bad(const char *what, const siginfo_t *info)
{
    if (__atomic_fetch_add(&g_bad, 1, __ATOMIC_SEQ_CST) == 0)
        snprintf(g_bad_what, sizeof(g_bad_what), "%s: signal %d code %d timerid %d value %#llx in thread %d",
                 what, info->si_signo, info->si_code, info->si_timerid,
                 (unsigned long long)(uintptr_t)info->si_value.sival_ptr, (int)syscall(SYS_gettid));
}

static void on_timer(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    uint64_t value = (uintptr_t)info->si_value.sival_ptr;
    if (info->si_code != SI_TIMER) {
        bad("not from a timer", info);
        return;
    }
    if (sig == SIGRTMIN + 1 && info->si_timerid == timer_id(g_a) && value == VAL_A) {
        __atomic_add_fetch(&g_expired_a, 1 + info->si_overrun, __ATOMIC_SEQ_CST);
    } else if (sig == SIGRTMIN + 2 && info->si_timerid == timer_id(g_c) && value == VAL_C) {
        if (syscall(SYS_gettid) != g_worker_tid)
            bad("timer C signal outside the worker thread", info);
        __atomic_add_fetch(&g_expired_c, 1 + info->si_overrun, __ATOMIC_SEQ_CST);
    } else if (sig == SIGUSR1 && info->si_timerid == timer_id(g_b) && value == VAL_B) {
        __atomic_add_fetch(&g_fired_b, 1, __ATOMIC_SEQ_CST);
    } else {
        bad("unexpected timer signal", info);
    }
}

static void *worker(void *arg)
{
    (void)arg;
    g_worker_tid = syscall(SYS_gettid);
    while (!g_worker_stop)
        sleep_ms(5);
    return NULL;
}

static timer_t make_timer(clockid_t clock, int notify, int sig, uint64_t value, pid_t tid)
{
    struct sigevent sev;
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = notify;
    sev.sigev_signo = sig;
    sev.sigev_value.sival_ptr = (void *)(uintptr_t)value;
    sev._sigev_un._tid = tid;
    timer_t t;
    if (timer_create(clock, &sev, &t) != 0)
        die("timer_create(clock %d, notify %d)", (int)clock, notify);
    return t;
}

static void arm(timer_t t, long value_ms, long interval_ms)
{
    struct itimerspec its = {
        { interval_ms / 1000, (interval_ms % 1000) * 1000000L },
        { value_ms / 1000, (value_ms % 1000) * 1000000L },
    };
    if (timer_settime(t, 0, &its, NULL) != 0)
        die("timer_settime");
}

static int64_t ns(const struct timespec *ts) { return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec; }

/* timer_gettime by the ID the process holds: interval exactly interval_ms, remaining time
 * in [lo_ns, hi_ns]. */
static void check_timer(const char *name, timer_t t, long interval_ms, int64_t lo_ns, int64_t hi_ns)
{
    struct itimerspec its;
    if (!check(timer_gettime(t, &its) == 0, "timer %s (ID %d): timer_gettime: %s", name, timer_id(t), strerror(errno)))
        return;
    check(ns(&its.it_interval) == interval_ms * 1000000LL, "timer %s: interval %lld ns, expected %ld ms", name,
          (long long)ns(&its.it_interval), interval_ms);
    check(ns(&its.it_value) >= lo_ns && ns(&its.it_value) <= hi_ns, "timer %s: %lld ns remaining, expected %lld..%lld",
          name, (long long)ns(&its.it_value), (long long)lo_ns, (long long)hi_ns);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_timer;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGRTMIN + 1, &sa, NULL) || sigaction(SIGRTMIN + 2, &sa, NULL) || sigaction(SIGUSR1, &sa, NULL))
        die("sigaction");
    /* G's signal stays pending: blocked here and in the worker, which inherits the mask. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGRTMIN + 3);
    if (pthread_sigmask(SIG_BLOCK, &block, NULL) != 0)
        die("pthread_sigmask");
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker, NULL) != 0)
        die("pthread_create");
    while (__atomic_load_n(&g_worker_tid, __ATOMIC_SEQ_CST) == 0)
        sleep_ms(1);

    timer_t spares[SPARES];
    for (int i = 0; i < SPARES; i++)
        spares[i] = make_timer(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
    for (int i = 0; i < SPARES; i++)
        if (i != 7 && i != 23 && timer_delete(spares[i]) != 0)
            die("timer_delete");
    g_spare[0] = spares[7];
    g_spare[1] = spares[23];

    g_a = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 1, VAL_A, 0);
    g_c = make_timer(CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 2, VAL_C, g_worker_tid);
    g_b = make_timer(CLOCK_REALTIME, SIGEV_SIGNAL, SIGUSR1, VAL_B, 0);
    g_d = make_timer(CLOCK_BOOTTIME, SIGEV_NONE, 0, 0, 0);
    g_e = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGUSR1, 0, 0);
    g_g = make_timer(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 3, VAL_G, 0);
    uint64_t set_at = now_ns(CLOCK_MONOTONIC);
    arm(g_a, 20, 20);
    arm(g_c, 25, 25);
    arm(g_b, 1000000, 0);
    arm(g_d, 500000, 0);
    arm(g_g, 1, 0);
    for (int i = 0; i < 1000; i++) {
        sigset_t pending;
        sigpending(&pending);
        if (sigismember(&pending, SIGRTMIN + 3))
            break;
        sleep_ms(1);
    }

    subject_ready();
    while (!subject_stopping())
        sleep_ms(10);

    int64_t since = (int64_t)(now_ns(CLOCK_MONOTONIC) - set_at);
    check_timer("A", g_a, 20, 1, 20000000LL);
    check_timer("C", g_c, 25, 1, 25000000LL);
    check_timer("B", g_b, 0, 1000000000000LL - since - 1000000000LL, 1000000000000LL);
    check_timer("D", g_d, 0, 500000000000LL - since - 1000000000LL, 500000000000LL);
    check_timer("E", g_e, 0, 0, 0);
    check_timer("spare 7", g_spare[0], 0, 0, 0);
    check_timer("spare 23", g_spare[1], 0, 0, 0);

    /* A and C keep firing at their intervals. */
    long a0 = __atomic_load_n(&g_expired_a, __ATOMIC_SEQ_CST), c0 = __atomic_load_n(&g_expired_c, __ATOMIC_SEQ_CST);
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    while (now_ns(CLOCK_MONOTONIC) - t0 < 400000000ull)
        sleep_ms(5);
    long da = __atomic_load_n(&g_expired_a, __ATOMIC_SEQ_CST) - a0, dc = __atomic_load_n(&g_expired_c, __ATOMIC_SEQ_CST) - c0;
    check(da >= 16 && da <= 24, "timer A expired %ld times in 400 ms, expected 20", da);
    check(dc >= 12 && dc <= 20, "timer C expired %ld times in 400 ms, expected 16", dc);
    check(__atomic_load_n(&g_fired_b, __ATOMIC_SEQ_CST) == 0, "timer B (1000 s) fired");
    check(__atomic_load_n(&g_bad, __ATOMIC_SEQ_CST) == 0, "%ld bad timer signals, first: %s", g_bad, g_bad_what);

    /* G's expiry is still pending, with the timer's siginfo. */
    siginfo_t info;
    struct timespec zero = { 0, 0 };
    if (check(sigtimedwait(&block, &info, &zero) == SIGRTMIN + 3, "timer G's signal is not pending: %s", strerror(errno)))
        check(info.si_code == SI_TIMER && info.si_timerid == timer_id(g_g) && (uintptr_t)info.si_value.sival_ptr == VAL_G,
              "timer G's pending signal has code %d, timerid %d (G is %d), value %#llx", info.si_code, info.si_timerid,
              timer_id(g_g), (unsigned long long)(uintptr_t)info.si_value.sival_ptr);

    int mode = prctl(PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0);
    check(mode == 0 || (mode < 0 && errno == EINVAL), "PR_TIMER_CREATE_RESTORE_IDS mode is %d", mode);
    timer_t fresh;
    struct sigevent none = { .sigev_notify = SIGEV_NONE };
    if (check(timer_create(CLOCK_MONOTONIC, &none, &fresh) == 0, "timer_create after the checks: %s", strerror(errno))) {
        timer_t held[] = { g_a, g_b, g_c, g_d, g_e, g_g, g_spare[0], g_spare[1] };
        for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++)
            check(timer_id(fresh) != timer_id(held[i]), "a new timer got ID %d, which timer %zu has", timer_id(fresh), i);
    }

    g_worker_stop = 1;
    pthread_join(thread, NULL);
    return subject_finish();
}
