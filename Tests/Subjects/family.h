/*
 * family.h — subjects that are process trees (header-only; include after subject.h).
 *
 * The subject itself is the root. Every other process of the tree is spawned with
 * kid_spawn(), which gives parent and child a control channel (two pipes):
 *
 *   parent -> child   PING(seq)  QUIT
 *   child  -> parent  READY(identity)  PONG(seq, identity)  RESULT(6 numbers)  VERDICT(text)
 *
 * A child builds its state (spawning its own children, each of which is READY before the next
 * is spawned), then calls family_ready(). It works in a loop `while (!family_poll(ms))`:
 * family_poll() sleeps up to ms while answering PINGs, and returns 1 once the parent sent QUIT.
 * Then the child stops its own children (kids_finish), checks its state with check(), may send
 * RESULT frames (family_result; the parent keeps the first 4) and calls family_exit(), which
 * sends "PASS" or the failure text and _exits 0 or 1. A child whose parent is gone (end of
 * file on the channel) _exits 4 at once, so a killed tree does not linger.
 *
 * The root loops on subject_stopping() and at the end calls kids_finish(): QUIT to every child,
 * then each child's RESULTs, verdict and exit status are collected; a child's FAIL (which
 * includes its own children's) becomes the root's, prefixed with the child's name and pid.
 *
 * Waits on the channel are bounded by a number of 1 s polls rather than a deadline, so the
 * time a checkpointed tree spends dead does not count as a timeout.
 */
#ifndef CRYO_FAMILY_H
#define CRYO_FAMILY_H

#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define FAMILY_MAX_KIDS 16
#define FAMILY_WAIT_POLLS 60 /* 1 s polls before a silent peer counts as lost */

enum { F_PING = 1, F_QUIT, F_READY, F_PONG, F_RESULT, F_VERDICT };

/* Identity fields of READY and PONG frames. */
enum { ID_PID, ID_PPID, ID_PGID, ID_SID, ID_PROGRESS, ID_THREADS };

struct frame {
    uint32_t type;
    uint32_t seq;
    int64_t v[6];
};

struct kid {
    const char *name;
    pid_t pid;
    int to;   /* write end: parent -> child */
    int from; /* read end: child -> parent */
    struct frame ready;
    int64_t result[4][6]; /* the first 4 RESULT frames */
    int nresults;
    int finished;
};

static struct kid *g_kids[FAMILY_MAX_KIDS];
static int g_nkids;
static int g_up_in = -1, g_up_out = -1; /* a child's channel to its parent */
static const char *g_self = "root";
static volatile int64_t g_progress; /* reported in PONGs */
static int g_quit;

static __attribute__((unused)) pid_t my_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static __attribute__((unused)) void set_name(const char *fmt, ...)
{
    char name[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

static __attribute__((unused)) int count_threads(void)
{
    char buf[64];
    if (status_field("/proc/self/status", "Threads", buf, sizeof(buf)) != 0)
        return -1;
    return atoi(buf);
}

/* Write all of buf (blocking fds; retries partial writes, EINTR and EAGAIN). */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pfd = { fd, POLLOUT, 0 };
                poll(&pfd, 1, 100);
                continue;
            }
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

/* Read exactly len bytes, waiting at most FAMILY_WAIT_POLLS polls of 1 s with no data.
   Returns 0, -1 on end of file or error (errno), -2 on timeout. */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    int idle = 0;
    while (len > 0) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        int r = poll(&pfd, 1, 1000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            if (++idle >= FAMILY_WAIT_POLLS)
                return -2;
            continue;
        }
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = 0;
            return -1;
        }
        idle = 0;
        p += n;
        len -= n;
    }
    return 0;
}

static void fill_identity(struct frame *f)
{
    f->v[ID_PID] = getpid();
    f->v[ID_PPID] = getppid();
    f->v[ID_PGID] = getpgrp();
    f->v[ID_SID] = getsid(0);
    f->v[ID_PROGRESS] = g_progress;
    f->v[ID_THREADS] = count_threads();
}

static void send_up(uint32_t type, uint32_t seq, const int64_t *v)
{
    struct frame f = { .type = type, .seq = seq };
    if (v)
        memcpy(f.v, v, sizeof(f.v));
    else
        fill_identity(&f);
    if (write_all(g_up_out, &f, sizeof(f)) != 0)
        _exit(4); /* parent gone */
}

/* Child: its state is built (and its own children are ready). */
static __attribute__((unused)) void family_ready(void) { send_up(F_READY, 0, NULL); }

/* Child: send up to 6 numbers for the parent (collected by kids_finish into kid.result). */
static __attribute__((unused)) void family_result(const int64_t v[6]) { send_up(F_RESULT, 0, v); }

/* Child: sleep up to ms while answering PINGs; returns 1 once QUIT arrived. Root: sleep, and
   return subject_stopping(). */
