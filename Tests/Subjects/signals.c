/*
 * signals — signal dispositions, pending signals, timers, limits and other per-process state.
 *
 *   signals --out OUT --pidfile PID --dir DIR
 *
 * State built before "ready", checked at SIGTERM:
 *   - dispositions: SA_SIGINFO handlers with sa_mask, SA_RESTART, SA_NODEFER, SA_RESETHAND,
 *     SIG_IGN for SIGHUP/SIGPIPE/SIGTTOU; every disposition (handler, flags, mask, restorer) as
 *     read back by sigaction() and SigIgn/SigCgt of /proc/self/status equal the ones at start;
 *     SA_NODEFER really nests, SA_RESETHAND really resets, sa_mask is really applied;
 *   - pending signals, blocked in every thread: SIGUSR1 (sigqueue, value 0x1111) and
 *     SIGRTMIN+3 twice (sigqueue, values 0x3331 then 0x3332) pending on the process; SIGUSR2
 *     (pthread_kill) and SIGRTMIN+4 (pthread_sigqueue, value 0x4444) pending on a helper
 *     thread. At the end every one arrives exactly once, in order, with its si_code, si_value
 *     and si_pid, in the right thread;
 *   - blocked masks of main and of the helper;
 *   - ITIMER_REAL (1000 s, interval 1000 s) and ITIMER_VIRTUAL (2000 s, interval 3000 s):
 *     intervals intact, remaining values plausible, neither has fired;
 *   - RLIMIT_NOFILE soft lowered to 777, RLIMIT_CORE set to 1 MiB / 2 MiB;
 *   - umask 027, cwd = DIR, personality ADDR_NO_RANDOMIZE|UNAME26 (uname says 2.6.x);
 *   - prctl: PR_SET_NAME, PR_SET_DUMPABLE 0, PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER,
 *     PR_SET_NO_NEW_PRIVS;
 *   - /proc/self/cmdline, environ, exe, and the code/data/brk/arg/env/stack fields of
 *     /proc/self/stat equal those at start.
 * (Whether the parent-death signal fired after a restore is reported nowhere: a restorer that
 *  exits may legitimately trigger it.)
 */
#include "subject.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/utsname.h>

#define SIG_RT_PROC (SIGRTMIN + 3)
#define SIG_RT_THREAD (SIGRTMIN + 4)
#define SIG_PDEATH (SIGRTMIN + 10)
#define NREC 64
#define PERSONA (ADDR_NO_RANDOMIZE | UNAME26)

struct rec {
    int sig;
    pid_t tid;
    int code;
    int value;
    pid_t pid;
    int sigwinch_blocked; /* during the handler: SIGWINCH in the mask (sa_mask applied) */
    int self_blocked;     /* during the handler: the signal itself in the mask */
};

static struct rec g_recs[NREC];
static atomic_int g_nrec;
static atomic_int g_alarms, g_vtalarms, g_pdeath;
static volatile int g_winch_depth, g_winch_max;
static volatile int g_urg_count;

static pthread_t g_helper;
static pid_t g_main_tid, g_helper_tid;
static atomic_int g_helper_phase; /* 0 run, 1 main asks to check+unblock, 2 helper done */
static char g_helper_fail[512];
static sigset_t g_main_mask, g_helper_mask;

static pid_t my_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static void on_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int i = atomic_fetch_add(&g_nrec, 1);
    if (i >= NREC)
        return;
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    g_recs[i] = (struct rec){ sig, my_gettid(), si->si_code, si->si_value.sival_int, si->si_pid,
                              sigismember(&cur, SIGWINCH), sigismember(&cur, sig) };
}

static void on_alarm(int sig) { (void)sig; atomic_fetch_add(&g_alarms, 1); }
static void on_vtalarm(int sig) { (void)sig; atomic_fetch_add(&g_vtalarms, 1); }
static void on_pdeath(int sig) { (void)sig; atomic_fetch_add(&g_pdeath, 1); }

