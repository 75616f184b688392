/*
 * threads — a multi-threaded process with per-thread state.
 *
 *   threads --out OUT --pidfile PID [--threads N]     (N >= 1, default 4)
 *
 * Thread i (1..N) plays role (i-1) % 4:
 *   0 sleeper  — nanosleep loops;
 *   1 waiter   — pthread_cond_wait (futex) that main signals every 20 ms;
 *   2 spinner  — a tight loop keeping an arithmetic invariant in registers;
 *   3 vector   — loads a pattern into zmm0-31 and k1-k7 (AVX-512F; else ymm0-15 with AVX2),
 *                spins in inline asm checking a memory flag, then compares the registers with
 *                the pattern. It also runs with a non-default MXCSR and x87 control word.
 * Every thread (main included) has: a name (pthread_setname_np), its own signal mask, its own
 * sigaltstack (some with SS_AUTODISARM), __thread data (initialised .tdata and a pattern written
 * at start) and its gettid() recorded at start.
 *
 * At SIGTERM main checks that every thread is alive and makes progress, that /proc/self/task
 * lists exactly the recorded tids with their names; then tells the threads to quit. Each thread
 * checks its own tid, name, mask, sigaltstack (and that a signal really runs on it), TLS and
 * registers, and reports to main.
 */
#include "subject.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31) /* linux/signal.h */
#endif

#define MAX_THREADS 64
#define ALTSTACK_SIZE (64 * 1024)

enum role { SLEEPER, WAITER, SPINNER, VECTOR };
static const char *const role_names[] = { "sleep", "wait", "spin", "vec" };

struct slot {
    int index;
    enum role role;
    pthread_t thread;
    pid_t tid;
    char name[16];
    sigset_t mask;
    void *altstack;
    int altflags;
    _Atomic uint64_t progress;
    char fail[512];
    char info[128];
};

static struct slot g_slots[MAX_THREADS + 1]; /* 0 = main */
static int g_nthreads;
static atomic_int g_started;
static atomic_int g_quit;
static volatile int g_vec_flag; /* read from inline asm */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static uint64_t g_generation;
static int g_have_avx512;

static __thread int t_initialised = 0x5eed1e55; /* .tdata */
static __thread uint64_t t_words[32];            /* .tbss */
static __thread struct slot *t_slot;
static __thread volatile int t_onstack_ok = -1;

static pid_t my_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static void tfail(struct slot *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tfail(struct slot *s, const char *fmt, ...)
{
    size_t len = strlen(s->fail);
    if (len > sizeof(s->fail) - 32)
        return;
    if (len)
        len += snprintf(s->fail + len, sizeof(s->fail) - len, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail + len, sizeof(s->fail) - len, fmt, ap);
    va_end(ap);
}

static void build_mask(int i, sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGRTMIN + 1 + (i % 12));
    if (i & 1)
        sigaddset(set, SIGUSR1);
    if (i & 2)
        sigaddset(set, SIGUSR2);
    if (i & 4)
        sigaddset(set, SIGWINCH);
    if (i & 8)
        sigaddset(set, SIGHUP);
    if (i == 0)
        sigaddset(set, SIGPIPE);
}

static void on_sigurg(int sig)
{
    (void)sig;
    struct slot *s = t_slot;
    char here;
    uintptr_t a = (uintptr_t)&here, lo = (uintptr_t)s->altstack;
    t_onstack_ok = (a >= lo && a < lo + ALTSTACK_SIZE);
}

/* Per-thread state, set up by the thread itself. */
static void setup_thread_state(struct slot *s)
{
    t_slot = s;
    s->tid = my_gettid();
    for (int k = 0; k < 32; k++)
        t_words[k] = splitmix64(((uint64_t)s->index << 32) | k);
    if (s->index == 0)
        snprintf(s->name, sizeof(s->name), "thr-main");
    else
        snprintf(s->name, sizeof(s->name), "thr-%s-%d", role_names[s->role], s->index);
    if (pthread_setname_np(pthread_self(), s->name) != 0)
        die("pthread_setname_np");
    build_mask(s->index, &s->mask);
    if (pthread_sigmask(SIG_SETMASK, &s->mask, NULL) != 0)
        die("pthread_sigmask");
    s->altstack = malloc(ALTSTACK_SIZE);
    if (!s->altstack)
        die("malloc altstack");
    s->altflags = (s->index & 1) ? SS_AUTODISARM : 0;
    stack_t ss = { .ss_sp = s->altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = s->altflags };
    if (sigaltstack(&ss, NULL) != 0)
        die("sigaltstack");
}