static __attribute__((unused)) int family_poll(int ms)
{
    if (g_up_in < 0) {
        if (!subject_stopping())
            sleep_ms(ms);
        return subject_stopping();
    }
    if (g_quit)
        return 1;
    struct pollfd pfd = { g_up_in, POLLIN, 0 };
    int r = poll(&pfd, 1, ms);
    if (r <= 0)
        return 0;
    for (;;) {
        struct frame f;
        ssize_t n = read(g_up_in, &f, sizeof(f));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n == 0 || n < 0)
            _exit(4); /* parent gone */
        if (n != sizeof(f) && read_full(g_up_in, (char *)&f + n, sizeof(f) - n) != 0)
            _exit(4);
        if (f.type == F_PING)
            send_up(F_PONG, f.seq, NULL);
        else if (f.type == F_QUIT)
            g_quit = 1;
        else
            check(0, "%s: unexpected frame type %u from parent", g_self, f.type);
    }
    return g_quit;
}

/* Child: report the verdict to the parent and exit. */
static __attribute__((unused, noreturn)) void family_exit(void)
{
    char text[sizeof(g_fail) + 8];
    int n = snprintf(text, sizeof(text), "%s", g_failures ? g_fail : "PASS");
    if (n >= (int)sizeof(text))
        n = sizeof(text) - 1;
    struct frame f = { .type = F_VERDICT, .seq = (uint32_t)n };
    write_all(g_up_out, &f, sizeof(f));
    write_all(g_up_out, text, n);
    _exit(g_failures ? 1 : 0);
}

/* Parent: read the next frame from a child (bounded wait). Returns 0 or a read_full error. */
static int kid_frame(struct kid *k, struct frame *f) { return read_full(k->from, f, sizeof(*f)); }

static const char *wait_error(int r)
{
    return r == -2 ? "no answer within 60 s" : "its channel closed (it died?)";
}

/* Parent: fork a child that runs body(arg), then family_exit(). Returns once the child sent
   READY (its identity is in k->ready); a child that dies first fails the setup. */
static __attribute__((unused)) void kid_spawn(struct kid *k, const char *name,
                                              void (*body)(void *), void *arg)
{
    int down[2], up[2];
    if (g_nkids >= FAMILY_MAX_KIDS)
        die("too many children");
    signal(SIGPIPE, SIG_IGN); /* a dead child is reported, not fatal (inherited by the child) */
    if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0)
        die("pipe2 for child %s", name);
    pid_t pid = fork();
    if (pid < 0)
        die("fork %s", name);
    if (pid == 0) {
        for (int i = 0; i < g_nkids; i++) {
            close(g_kids[i]->to);
            close(g_kids[i]->from);
        }
        g_nkids = 0;
        if (g_up_in >= 0)
            close(g_up_in);
        if (g_up_out >= 0)
            close(g_up_out);
        close(down[1]);
        close(up[0]);
        g_up_in = down[0];
        g_up_out = up[1];
        if (fcntl(g_up_in, F_SETFL, O_NONBLOCK) != 0)
            _exit(5);
        g_self = name;
        g_failures = 0;
        g_fail[0] = '\0';
        g_quit = 0;
        g_progress = 0;
        set_name("%s", name);
        body(arg);
        family_exit();
    }
    close(down[0]);
    close(up[1]);
    memset(k, 0, sizeof(*k));
    k->name = name;
    k->pid = pid;
    k->to = down[1];
    k->from = up[0];
    g_kids[g_nkids++] = k;
    int r = kid_frame(k, &k->ready);
    if (r != 0 || k->ready.type != F_READY) {
        int st = 0;
        waitpid(pid, &st, WNOHANG);
        die("child %s (pid %d) did not get ready: %s (wait status 0x%x)", name, pid,
            r ? wait_error(r) : "unexpected frame", st);
    }
}

static __attribute__((unused)) void kid_send(struct kid *k, uint32_t type, uint32_t seq)
{
    struct frame f = { .type = type, .seq = seq };
    if (write_all(k->to, &f, sizeof(f)) != 0)
        check(0, "%s: cannot write to child %s (pid %d): %s", g_self, k->name, k->pid,
              strerror(errno));
}

/* Parent: PING a child and check its PONG against the identity it had when READY (pid, ppid,
   process group, session, threads). Returns 1 if it answered and nothing changed. */
static __attribute__((unused)) int kid_ping(struct kid *k, uint32_t seq)
{
    static const char *field[] = { "pid", "ppid", "pgid", "sid" };
    kid_send(k, F_PING, seq);
    struct frame f;
    int r = kid_frame(k, &f);
    if (r != 0)
        return check(0, "%s: child %s (pid %d) did not answer ping %u: %s", g_self, k->name,
                     k->pid, seq, wait_error(r));
    if (f.type != F_PONG || f.seq != seq)
        return check(0, "%s: child %s (pid %d) answered ping %u with frame %u seq %u", g_self,
                     k->name, k->pid, seq, f.type, f.seq);
    int ok = 1;
    for (int i = ID_PID; i <= ID_SID; i++)
        if (f.v[i] != k->ready.v[i])
            ok = check(0, "%s: child %s (pid %d) reports %s %lld, was %lld", g_self, k->name,
                       k->pid, field[i], (long long)f.v[i], (long long)k->ready.v[i]);
    if (f.v[ID_THREADS] != k->ready.v[ID_THREADS])
        ok = check(0, "%s: child %s (pid %d) has %lld threads, had %lld", g_self, k->name, k->pid,
                   (long long)f.v[ID_THREADS], (long long)k->ready.v[ID_THREADS]);
    return ok;
}