static void on_winch(int sig)
{
    g_winch_depth++;
    if (g_winch_depth > g_winch_max)
        g_winch_max = g_winch_depth;
    if (g_winch_depth == 1)
        raise(sig); /* SA_NODEFER: runs nested right now */
    g_winch_depth--;
}

static void on_urg(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)si, (void)uc;
    g_urg_count++;
}

static void set_action(int sig, void *handler, int flags, int masked)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    if (flags & SA_SIGINFO)
        sa.sa_sigaction = handler;
    else
        sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (masked)
        sigaddset(&sa.sa_mask, masked);
    if (sigaction(sig, &sa, NULL) != 0)
        die("sigaction %d", sig);
}

static int skip_sig(int sig) { return sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33; }

static struct sigaction g_actions[65];

static void snapshot_actions(struct sigaction *out)
{
    for (int sig = 1; sig <= 64; sig++)
        if (!skip_sig(sig))
            sigaction(sig, NULL, &out[sig]);
}

static void compare_actions(void)
{
    struct sigaction now[65];
    snapshot_actions(now);
    for (int sig = 1; sig <= 64; sig++) {
        if (skip_sig(sig))
            continue;
        struct sigaction *a = &g_actions[sig], *b = &now[sig];
        int same = a->sa_handler == b->sa_handler && a->sa_flags == b->sa_flags &&
                   a->sa_restorer == b->sa_restorer;
        for (int s = 1; same && s <= 64; s++)
            if (!skip_sig(s))
                same = sigismember(&a->sa_mask, s) == sigismember(&b->sa_mask, s);
        check(same, "disposition of signal %d changed (handler %p->%p flags 0x%x->0x%x)", sig,
              (void *)a->sa_handler, (void *)b->sa_handler, a->sa_flags, b->sa_flags);
    }
}

static void compare_masks(const char *what, const sigset_t *want, const sigset_t *have)
{
    for (int s = 1; s <= 64; s++)
        if (!skip_sig(s) && sigismember(want, s) != sigismember(have, s)) {
            check(0, "%s: signal %d is %sblocked", what, s, sigismember(have, s) ? "" : "not ");
            return;
        }
}

static void *helper_main(void *arg)
{
    (void)arg;
    g_helper_tid = my_gettid();
    sigaddset(&g_helper_mask, SIGUSR2);
    sigaddset(&g_helper_mask, SIG_RT_THREAD);
    sigaddset(&g_helper_mask, SIGCONT);
    pthread_sigmask(SIG_BLOCK, &g_helper_mask, NULL);
    pthread_sigmask(SIG_BLOCK, NULL, &g_helper_mask);
    atomic_store(&g_helper_phase, 0);
    while (atomic_load(&g_helper_phase) == 0)
        sleep_ms(20);

    sigset_t cur, pend;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    for (int s = 1; s <= 64; s++)
        if (!skip_sig(s) && sigismember(&cur, s) != sigismember(&g_helper_mask, s)) {
            snprintf(g_helper_fail, sizeof(g_helper_fail), "helper: signal %d is %sblocked", s,
                     sigismember(&cur, s) ? "" : "not ");
            break;
        }
    sigpending(&pend); /* thread's own plus the process's */
    if (!g_helper_fail[0] && (!sigismember(&pend, SIGUSR2) || !sigismember(&pend, SIG_RT_THREAD)))
        snprintf(g_helper_fail, sizeof(g_helper_fail),
                 "helper: SIGUSR2 %spending, SIGRTMIN+4 %spending before unblocking",
                 sigismember(&pend, SIGUSR2) ? "" : "not ", sigismember(&pend, SIG_RT_THREAD) ? "" : "not ");
    sigset_t un;
    sigemptyset(&un);
    sigaddset(&un, SIGUSR2);
    sigaddset(&un, SIG_RT_THREAD);
    pthread_sigmask(SIG_UNBLOCK, &un, NULL);
    atomic_store(&g_helper_phase, 2);
    return NULL;
}