static void check_thread_state(struct slot *s)
{
    pid_t tid = my_gettid();
    if (tid != s->tid)
        tfail(s, "thread %d: gettid %d, was %d", s->index, tid, s->tid);
    if (t_slot != s)
        tfail(s, "thread %d: TLS slot pointer changed", s->index);
    if (t_initialised != 0x5eed1e55)
        tfail(s, "thread %d: initialised TLS is 0x%x", s->index, t_initialised);
    for (int k = 0; k < 32; k++)
        if (t_words[k] != splitmix64(((uint64_t)s->index << 32) | k)) {
            tfail(s, "thread %d: TLS word %d changed", s->index, k);
            break;
        }
    char name[32] = "";
    if (pthread_getname_np(pthread_self(), name, sizeof(name)) != 0 || strcmp(name, s->name) != 0)
        tfail(s, "thread %d: name '%s', expected '%s'", s->index, name, s->name);

    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    for (int sig = 1; sig <= SIGRTMAX; sig++) {
        if (sig == 32 || sig == 33) /* glibc internal */
            continue;
        if (sigismember(&cur, sig) != sigismember(&s->mask, sig)) {
            tfail(s, "thread %d: signal %d is %sblocked", s->index, sig,
                  sigismember(&cur, sig) ? "" : "not ");
        }
    }

    stack_t ss;
    if (sigaltstack(NULL, &ss) != 0) {
        tfail(s, "thread %d: sigaltstack: %s", s->index, strerror(errno));
    } else {
        if (ss.ss_sp != s->altstack || ss.ss_size != ALTSTACK_SIZE || ss.ss_flags != s->altflags)
            tfail(s, "thread %d: sigaltstack is %p/%zu/0x%x, expected %p/%d/0x%x", s->index,
                  ss.ss_sp, ss.ss_size, ss.ss_flags, s->altstack, ALTSTACK_SIZE, s->altflags);
        /* A signal with SA_ONSTACK must run on it. */
        t_onstack_ok = -1;
        syscall(SYS_tgkill, getpid(), tid, SIGURG);
        if (t_onstack_ok != 1)
            tfail(s, "thread %d: SA_ONSTACK handler %s", s->index,
                  t_onstack_ok < 0 ? "did not run" : "did not run on the sigaltstack");
    }
}

/* ---- roles ---- */

static void run_sleeper(struct slot *s)
{
    while (!atomic_load(&g_quit)) {
        sleep_ms(10);
        atomic_fetch_add(&s->progress, 1);
    }
}

static void run_waiter(struct slot *s)
{
    pthread_mutex_lock(&g_mu);
    uint64_t seen = g_generation;
    while (!atomic_load(&g_quit)) {
        while (g_generation == seen && !atomic_load(&g_quit))
            pthread_cond_wait(&g_cv, &g_mu);
        if (g_generation < seen)
            tfail(s, "thread %d: condition generation went back", s->index);
        seen = g_generation;
        atomic_fetch_add(&s->progress, 1);
    }
    pthread_mutex_unlock(&g_mu);
}