/* Parent: QUIT every child, collect RESULTs, verdicts and exit statuses. */
static __attribute__((unused)) void kids_finish(void)
{
    for (int i = 0; i < g_nkids; i++)
        kid_send(g_kids[i], F_QUIT, 0);
    for (int i = 0; i < g_nkids; i++) {
        struct kid *k = g_kids[i];
        char text[sizeof(g_fail) + 8] = "";
        int got_verdict = 0;
        for (;;) {
            struct frame f;
            int r = kid_frame(k, &f);
            if (r != 0) {
                check(0, "%s: child %s (pid %d) gave no verdict: %s", g_self, k->name, k->pid,
                      wait_error(r));
                break;
            }
            if (f.type == F_PONG)
                continue; /* answer to a ping sent before QUIT */
            if (f.type == F_RESULT) {
                if (k->nresults < 4)
                    memcpy(k->result[k->nresults], f.v, sizeof(k->result[0]));
                k->nresults++;
                continue;
            }
            if (f.type == F_VERDICT && f.seq < sizeof(text)) {
                if (read_full(k->from, text, f.seq) == 0) {
                    text[f.seq] = '\0';
                    got_verdict = 1;
                } else {
                    check(0, "%s: child %s (pid %d): verdict cut short", g_self, k->name, k->pid);
                }
                break;
            }
            check(0, "%s: child %s (pid %d) sent frame type %u", g_self, k->name, k->pid, f.type);
            break;
        }
        int st = 0;
        pid_t w;
        do
            w = waitpid(k->pid, &st, 0);
        while (w < 0 && errno == EINTR);
        if (w != k->pid)
            check(0, "%s: waitpid(%s, pid %d) = %d (%s)", g_self, k->name, k->pid, (int)w,
                  strerror(errno));
        else if (got_verdict && strcmp(text, "PASS") != 0)
            check(0, "%s (pid %d): %s", k->name, k->pid, text);
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            check(0, "%s (pid %d) ended with wait status 0x%x", k->name, k->pid, st);
        close(k->to);
        close(k->from);
        k->finished = 1;
    }
    g_nkids = 0;
}

/* ---- worker threads: each keeps checking its tid and counting ---- */

struct worker {
    pthread_t thread;
    char name[32]; /* comm keeps the first 15 bytes */
    pid_t pid, tid;
    volatile uint64_t count;
    volatile int stop;
    volatile int bad_tid, bad_pid;
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    prctl(PR_SET_NAME, w->name, 0, 0, 0);
    w->tid = my_gettid();
    while (!w->stop) {
        if (my_gettid() != w->tid)
            w->bad_tid = my_gettid();
        if (getpid() != w->pid)
            w->bad_pid = getpid();
        __atomic_add_fetch(&w->count, 1, __ATOMIC_RELAXED);
        sleep_ms(2);
    }
    return NULL;
}

static __attribute__((unused)) void workers_start(struct worker *w, int n, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        snprintf(w[i].name, sizeof(w[i].name), "%.12s-t%d", prefix, (i + 1) % 100);
        w[i].pid = getpid();
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0)
            die("pthread_create %s", w[i].name);
    }
    for (int i = 0; i < n; i++)
        while (__atomic_load_n(&w[i].count, __ATOMIC_RELAXED) == 0)
            sleep_ms(1);
}

/* The threads still run (their counters move), kept their tids, then stop and join them. */
static __attribute__((unused)) void workers_finish(struct worker *w, int n)
{
    uint64_t before[16];
    for (int i = 0; i < n && i < 16; i++)
        before[i] = __atomic_load_n(&w[i].count, __ATOMIC_RELAXED);
    for (int tries = 0; tries < 500; tries++) {
        int moved = 1;
        for (int i = 0; i < n && i < 16; i++)
            if (__atomic_load_n(&w[i].count, __ATOMIC_RELAXED) == before[i])
                moved = 0;
        if (moved)
            break;
        sleep_ms(2);
    }
    for (int i = 0; i < n && i < 16; i++) {
        check(w[i].count != before[i], "%s: thread %s (tid %d) does not run", g_self, w[i].name,
              w[i].tid);
        check(!w[i].bad_tid, "%s: thread %s: gettid %d, was %d", g_self, w[i].name, w[i].bad_tid,
              w[i].tid);
        check(!w[i].bad_pid, "%s: thread %s: getpid %d, was %d", g_self, w[i].name, w[i].bad_pid,
              w[i].pid);
        w[i].stop = 1;
    }
    for (int i = 0; i < n; i++)
        pthread_join(w[i].thread, NULL);
}

#endif