/* /proc/self/stat fields 26-28 (code, stack) and 45-51 (data, brk, arg, env). */
static int stat_fields(unsigned long long *out)
{
    char buf[4096];
    if (read_file("/proc/self/stat", buf, sizeof(buf)) < 0)
        return -1;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2; /* field 3 */
    int field = 3, n = 0;
    static const int want[] = { 26, 27, 28, 45, 46, 47, 48, 49, 50, 51 };
    while (*p && n < 10) {
        if (field == want[n])
            out[n++] = strtoull(p, NULL, 10);
        p = strchr(p, ' ');
        if (!p)
            break;
        p++;
        field++;
    }
    return n == 10 ? 0 : -1;
}

struct procid {
    char cmdline[8192];
    ssize_t cmdline_len;
    char environ[65536];
    ssize_t environ_len;
    char exe[4096];
    unsigned long long stat[10];
    char sigign[32], sigcgt[32];
};

static void read_procid(struct procid *p)
{
    p->cmdline_len = read_file("/proc/self/cmdline", p->cmdline, sizeof(p->cmdline));
    p->environ_len = read_file("/proc/self/environ", p->environ, sizeof(p->environ));
    ssize_t n = readlink("/proc/self/exe", p->exe, sizeof(p->exe) - 1);
    p->exe[n < 0 ? 0 : n] = '\0';
    if (stat_fields(p->stat) != 0)
        memset(p->stat, 0xff, sizeof(p->stat));
    status_field("/proc/self/status", "SigIgn", p->sigign, sizeof(p->sigign));
    status_field("/proc/self/status", "SigCgt", p->sigcgt, sizeof(p->sigcgt));
}

