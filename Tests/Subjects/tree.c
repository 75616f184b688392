/*
 * tree — a process tree: children, grandchildren and a great-grandchild, some with threads,
 * three process groups in one session, and two zombies.
 *
 *   tree --out OUT --pidfile PID
 *
 *   tree-R   the subject: session leader (setsid), group R, 1 extra thread
 *   ├─ tree-Z      exited with status 7 before "ready"; R does not reap it until the end
 *   ├─ tree-A      makes its own process group (setpgid(0, 0)), 2 extra threads
 *   │  ├─ tree-A1     group A
 *   │  ├─ tree-A2     group A, 1 extra thread
 *   │  │  └─ tree-A2a    group A
 *   │  └─ tree-AZ    exited with status 9, reaped by A at the end
 *   ├─ tree-B      joins its sibling A's group (setpgid(0, A))
 *   │  └─ tree-B1     group A
 *   └─ tree-C      group R
 *      └─ tree-C1     its own group (setpgid(0, 0)), 1 extra thread
 *
 * (Names are the processes' comm, threads are "<name>-tN".) Every process, every 10 ms,
 * checks its own pid, parent, group and session, checks that its zombie is still a zombie, and
 * pings each of its children over a pipe; a child answers with its pid, parent, group, session
 * and thread count, which must not change. At SIGTERM the root stops the tree from the top:
 * each process checks its threads still run, collects its children's verdicts, and reaps its
 * zombie, whose wait status must be exactly what it exited with.
 */
#include "subject.h"
#include "family.h"

enum { PG_INHERIT, PG_OWN, PG_JOIN_SIBLING };

struct node {
    const char *name;
    int pgmode;
    int join;       /* PG_JOIN_SIBLING: index (in nodes[]) of the sibling whose group to join */
    int threads;    /* extra threads */
    int zombie;     /* exit status of a zombie child, 0 for none */
    int kids[4];    /* indices in nodes[] */
    int nkids;
};

static const struct node nodes[] = {
    /* 0 */ { "tree-R", PG_INHERIT, 0, 1, 7, { 1, 5, 7 }, 3 },
    /* 1 */ { "tree-A", PG_OWN, 0, 2, 9, { 2, 3 }, 2 },
    /* 2 */ { "tree-A1", PG_INHERIT, 0, 0, 0, { 0 }, 0 },
    /* 3 */ { "tree-A2", PG_INHERIT, 0, 1, 0, { 4 }, 1 },
    /* 4 */ { "tree-A2a", PG_INHERIT, 0, 0, 0, { 0 }, 0 },
    /* 5 */ { "tree-B", PG_JOIN_SIBLING, 1, 0, 0, { 6 }, 1 },
    /* 6 */ { "tree-B1", PG_INHERIT, 0, 0, 0, { 0 }, 0 },
    /* 7 */ { "tree-C", PG_INHERIT, 0, 0, 0, { 8 }, 1 },
    /* 8 */ { "tree-C1", PG_OWN, 0, 1, 0, { 0 }, 0 },
};
#define NNODES ((int)(sizeof(nodes) / sizeof(nodes[0])))

struct spawn_arg {
    int index;
    pid_t pgid; /* PG_JOIN_SIBLING: the group to join */
};

static pid_t g_sid;

static void body(void *p);

/* One node of the tree, built and run in the calling process. Returns when it is told to stop
   and has checked itself and its children (the root's check() results are in g_fail). */