static void run_spinner(struct slot *s)
{
    uint64_t n = 0, sum = 0, x = 1;
    while (!atomic_load_explicit(&g_quit, memory_order_relaxed)) {
        for (int k = 0; k < 4096; k++) {
            n++;
            sum += n;
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            __asm__ volatile("" : "+r"(sum), "+r"(n), "+r"(x));
            if (sum != ((n & 1) ? n * ((n + 1) / 2) : (n / 2) * (n + 1))) {
                tfail(s, "thread %d: spinner invariant broken at n=%llu", s->index,
                      (unsigned long long)n);
                sum = (n & 1) ? n * ((n + 1) / 2) : (n / 2) * (n + 1); /* report once */
            }
        }
        atomic_store_explicit(&s->progress, n, memory_order_relaxed);
    }
    /* x must equal the LCG iterated n times from 1 (jump ahead in O(log n)). */
    uint64_t cur_mult = 6364136223846793005ull, cur_plus = 1442695040888963407ull;
    uint64_t acc_mult = 1, acc_plus = 0;
    for (uint64_t k = n; k; k >>= 1) {
        if (k & 1) {
            acc_mult *= cur_mult;
            acc_plus = acc_plus * cur_mult + cur_plus;
        }
        cur_plus = (cur_mult + 1) * cur_plus;
        cur_mult *= cur_mult;
    }
    uint64_t y = acc_mult * 1 + acc_plus;
    if (y != x)
        tfail(s, "thread %d: spinner LCG state wrong after %llu steps", s->index,
              (unsigned long long)n);
}

/* Vector registers. Each round: load a pattern, spin until the flag or the iteration limit,
 * store the registers, compare. */
#define MAXITER 4000000ull

#define L512(n) "vmovdqu64 " #n "*64(%[in]), %%zmm" #n "\n\t"
#define S512(n) "vmovdqu64 %%zmm" #n ", " #n "*64(%[out])\n\t"
#define LK(n) "kmovw " #n "*2(%[kin]), %%k" #n "\n\t"
#define SK(n) "kmovw %%k" #n ", " #n "*2(%[kout])\n\t"
#define X8(M, a, b, c, d, e, f, g, h) M(a) M(b) M(c) M(d) M(e) M(f) M(g) M(h)
#define SPIN                                                                                    \
    "xor %%rcx, %%rcx\n\t"                                                                      \
    "1:\n\t"                                                                                    \
    "inc %%rcx\n\t"                                                                             \
    "cmpl $0, (%[flag])\n\t"                                                                    \
    "jne 2f\n\t"                                                                                \
    "cmp %[max], %%rcx\n\t"                                                                     \
    "jb 1b\n\t"                                                                                 \
    "2:\n\t"                                                                                    \
    "mov %%rcx, %[it]\n\t"

__attribute__((target("avx512f"), noinline)) static uint64_t
vec_round_512(const uint8_t *in, uint8_t *out, const uint16_t *kin, uint16_t *kout)
{
    uint64_t it;
    __asm__ volatile(X8(L512, 0, 1, 2, 3, 4, 5, 6, 7) X8(L512, 8, 9, 10, 11, 12, 13, 14, 15)
                         X8(L512, 16, 17, 18, 19, 20, 21, 22, 23)
                             X8(L512, 24, 25, 26, 27, 28, 29, 30, 31) LK(1) LK(2) LK(3) LK(4)
                                 LK(5) LK(6) LK(7) SPIN X8(S512, 0, 1, 2, 3, 4, 5, 6, 7)
                                     X8(S512, 8, 9, 10, 11, 12, 13, 14, 15)
                                         X8(S512, 16, 17, 18, 19, 20, 21, 22, 23)
                                             X8(S512, 24, 25, 26, 27, 28, 29, 30, 31) SK(1)
                                                 SK(2) SK(3) SK(4) SK(5) SK(6) SK(7)
                     : [it] "=&r"(it)
                     : [in] "r"(in), [out] "r"(out), [kin] "r"(kin), [kout] "r"(kout),
                       [flag] "r"(&g_vec_flag), [max] "r"(MAXITER)
                     : "rcx", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                       "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                       "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
                       "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30",
                       "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", "k7");
    return it;
}

#define L256(n) "vmovdqu " #n "*32(%[in]), %%ymm" #n "\n\t"
#define S256(n) "vmovdqu %%ymm" #n ", " #n "*32(%[out])\n\t"

