/*
 * eventfds — eventfd, timerfd, signalfd and epoll, one eventfd shared with a child.
 *
 *   eventfds --out OUT --pidfile PID [--expect-usr2 N]
 *
 *   eventfds-R   the subject
 *   └─ eventfds-A   child: adds 1 to the shared eventfd every millisecond
 *
 * R's files and what is checked at SIGTERM:
 *   eventfd shared   (opened before the fork, non-blocking) R reads what A added; at the end
 *                    the sum R read equals the count A reports
 *   eventfd sem      initial value 5, EFD_SEMAPHORE: exactly five reads of 1, then EAGAIN
 *   eventfd big      holds 0x123456789ab: one read returns exactly that
 *   timerfd long     CLOCK_MONOTONIC, 50 s then every 100 s: interval still 100 s, remaining
 *                    time no more than 50 s and no less than 50 s minus the time since it was set
 *   timerfd boot     CLOCK_BOOTTIME, once in 30 s: the same with 30 s
 *   timerfd expired  CLOCK_MONOTONIC, once after 1 ms, expired before "ready", never read:
 *                    exactly 1 expiration, then EAGAIN, and disarmed
 *   timerfd tick     CLOCK_MONOTONIC, every 20 ms, never read: at least 5 expirations (it ran
 *                    110 ms before "ready"), at most one per 20 ms since it was set
 *   signalfd usr1    mask {SIGUSR1}; a SIGUSR1 R sent itself before "ready" is still pending
 *                    and is read from it; one sent at the end is read too
 *   signalfd usr2    mask {SIGUSR2}, watched by the epoll: SIGUSR2s sent from outside are read
 *                    as they come (--expect-usr2 N: at least N arrived); one sent at the end too
 *   epoll            watches the shared eventfd, signalfd usr2, a pipe's read end with a byte
 *                    in it (EPOLLIN), an empty pipe's write end (EPOLLOUT) and timerfd expired,
 *                    each with its own 64-bit data. R loops on epoll_wait: each event must carry
 *                    a known data value and its events, and the three always-ready fds must be
 *                    reported every time. At the end: /proc/self/fdinfo lists exactly those
 *                    watches (fd, events, data); EPOLL_CTL_DEL of the pipe's read end works
 *                    (then ENOENT, and it is no longer reported), EPOLL_CTL_MOD of the write
 *                    end's data is reported, EPOLL_CTL_DEL of the shared eventfd works.
 * Clocks, masks and flags are also checked in /proc/self/fdinfo.
 */
#include "subject.h"
#include "family.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#define D_EFD 0xE5E5000000000001ull
#define D_SIG 0x5160000000000002ull
#define D_PIPE_IN 0x919E000000000003ull
#define D_PIPE_OUT 0x919E000000000004ull
#define D_TIMER 0x7173000000000005ull
#define D_NEW 0x0E30000000000006ull

static int efd_shared;

static void child(void *arg)
{
    (void)arg;
    int64_t added = 0;
    int failed = 0;
    family_ready();
    while (!family_poll(1)) {
        uint64_t one = 1;
        if (write(efd_shared, &one, sizeof(one)) == sizeof(one))
            added++;
        else if (!failed)
            failed = !check(0, "eventfds-A: write to the shared eventfd: %s", strerror(errno));
    }
    int64_t v[6] = { added };
    family_result(v);
}

/* The value of "key:" in /proc/self/fdinfo/FD, or "" */
static const char *fdinfo(int fd, const char *key, char *out, size_t size)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    if (status_field(path, key, out, size) != 0)
        out[0] = '\0';
    return out;
}