static struct procid g_id0;
static struct rlimit g_nofile, g_core;
static char g_dir[PATH_MAX];
static uint64_t g_timer_set_ns;

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    const char *dir = opt_str("--dir", NULL);
    if (!dir)
        die("--dir DIR is required");
    if (!realpath(dir, g_dir))
        die("realpath %s", dir);
    g_main_tid = my_gettid();

    /* Dispositions. */
    set_action(SIGUSR1, on_info, SA_SIGINFO, SIGWINCH);
    set_action(SIGUSR2, on_info, SA_SIGINFO | SA_RESTART, 0);
    set_action(SIG_RT_PROC, on_info, SA_SIGINFO | SA_RESTART, SIGWINCH);
    set_action(SIG_RT_THREAD, on_info, SA_SIGINFO, 0);
    set_action(SIGWINCH, on_winch, SA_NODEFER | SA_RESTART, 0);
    set_action(SIGURG, on_urg, SA_SIGINFO | SA_RESETHAND, SIGUSR2);
    set_action(SIGALRM, on_alarm, SA_RESTART, 0);
    set_action(SIGVTALRM, on_vtalarm, SA_RESTART, 0);
    set_action(SIG_PDEATH, on_pdeath, SA_RESTART, 0);
    set_action(SIGHUP, SIG_IGN, 0, 0);
    set_action(SIGPIPE, SIG_IGN, 0, 0);
    set_action(SIGTTOU, SIG_IGN, 0, 0);

    /* Block the process-directed ones everywhere (the helper inherits the mask). */
    sigemptyset(&g_main_mask);
    sigaddset(&g_main_mask, SIGUSR1);
    sigaddset(&g_main_mask, SIG_RT_PROC);
    sigaddset(&g_main_mask, SIGQUIT);
    if (sigprocmask(SIG_BLOCK, &g_main_mask, NULL) != 0)
        die("sigprocmask");
    sigprocmask(SIG_BLOCK, NULL, &g_main_mask);
    g_helper_mask = g_main_mask;
    atomic_store(&g_helper_phase, -1);
    if (pthread_create(&g_helper, NULL, helper_main, NULL) != 0)
        die("pthread_create");
    while (atomic_load(&g_helper_phase) != 0)
        sleep_ms(1);

    /* Pending signals. */
    union sigval v;
    v.sival_int = 0x1111;
    if (sigqueue(getpid(), SIGUSR1, v) != 0)
        die("sigqueue SIGUSR1");
    v.sival_int = 0x3331;
    if (sigqueue(getpid(), SIG_RT_PROC, v) != 0)
        die("sigqueue SIGRTMIN+3");
    v.sival_int = 0x3332;
    if (sigqueue(getpid(), SIG_RT_PROC, v) != 0)
        die("sigqueue SIGRTMIN+3");
    if (pthread_kill(g_helper, SIGUSR2) != 0)
        die("pthread_kill SIGUSR2");
    v.sival_int = 0x4444;
    if (pthread_sigqueue(g_helper, SIG_RT_THREAD, v) != 0)
        die("pthread_sigqueue");

    /* Timers. */
    struct itimerval it = { { 1000, 0 }, { 1000, 0 } };
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        die("setitimer REAL");
    struct itimerval vt = { { 3000, 0 }, { 2000, 0 } };
    if (setitimer(ITIMER_VIRTUAL, &vt, NULL) != 0)
        die("setitimer VIRTUAL");
    g_timer_set_ns = now_ns(CLOCK_MONOTONIC);

    /* Limits. */
    if (getrlimit(RLIMIT_NOFILE, &g_nofile) != 0)
        die("getrlimit");
    g_nofile.rlim_cur = 777;
    if (setrlimit(RLIMIT_NOFILE, &g_nofile) != 0)
        die("setrlimit NOFILE");
    if (getrlimit(RLIMIT_CORE, &g_core) != 0)
        die("getrlimit");
    rlim_t core_max = 2 * 1024 * 1024;
    if (g_core.rlim_max != RLIM_INFINITY && g_core.rlim_max < core_max)
        core_max = g_core.rlim_max;
    g_core.rlim_max = core_max;
    g_core.rlim_cur = core_max / 2;
    if (setrlimit(RLIMIT_CORE, &g_core) != 0)
        die("setrlimit CORE");

    /* umask, cwd, personality, prctl. */
    umask(027);
    if (chdir(g_dir) != 0)
        die("chdir %s", g_dir);
    if (personality(PERSONA) == -1)
        die("personality");
    if (prctl(PR_SET_NAME, "sig-subj", 0, 0, 0) != 0)
        die("PR_SET_NAME");
    if (prctl(PR_SET_PDEATHSIG, SIG_PDEATH, 0, 0, 0) != 0)
        die("PR_SET_PDEATHSIG");
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        die("PR_SET_CHILD_SUBREAPER");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        die("PR_SET_DUMPABLE");

    snapshot_actions(g_actions);
    read_procid(&g_id0);
    subject_ready();

    while (!subject_stopping())
        sleep_ms(20);

    /* ---- checks ---- */
    uint64_t elapsed = now_ns(CLOCK_MONOTONIC) - g_timer_set_ns;
    compare_actions();

    struct procid id1;
    read_procid(&id1);
    check(id1.cmdline_len == g_id0.cmdline_len &&
              memcmp(id1.cmdline, g_id0.cmdline, id1.cmdline_len > 0 ? id1.cmdline_len : 0) == 0,
          "/proc/self/cmdline changed");
    check(id1.environ_len == g_id0.environ_len &&
              memcmp(id1.environ, g_id0.environ, id1.environ_len > 0 ? id1.environ_len : 0) == 0,
          "/proc/self/environ changed (%zd -> %zd bytes)", g_id0.environ_len, id1.environ_len);
    check(strcmp(id1.exe, g_id0.exe) == 0, "exe is '%s', was '%s'", id1.exe, g_id0.exe);
    static const char *const names[] = { "start_code", "end_code", "start_stack", "start_data",
                                         "end_data", "start_brk", "arg_start", "arg_end",
                                         "env_start", "env_end" };
    for (int i = 0; i < 10; i++)
        check(id1.stat[i] == g_id0.stat[i], "/proc/self/stat %s is 0x%llx, was 0x%llx", names[i],
              id1.stat[i], g_id0.stat[i]);
    check(strcmp(id1.sigign, g_id0.sigign) == 0, "SigIgn %s, was %s", id1.sigign, g_id0.sigign);
    check(strcmp(id1.sigcgt, g_id0.sigcgt) == 0, "SigCgt %s, was %s", id1.sigcgt, g_id0.sigcgt);

    /* Timers. */
    struct itimerval cur;
    getitimer(ITIMER_REAL, &cur);
    check(cur.it_interval.tv_sec == 1000 && cur.it_interval.tv_usec == 0,
          "ITIMER_REAL interval is %ld.%06ld", (long)cur.it_interval.tv_sec,
          (long)cur.it_interval.tv_usec);
    double left = cur.it_value.tv_sec + cur.it_value.tv_usec / 1e6;
    double lowest = 1000.0 - elapsed / 1e9 - 1.0;
    check(left > 0 && left <= 1000.0 && left >= lowest,
          "ITIMER_REAL has %.3f s left after %.3f s (expected %.3f..1000)", left, elapsed / 1e9,
          lowest);
    getitimer(ITIMER_VIRTUAL, &cur);
    check(cur.it_interval.tv_sec == 3000 && cur.it_interval.tv_usec == 0,
          "ITIMER_VIRTUAL interval is %ld.%06ld", (long)cur.it_interval.tv_sec,
          (long)cur.it_interval.tv_usec);
    left = cur.it_value.tv_sec + cur.it_value.tv_usec / 1e6;
    check(left > 1900 && left <= 2001, "ITIMER_VIRTUAL has %.3f s left", left);
    check(atomic_load(&g_alarms) == 0, "SIGALRM fired %d times", atomic_load(&g_alarms));
    check(atomic_load(&g_vtalarms) == 0, "SIGVTALRM fired %d times", atomic_load(&g_vtalarms));

    /* Limits, umask, cwd, personality, prctl. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    check(rl.rlim_cur == g_nofile.rlim_cur && rl.rlim_max == g_nofile.rlim_max,
          "RLIMIT_NOFILE %llu/%llu, expected %llu/%llu", (unsigned long long)rl.rlim_cur,
          (unsigned long long)rl.rlim_max, (unsigned long long)g_nofile.rlim_cur,
          (unsigned long long)g_nofile.rlim_max);
    getrlimit(RLIMIT_CORE, &rl);
    check(rl.rlim_cur == g_core.rlim_cur && rl.rlim_max == g_core.rlim_max,
          "RLIMIT_CORE %llu/%llu, expected %llu/%llu", (unsigned long long)rl.rlim_cur,
          (unsigned long long)rl.rlim_max, (unsigned long long)g_core.rlim_cur,
          (unsigned long long)g_core.rlim_max);
    mode_t um = umask(027);
    check(um == 027, "umask is 0%o", (unsigned)um);
    char cwd[PATH_MAX];
    check(getcwd(cwd, sizeof(cwd)) && strcmp(cwd, g_dir) == 0, "cwd is '%s', expected '%s'", cwd,
          g_dir);
    int pers = personality(0xffffffff);
    check(pers == PERSONA, "personality 0x%x, expected 0x%x", pers, PERSONA);
    struct utsname uts;
    uname(&uts);
    check(strncmp(uts.release, "2.6.", 4) == 0, "UNAME26 personality: uname release is %s",
          uts.release);
    char name[32] = "";
    prctl(PR_GET_NAME, name, 0, 0, 0);
    check(strcmp(name, "sig-subj") == 0, "PR_GET_NAME '%s'", name);
    int pd = -1;
    prctl(PR_GET_PDEATHSIG, &pd, 0, 0, 0);
    check(pd == SIG_PDEATH, "PR_GET_PDEATHSIG %d, expected %d", pd, SIG_PDEATH);
    int sr = -1;
    prctl(PR_GET_CHILD_SUBREAPER, &sr, 0, 0, 0);
    check(sr == 1, "PR_GET_CHILD_SUBREAPER %d", sr);
    int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
    check(nnp == 1, "PR_GET_NO_NEW_PRIVS %d", nnp);
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    check(dumpable == 0, "PR_GET_DUMPABLE %d", dumpable);

    /* Main's mask and pending set. */
    sigset_t mask, pend;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    compare_masks("main thread", &g_main_mask, &mask);
    sigpending(&pend);
    check(sigismember(&pend, SIGUSR1) && sigismember(&pend, SIG_RT_PROC),
          "SIGUSR1 %spending, SIGRTMIN+3 %spending", sigismember(&pend, SIGUSR1) ? "" : "not ",
          sigismember(&pend, SIG_RT_PROC) ? "" : "not ");
    check(atomic_load(&g_nrec) == 0, "%d signals were delivered while blocked", atomic_load(&g_nrec));

    /* Deliver: helper first, then main. */
    atomic_store(&g_helper_phase, 1);
    pthread_join(g_helper, NULL);
    check(g_helper_fail[0] == '\0', "%s", g_helper_fail);
    sigset_t un;
    sigemptyset(&un);
    sigaddset(&un, SIGUSR1);
    sigaddset(&un, SIG_RT_PROC);
    sigprocmask(SIG_UNBLOCK, &un, NULL);
    sigpending(&pend);
    check(!sigismember(&pend, SIGUSR1) && !sigismember(&pend, SIG_RT_PROC) &&
              !sigismember(&pend, SIGUSR2) && !sigismember(&pend, SIG_RT_THREAD),
          "signals still pending after unblocking");

    struct want {
        int sig, code, value, tid_is_helper, masks_winch;
    } want[] = {
        { SIGUSR2, SI_TKILL, -1, 1, 0 },
        { SIG_RT_THREAD, SI_QUEUE, 0x4444, 1, 0 },
        { SIGUSR1, SI_QUEUE, 0x1111, 0, 1 },
        { SIG_RT_PROC, SI_QUEUE, 0x3331, 0, 1 },
        { SIG_RT_PROC, SI_QUEUE, 0x3332, 0, 1 },
    };
    int nwant = sizeof(want) / sizeof(want[0]);
    int nrec = atomic_load(&g_nrec);
    /* Handlers of signals dequeued together nest (the last dequeued runs first), so only the
     * order of the two queued SIGRTMIN+3 is fixed (each blocks the next until it returns). */
    check(nrec == nwant, "%d signals delivered, expected %d", nrec, nwant);
    int used[NREC] = { 0 };
    for (int i = 0; i < nwant; i++) {
        struct want *w = &want[i];
        int found = -1;
        for (int j = 0; j < nrec && j < NREC && found < 0; j++)
            if (!used[j] && g_recs[j].sig == w->sig)
                found = j;
        if (!check(found >= 0, "signal %d (value 0x%x) was not delivered", w->sig, w->value))
            continue;
        used[found] = 1;
        struct rec *r = &g_recs[found];
        pid_t tid = w->tid_is_helper ? g_helper_tid : g_main_tid;
        check(r->tid == tid, "signal %d went to thread %d, expected %d", r->sig, r->tid, tid);
        check(r->code == w->code, "signal %d si_code %d, expected %d", r->sig, r->code, w->code);
        if (w->value >= 0)
            check(r->value == w->value, "signal %d si_value 0x%x, expected 0x%x", r->sig, r->value,
                  w->value);
        check(r->pid == getpid(), "signal %d si_pid %d, expected %d", r->sig, r->pid, getpid());
        check(r->self_blocked, "signal %d was not blocked in its own handler", r->sig);
        if (w->masks_winch)
            check(r->sigwinch_blocked, "sa_mask of signal %d (SIGWINCH) not applied", r->sig);
    }

    /* Behaviour of the flags. */
    raise(SIGWINCH);
    check(g_winch_max == 2, "SA_NODEFER handler nested %d deep, expected 2", g_winch_max);
    raise(SIGURG);
    struct sigaction sa;
    sigaction(SIGURG, NULL, &sa);
    check(g_urg_count == 1 && sa.sa_handler == SIG_DFL,
          "SA_RESETHAND: handler ran %d times, disposition now %p", g_urg_count,
          (void *)sa.sa_handler);

    return subject_finish();
}