__attribute__((target("avx2"), noinline)) static uint64_t vec_round_256(const uint8_t *in,
                                                                         uint8_t *out)
{
    uint64_t it;
    __asm__ volatile(X8(L256, 0, 1, 2, 3, 4, 5, 6, 7) X8(L256, 8, 9, 10, 11, 12, 13, 14, 15) SPIN
                         X8(S256, 0, 1, 2, 3, 4, 5, 6, 7) X8(S256, 8, 9, 10, 11, 12, 13, 14, 15)
                     : [it] "=&r"(it)
                     : [in] "r"(in), [out] "r"(out), [flag] "r"(&g_vec_flag), [max] "r"(MAXITER)
                     : "rcx", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                       "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                       "xmm15");
    return it;
}

static uint32_t get_mxcsr(void)
{
    uint32_t v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}
static void set_mxcsr(uint32_t v) { __asm__ volatile("ldmxcsr %0" : : "m"(v)); }
static uint16_t get_fpucw(void)
{
    uint16_t v;
    __asm__ volatile("fnstcw %0" : "=m"(v));
    return v;
}
static void set_fpucw(uint16_t v) { __asm__ volatile("fldcw %0" : : "m"(v)); }

static void run_vector(struct slot *s)
{
    static const uint32_t mxcsr = 0x1f80 | (3u << 13) | (1u << 15); /* RZ + FTZ */
    static const uint16_t fpucw = 0x037f & ~0x0300;                /* single precision */
    set_mxcsr(mxcsr);
    set_fpucw(fpucw);
    _Alignas(64) uint8_t in[32 * 64], out[32 * 64];
    uint16_t kin[8], kout[8];
    size_t nbytes = g_have_avx512 ? sizeof(in) : 16 * 32;
    int failed = 0;
    snprintf(s->info, sizeof(s->info), "%s", g_have_avx512 ? "avx512f" : "avx2");
    for (uint64_t round = 0; !atomic_load(&g_quit); round++) {
        for (size_t k = 0; k < sizeof(in) / 8; k++)
            ((uint64_t *)in)[k] = splitmix64((round << 20) ^ ((uint64_t)s->index << 12) ^ k);
        for (int k = 0; k < 8; k++)
            kin[k] = (uint16_t)splitmix64(round * 8 + k + 77);
        memset(out, 0, sizeof(out));
        memset(kout, 0, sizeof(kout));
        if (g_have_avx512)
            vec_round_512(in, out, kin, kout);
        else
            vec_round_256(in, out);
        /* On a mismatch: report the first one, keep going (the thread must still progress). */
        if (!failed && memcmp(in, out, nbytes) != 0) {
            size_t k = 0;
            while (in[k] == out[k])
                k++;
            tfail(s, "thread %d: %s register %zu changed in round %llu", s->index,
                  g_have_avx512 ? "zmm" : "ymm", k / (g_have_avx512 ? 64 : 32),
                  (unsigned long long)round);
            failed = 1;
        }
        if (g_have_avx512)
            for (int k = 1; k < 8 && !failed; k++)
                if (kin[k] != kout[k]) {
                    tfail(s, "thread %d: mask register k%d is 0x%x, expected 0x%x", s->index, k,
                          kout[k], kin[k]);
                    failed = 1;
                }
        atomic_fetch_add(&s->progress, 1);
    }
    if (get_mxcsr() != mxcsr)
        tfail(s, "thread %d: MXCSR 0x%x, expected 0x%x", s->index, get_mxcsr(), mxcsr);
    if (get_fpucw() != fpucw)
        tfail(s, "thread %d: x87 control word 0x%x, expected 0x%x", s->index, get_fpucw(), fpucw);
}

static void *thread_main(void *arg)
{
    struct slot *s = arg;
    setup_thread_state(s);
    atomic_fetch_add(&g_started, 1);
    switch (s->role) {
    case SLEEPER: run_sleeper(s); break;
    case WAITER: run_waiter(s); break;
    case SPINNER: run_spinner(s); break;
    case VECTOR: run_vector(s); break;
    }
    check_thread_state(s);
    return NULL;
}

static void signal_waiters(void)
{
    pthread_mutex_lock(&g_mu);
    g_generation++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static int cmp_pid(const void *a, const void *b) { return *(const pid_t *)a - *(const pid_t *)b; }

static void check_tasks(void)
{
    pid_t seen[MAX_THREADS + 8], want[MAX_THREADS + 1];
    int nseen = 0;
    DIR *d = opendir("/proc/self/task");
    if (!check(d != NULL, "opendir /proc/self/task: %s", strerror(errno)))
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && nseen < MAX_THREADS + 8)
            seen[nseen++] = atoi(e->d_name);
    closedir(d);
    for (int i = 0; i <= g_nthreads; i++)
        want[i] = g_slots[i].tid;
    qsort(seen, nseen, sizeof(pid_t), cmp_pid);
    qsort(want, g_nthreads + 1, sizeof(pid_t), cmp_pid);
    int same = nseen == g_nthreads + 1;
    for (int i = 0; same && i < nseen; i++)
        same = seen[i] == want[i];
    if (!same) {
        char a[512] = "", b[512] = "";
        for (int i = 0; i < nseen; i++)
            snprintf(a + strlen(a), sizeof(a) - strlen(a), " %d", seen[i]);
        for (int i = 0; i <= g_nthreads; i++)
            snprintf(b + strlen(b), sizeof(b) - strlen(b), " %d", want[i]);
        check(0, "/proc/self/task has [%s ] expected [%s ]", a, b);
    }
    for (int i = 0; i <= g_nthreads; i++) {
        char path[64], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%d/comm", g_slots[i].tid);
        read_file(path, comm, sizeof(comm));
        comm[strcspn(comm, "\n")] = '\0';
        check(strcmp(comm, g_slots[i].name) == 0, "%s is '%s', expected '%s'", path, comm,
              g_slots[i].name);
    }
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    g_nthreads = (int)opt_long("--threads", 4);
    if (g_nthreads < 1 || g_nthreads > MAX_THREADS)
        die("--threads must be 1..%d", MAX_THREADS);
    __builtin_cpu_init();
    g_have_avx512 = __builtin_cpu_supports("avx512f");
    if (!g_have_avx512 && !__builtin_cpu_supports("avx2"))
        die("this CPU has neither AVX-512F nor AVX2");

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigurg;
    sa.sa_flags = SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGURG, &sa, NULL) != 0)
        die("sigaction SIGURG");

    g_slots[0].index = 0;
    for (int i = 1; i <= g_nthreads; i++) {
        g_slots[i].index = i;
        g_slots[i].role = (enum role)((i - 1) % 4);
        if (pthread_create(&g_slots[i].thread, NULL, thread_main, &g_slots[i]) != 0)
            die("pthread_create %d", i);
    }
    /* Main's own state; its mask never blocks SIGTERM. */
    setup_thread_state(&g_slots[0]);
    while (atomic_load(&g_started) < g_nthreads)
        sleep_ms(1);
    subject_ready();

    while (!subject_stopping()) {
        sleep_ms(20);
        signal_waiters();
    }

    /* Everyone alive and making progress? */
    uint64_t before[MAX_THREADS + 1];
    for (int i = 1; i <= g_nthreads; i++)
        before[i] = atomic_load(&g_slots[i].progress);
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 10ull * 1000000000ull;
    int stuck;
    do {
        sleep_ms(5);
        signal_waiters();
        stuck = 0;
        for (int i = 1; i <= g_nthreads; i++)
            stuck += atomic_load(&g_slots[i].progress) == before[i];
    } while (stuck && now_ns(CLOCK_MONOTONIC) < deadline);
    for (int i = 1; i <= g_nthreads; i++)
        check(atomic_load(&g_slots[i].progress) != before[i],
              "thread %d (%s) made no progress in 10 s", i, g_slots[i].name);

    check_tasks();

    /* Stop the threads; each checks its own state. */
    atomic_store(&g_quit, 1);
    g_vec_flag = 1;
    signal_waiters();
    for (int i = 1; i <= g_nthreads; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30;
        int rc = pthread_timedjoin_np(g_slots[i].thread, NULL, &ts);
        if (!check(rc == 0, "thread %d did not finish (%s)", i, strerror(rc)))
            continue;
        check(g_slots[i].fail[0] == '\0', "%s", g_slots[i].fail);
    }
    check_thread_state(&g_slots[0]);
    check(g_slots[0].fail[0] == '\0', "%s", g_slots[0].fail);
    return subject_finish();
}