static double ts_sec(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

static void check_timer(int fd, const char *name, int clockid, double value, double interval,
                        uint64_t set_at_ns)
{
    char buf[128];
    check(atoi(fdinfo(fd, "clockid", buf, sizeof(buf))) == clockid,
          "timerfd %s: clockid %s in fdinfo, expected %d", name, buf, clockid);
    struct itimerspec cur;
    if (timerfd_gettime(fd, &cur) != 0) {
        check(0, "timerfd %s: timerfd_gettime: %s", name, strerror(errno));
        return;
    }
    double since = (now_ns(clockid) - set_at_ns) / 1e9;
    double left = ts_sec(cur.it_value);
    check(ts_sec(cur.it_interval) == interval, "timerfd %s: interval %.9f s, expected %.9f s",
          name, ts_sec(cur.it_interval), interval);
    if (value > 0)
        check(left > 0 && left <= value && left >= value - since - 0.5,
              "timerfd %s: %.3f s left; it was set to %.0f s %.3f s ago", name, left, value, since);
    else
        check(left == 0, "timerfd %s: armed (%.3f s left), expected disarmed", name, left);
}

static void epoll_report(int ep, uint64_t *data, uint32_t *events, int *n)
{
    struct epoll_event ev[16];
    int r;
    do
        r = epoll_wait(ep, ev, 16, 0);
    while (r < 0 && errno == EINTR);
    *n = r < 0 ? 0 : r;
    for (int i = 0; i < *n; i++) {
        data[i] = ev[i].data.u64;
        events[i] = ev[i].events;
    }
}

static int reported(const uint64_t *data, int n, uint64_t d)
{
    for (int i = 0; i < n; i++)
        if (data[i] == d)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    long expect_usr2 = opt_long("--expect-usr2", 0);
    set_name("eventfds-R");
    efd_shared = eventfd(0, EFD_NONBLOCK);
    if (efd_shared < 0)
        die("eventfd");
    struct kid a;
    kid_spawn(&a, "eventfds-A", child, NULL);

    int efd_sem = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
    int efd_big = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    uint64_t big = 0x123456789abull;
    if (efd_sem < 0 || efd_big < 0 || write(efd_big, &big, 8) != 8)
        die("eventfd");

    int t_long = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int t_boot = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    int t_expired = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int t_tick = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (t_long < 0 || t_boot < 0 || t_expired < 0 || t_tick < 0)
        die("timerfd_create");
    struct itimerspec its_long = { { 100, 0 }, { 50, 0 } };
    struct itimerspec its_boot = { { 0, 0 }, { 30, 0 } };
    struct itimerspec its_expired = { { 0, 0 }, { 0, 1000000 } };
    struct itimerspec its_tick = { { 0, 20000000 }, { 0, 20000000 } };
    uint64_t long_at = now_ns(CLOCK_MONOTONIC);
    uint64_t boot_at = now_ns(CLOCK_BOOTTIME);
    uint64_t tick_at = now_ns(CLOCK_MONOTONIC);
    if (timerfd_settime(t_long, 0, &its_long, NULL) != 0 ||
        timerfd_settime(t_boot, 0, &its_boot, NULL) != 0 ||
        timerfd_settime(t_expired, 0, &its_expired, NULL) != 0 ||
        timerfd_settime(t_tick, 0, &its_tick, NULL) != 0)
        die("timerfd_settime");

    sigset_t usr1, usr2, both;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    if (sigprocmask(SIG_BLOCK, &both, NULL) != 0)
        die("sigprocmask");
    int sfd1 = signalfd(-1, &usr1, SFD_NONBLOCK);
    int sfd2 = signalfd(-1, &usr2, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd1 < 0 || sfd2 < 0)
        die("signalfd");
    if (kill(getpid(), SIGUSR1) != 0)
        die("kill SIGUSR1");

    int pr[2], pw[2];
    if (pipe(pr) != 0 || pipe(pw) != 0 || write(pr[1], "x", 1) != 1)
        die("pipe");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct { int fd; uint32_t events; uint64_t data; } watch[] = {
        { efd_shared, EPOLLIN, D_EFD },     { sfd2, EPOLLIN, D_SIG },
        { pr[0], EPOLLIN, D_PIPE_IN },      { pw[1], EPOLLOUT, D_PIPE_OUT },
        { t_expired, EPOLLIN, D_TIMER },
    };
    int nwatch = sizeof(watch) / sizeof(watch[0]);
    for (int i = 0; i < nwatch; i++) {
        struct epoll_event ev = { .events = watch[i].events, .data.u64 = watch[i].data };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, watch[i].fd, &ev) != 0)
            die("epoll_ctl ADD %d", watch[i].fd);
    }
    sleep_ms(110); /* t_expired expires, t_tick ticks 5 times */
    subject_ready();

    int64_t got_shared = 0, usr2_outside = 0;
    int bad = 0, missing = 0;
    while (!subject_stopping()) {
        struct epoll_event ev[16];
        sleep_ms(5); /* three watched fds are always ready: do not spin */
        int n = epoll_wait(ep, ev, 16, 0);
        if (n < 0) {
            if (errno != EINTR && !bad)
                bad = !check(0, "epoll_wait: %s", strerror(errno));
            continue;
        }
        int seen = 0;
        for (int i = 0; i < n; i++) {
            uint64_t d = ev[i].data.u64;
            uint32_t e = ev[i].events;
            uint32_t want = d == D_PIPE_OUT ? EPOLLOUT : EPOLLIN;
            if ((d != D_EFD && d != D_SIG && d != D_PIPE_IN && d != D_PIPE_OUT && d != D_TIMER) ||
                e != want) {
                if (!bad)
                    bad = !check(0, "epoll_wait reported data 0x%llx events 0x%x",
                                 (unsigned long long)d, e);
                continue;
            }
            if (d == D_EFD) {
                uint64_t v;
                if (read(efd_shared, &v, 8) == 8)
                    got_shared += v;
            } else if (d == D_SIG) {
                struct signalfd_siginfo si;
                while (read(sfd2, &si, sizeof(si)) == sizeof(si))
                    if (si.ssi_signo == SIGUSR2 && (pid_t)si.ssi_pid != getpid())
                        usr2_outside++;
            } else {
                seen |= d == D_PIPE_IN ? 1 : d == D_PIPE_OUT ? 2 : 4;
            }
        }
        if (n >= 0 && seen != 7 && !missing)
            missing = !check(0, "epoll_wait (%d events) did not report every always-ready fd "
                             "(seen mask %d of 7)", n, seen);
    }

    /* The child stops and says how much it added; what is left is in the counter. */
    kids_finish();
    uint64_t v;
    if (read(efd_shared, &v, 8) == 8)
        got_shared += v;
    check(a.nresults == 1 && got_shared == a.result[0][0],
          "shared eventfd: R read %lld in all, A added %lld", (long long)got_shared,
          (long long)(a.nresults ? a.result[0][0] : -1));
    check(got_shared > 0, "shared eventfd: nothing came through");

    /* epoll: the watches in fdinfo, then what epoll_wait and epoll_ctl say. */
    {
        char path[64], text[8192];
        snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
        int found = 0;
        if (read_file(path, text, sizeof(text)) < 0)
            check(0, "cannot read %s", path);
        for (char *line = strstr(text, "tfd:"); line; line = strstr(line + 1, "tfd:")) {
            int fd;
            unsigned events;
            unsigned long long data;
            if (sscanf(line, "tfd: %d events: %x data: %llx", &fd, &events, &data) != 3) {
                check(0, "epoll fdinfo line not understood: %.60s", line);
                continue;
            }
            events &= ~(unsigned)(EPOLLERR | EPOLLHUP);
            int i = 0;
            while (i < nwatch && watch[i].fd != fd)
                i++;
            if (i == nwatch || watch[i].events != events || watch[i].data != data)
                check(0, "epoll watches fd %d events 0x%x data 0x%llx, which it was not told to",
                      fd, events, data);
            else
                found++;
        }
        check(found == nwatch, "epoll fdinfo lists %d of the %d watches", found, nwatch);

        uint64_t d[16];
        uint32_t e[16];
        int n;
        epoll_report(ep, d, e, &n);
        check(n == 3 && reported(d, n, D_PIPE_IN) && reported(d, n, D_PIPE_OUT) &&
              reported(d, n, D_TIMER),
              "epoll_wait reports %d events (first data 0x%llx), expected the pipes' and the "
              "expired timer's", n, n ? (unsigned long long)d[0] : 0ull);
        int r = epoll_ctl(ep, EPOLL_CTL_DEL, pr[0], NULL);
        check(r == 0, "EPOLL_CTL_DEL of the pipe's read end (fd %d): %s", pr[0], strerror(errno));
        r = epoll_ctl(ep, EPOLL_CTL_DEL, pr[0], NULL);
        check(r < 0 && errno == ENOENT, "a second EPOLL_CTL_DEL of fd %d: %d (%s)", pr[0], r,
              strerror(errno));
        struct epoll_event mod = { .events = EPOLLOUT, .data.u64 = D_NEW };
        r = epoll_ctl(ep, EPOLL_CTL_MOD, pw[1], &mod);
        check(r == 0, "EPOLL_CTL_MOD of the pipe's write end (fd %d): %s", pw[1], strerror(errno));
        epoll_report(ep, d, e, &n);
        check(!reported(d, n, D_PIPE_IN) && reported(d, n, D_NEW) && !reported(d, n, D_PIPE_OUT),
              "after DEL and MOD epoll_wait reports %d events, not the expected ones", n);
        r = epoll_ctl(ep, EPOLL_CTL_DEL, efd_shared, NULL);
        check(r == 0, "EPOLL_CTL_DEL of the shared eventfd (fd %d): %s", efd_shared,
              strerror(errno));
    }

    /* eventfds */
    {
        char buf[64];
        check(strcmp(fdinfo(efd_sem, "eventfd-semaphore", buf, sizeof(buf)), "1") == 0 ||
              buf[0] == '\0', "eventfd sem: eventfd-semaphore '%s' in fdinfo", buf);
        int ones = 0;
        while (read(efd_sem, &v, 8) == 8 && v == 1 && ones < 10)
            ones++;
        check(ones == 5 && errno == EAGAIN, "eventfd sem: %d reads of 1 before EAGAIN, expected 5",
              ones);
        v = 0;
        ssize_t n = read(efd_big, &v, 8);
        check(n == 8 && v == big, "eventfd big: read %zd: 0x%llx, expected 0x%llx", n,
              (unsigned long long)v, (unsigned long long)big);
        check(fcntl(efd_big, F_GETFD) & FD_CLOEXEC, "eventfd big lost FD_CLOEXEC");
    }

    /* timerfds */
    check_timer(t_long, "long", CLOCK_MONOTONIC, 50, 100, long_at);
    check_timer(t_boot, "boot", CLOCK_BOOTTIME, 30, 0, boot_at);
    {
        uint64_t ticks = 0;
        ssize_t n = read(t_expired, &ticks, 8);
        check(n == 8 && ticks == 1, "timerfd expired: read %zd, %llu expirations, expected 1", n,
              (unsigned long long)ticks);
        n = read(t_expired, &ticks, 8);
        check(n < 0 && errno == EAGAIN, "timerfd expired: a second read gave %zd", n);
        check_timer(t_expired, "expired", CLOCK_MONOTONIC, 0, 0, 0);
        ticks = 0;
        n = read(t_tick, &ticks, 8);
        double since = (now_ns(CLOCK_MONOTONIC) - tick_at) / 1e9;
        check(n == 8 && ticks >= 5 && ticks <= since / 0.020 + 1,
              "timerfd tick: %llu expirations (read %zd) %.3f s after it was set every 20 ms; "
              "expected at least 5", (unsigned long long)ticks, n, since);
        struct itimerspec cur;
        timerfd_gettime(t_tick, &cur);
        check(ts_sec(cur.it_interval) == 0.020, "timerfd tick: interval %.9f s",
              ts_sec(cur.it_interval));
    }

    /* signalfds */
    {
        char buf[64];
        check(strcmp(fdinfo(sfd1, "sigmask", buf, sizeof(buf)), "0000000000000200") == 0,
              "signalfd usr1: sigmask %s in fdinfo", buf);
        check(strcmp(fdinfo(sfd2, "sigmask", buf, sizeof(buf)), "0000000000000800") == 0,
              "signalfd usr2: sigmask %s in fdinfo", buf);
        struct signalfd_siginfo si;
        memset(&si, 0, sizeof(si));
        ssize_t n = read(sfd1, &si, sizeof(si));
        check(n == sizeof(si) && si.ssi_signo == SIGUSR1 && (pid_t)si.ssi_pid == getpid(),
              "signalfd usr1: the SIGUSR1 pending since before ready: read %zd, signo %u pid %u", n,
              si.ssi_signo, si.ssi_pid);
        kill(getpid(), SIGUSR1);
        n = read(sfd1, &si, sizeof(si));
        check(n == sizeof(si) && si.ssi_signo == SIGUSR1, "signalfd usr1: a new SIGUSR1: read %zd",
              n);
        while (read(sfd2, &si, sizeof(si)) == sizeof(si))
            if (si.ssi_signo == SIGUSR2 && (pid_t)si.ssi_pid != getpid())
                usr2_outside++;
        check(usr2_outside >= expect_usr2, "signalfd usr2: %lld SIGUSR2 from outside, expected %ld",
              (long long)usr2_outside, expect_usr2);
        kill(getpid(), SIGUSR2);
        uint64_t d[16];
        uint32_t e[16];
        int m;
        epoll_report(ep, d, e, &m);
        check(reported(d, m, D_SIG), "a new SIGUSR2 is not reported by epoll_wait");
        memset(&si, 0, sizeof(si));
        n = read(sfd2, &si, sizeof(si));
        check(n == sizeof(si) && si.ssi_signo == SIGUSR2 && (pid_t)si.ssi_pid == getpid(),
              "signalfd usr2: a new SIGUSR2: read %zd signo %u", n, si.ssi_signo);
        sigset_t pending;
        sigpending(&pending);
        check(!sigismember(&pending, SIGUSR1) && !sigismember(&pending, SIGUSR2),
              "SIGUSR1/2 still pending after reading them");
    }
    return subject_finish();
}