static void run_node(int index, pid_t join_pgid, int is_root)
{
    const struct node *n = &nodes[index];
    set_name("%s", n->name);

    if (n->pgmode == PG_OWN && setpgid(0, 0) != 0)
        die("%s: setpgid(0, 0)", n->name);
    if (n->pgmode == PG_JOIN_SIBLING && setpgid(0, join_pgid) != 0)
        die("%s: setpgid(0, %d)", n->name, join_pgid);
    pid_t want_pgid = n->pgmode == PG_OWN ? getpid()
                      : n->pgmode == PG_JOIN_SIBLING ? join_pgid : getpgrp();
    if (getpgrp() != want_pgid)
        die("%s: process group %d, wanted %d", n->name, getpgrp(), want_pgid);

    /* The zombie: exits at once; wait (without reaping) until it has. */
    pid_t zombie = 0;
    if (n->zombie) {
        zombie = fork();
        if (zombie < 0)
            die("%s: fork zombie", n->name);
        if (zombie == 0) {
            set_name("%.8sZ", index == 0 ? "tree-" : n->name);
            _exit(n->zombie);
        }
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        if (waitid(P_PID, zombie, &si, WEXITED | WNOWAIT) != 0)
            die("%s: waitid zombie %d", n->name, zombie);
    }

    struct kid kids[4];
    pid_t kid_pid[NNODES];
    memset(kid_pid, 0, sizeof(kid_pid));
    for (int i = 0; i < n->nkids; i++) {
        int ci = n->kids[i];
        struct spawn_arg a = { ci, 0 };
        if (nodes[ci].pgmode == PG_JOIN_SIBLING) {
            a.pgid = kid_pid[nodes[ci].join];
            if (a.pgid == 0)
                die("%s: sibling %s to join is not spawned yet", n->name, nodes[nodes[ci].join].name);
        }
        kid_spawn(&kids[i], nodes[ci].name, body, &a);
        kid_pid[ci] = kids[i].pid;
    }

    struct worker workers[4];
    workers_start(workers, n->threads, n->name);

    pid_t me = getpid(), ppid = getppid(), pgid = getpgrp(), sid = getsid(0);
    if (sid != g_sid)
        die("%s: session %d, expected %d", n->name, sid, g_sid);
    int threads = count_threads();
    if (threads != 1 + n->threads)
        die("%s: %d threads, expected %d", n->name, threads, 1 + n->threads);

    if (is_root)
        subject_ready();
    else
        family_ready();

    int bad_id = 0, bad_zombie = 0;
    uint32_t seq = 0;
    while (!family_poll(10)) {
        g_progress++;
        pid_t now[4] = { getpid(), getppid(), getpgrp(), getsid(0) };
        pid_t was[4] = { me, ppid, pgid, sid };
        static const char *what[4] = { "pid", "ppid", "pgid", "sid" };
        for (int i = 0; i < 4 && !bad_id; i++)
            if (now[i] != was[i] && !(is_root && i == 1)) /* the root's parent is the restorer */
                bad_id = !check(0, "%s: %s is %d, was %d", n->name, what[i], now[i], was[i]);
        if (zombie && !bad_zombie) {
            siginfo_t si;
            memset(&si, 0, sizeof(si));
            int r = waitid(P_PID, zombie, &si, WEXITED | WNOHANG | WNOWAIT);
            if (r != 0 || si.si_pid != zombie || si.si_code != CLD_EXITED ||
                si.si_status != n->zombie)
                bad_zombie = !check(0, "%s: zombie %d: waitid %d (%s) pid %d code %d status %d",
                                    n->name, zombie, r, r ? strerror(errno) : "ok", si.si_pid,
                                    si.si_code, si.si_status);
        }
        seq++;
        for (int i = 0; i < n->nkids; i++)
            if (!kids[i].finished && !kid_ping(&kids[i], seq))
                kids_finish(); /* stop at the first failure: the verdicts say the rest */
    }

    workers_finish(workers, n->threads);
    kids_finish();
    if (zombie) {
        int st = 0;
        pid_t w = waitpid(zombie, &st, WNOHANG);
        check(w == zombie && WIFEXITED(st) && WEXITSTATUS(st) == n->zombie,
              "%s: waitpid(zombie %d) = %d, wait status 0x%x, expected exit status %d", n->name,
              zombie, (int)w, st, n->zombie);
    }
    check(getpid() == me && (is_root || getppid() == ppid) && getpgrp() == pgid && getsid(0) == sid,
          "%s: at the end pid/ppid/pgid/sid %d/%d/%d/%d, were %d/%d/%d/%d", n->name, getpid(),
          getppid(), getpgrp(), getsid(0), me, ppid, pgid, sid);
}

static void body(void *p)
{
    const struct spawn_arg *a = p;
    run_node(a->index, a->pgid, 0);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    /* The harness starts subjects in a new session already; then setsid fails with EPERM. */
    if (setsid() < 0 && !(errno == EPERM && getsid(0) == getpid()))
        die("setsid");
    g_sid = getsid(0);
    run_node(0, 0, 1);
    return subject_finish();
}
