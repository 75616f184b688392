/*
 * inotify — two inotify instances whose watches have sparse wd numbers.
 *
 *   inotify --out OUT --pidfile PID --dir DIR [--expect-outside NAME] [--watch-extra PATH]
 *           [--fanotify 1] [--skip-wds N]
 *
 * DIR/watched/ (a directory), DIR/watched/a and DIR/b are made at start.
 *   fd "events"  IN_NONBLOCK. wds 1..N (--skip-wds, 5) are used and removed first, so the watches get sparse
 *                numbers: DIR/watched (IN_CREATE|IN_DELETE|IN_MOVED_TO) and DIR/b
 *                (IN_MODIFY|IN_CLOSE_WRITE). The loop reads it every 10 ms: every event must
 *                come from one of those wds; IN_CREATE names seen are remembered.
 *   fd "oneshot" blocking, close-on-exec, one IN_ATTRIB|IN_ONESHOT watch on DIR/watched/a.
 *   --watch-extra PATH adds a watch on PATH to "events" (to make a dump refuse it).
 *   --fanotify 1 also keeps a fanotify group open (to make a dump refuse it).
 * At SIGTERM:
 *   - no stray event is queued on either fd (a restore must not leave its own events behind);
 *   - /proc/self/fdinfo lists exactly the watches, with their wd, inode and mask;
 *   - the flags: "events" non-blocking, "oneshot" blocking and close-on-exec;
 *   - creating DIR/watched/new gives IN_CREATE "new" on the directory's wd; writing DIR/b gives
 *     IN_MODIFY on b's wd; chmod of DIR/watched/a gives IN_ATTRIB on "oneshot", then IN_IGNORED;
 *   - --expect-outside NAME: an IN_CREATE for NAME (made by someone else) was seen;
 *   - a new watch gets a wd of its own.
 */
#include "subject.h"

#include <limits.h>
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#define DIR_MASK (IN_CREATE | IN_DELETE | IN_MOVED_TO)
#define B_MASK (IN_MODIFY | IN_CLOSE_WRITE)
#define A_MASK (IN_ATTRIB | IN_ONESHOT)

static int g_events, g_oneshot;
static int g_wd_dir, g_wd_b, g_wd_a, g_wd_extra = -1;
static char g_outside_seen[64][NAME_MAX + 1];
static int g_outside_count;

static void make_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0)
        die("create %s", path);
}

/* Reads every queued event of "events"; returns how many. With strict, each must come from a
 * watch the subject has. */
static int drain_events(int strict)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int count = 0;
    for (;;) {
        ssize_t n = read(g_events, buf, sizeof(buf));
        if (n <= 0) {
            check(n < 0 && errno == EAGAIN, "read of the events fd: %zd (%s)", n, strerror(errno));
            return count;
        }
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            count++;
            check(!strict || e->wd == g_wd_dir || e->wd == g_wd_b || e->wd == g_wd_extra,
                  "event mask %#x name '%s' from unknown wd %d", e->mask, e->len ? e->name : "", e->wd);
            if (e->wd == g_wd_dir && (e->mask & IN_CREATE) && e->len && g_outside_count < 64)
                snprintf(g_outside_seen[g_outside_count++], NAME_MAX + 1, "%s", e->name);
            p += sizeof(*e) + e->len;
        }
    }
}

/* Waits (up to 2 s) for one event on fd and returns it in *out (name in name). */
static int next_event(int fd, struct inotify_event *out, char *name, size_t namesz)
{
    static char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    static ssize_t len, off;
    static int buffered_fd = -1;
    if (buffered_fd != fd || off >= len) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 2000) != 1)
            return 0;
        len = read(fd, buf, sizeof(buf));
        off = 0;
        buffered_fd = fd;
        if (len <= 0)
            return 0;
    }
    struct inotify_event *e = (struct inotify_event *)(buf + off);
    *out = *e;
    snprintf(name, namesz, "%s", e->len ? e->name : "");
    off += sizeof(*e) + e->len;
    return 1;
}

/* The watch with wd in /proc/self/fdinfo/fd: its inode and mask must be ino and mask. */
static int count_watches(int fd, int wd, ino_t ino, unsigned mask)
{
    char path[64], buf[16384];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    if (read_file(path, buf, sizeof(buf)) < 0)
        return -1;
    int total = 0, found = 0;
    for (char *line = strstr(buf, "inotify wd:"); line; line = strstr(line + 1, "inotify wd:")) {
        unsigned w, m;
        unsigned long i;
        total++;
        if (sscanf(line, "inotify wd:%x ino:%lx sdev:%*x mask:%x", &w, &i, &m) == 3 && (int)w == wd) {
            found = 1;
            check(i == (unsigned long)ino, "fdinfo: wd %d watches inode %#lx, expected %#lx", wd, i, (unsigned long)ino);
            check(m == mask, "fdinfo: wd %d has mask %#x, expected %#x", wd, m, mask);
        }
    }
    check(found, "fdinfo of fd %d has no watch wd %d", fd, wd);
    return total;
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    const char *dir = opt_str("--dir", NULL);
    if (!dir)
        die("--dir DIR is required");
    const char *expect_outside = opt_str("--expect-outside", NULL);
    const char *extra = opt_str("--watch-extra", NULL);
    char watched[4096], a[4096], b[4096], fresh[4096];
    snprintf(watched, sizeof(watched), "%.4000s/watched", dir);
    snprintf(a, sizeof(a), "%.4000s/watched/a", dir);
    snprintf(b, sizeof(b), "%.4000s/b", dir);
    snprintf(fresh, sizeof(fresh), "%.4000s/watched/new", dir);
    if (mkdir(watched, 0755) != 0 && errno != EEXIST)
        die("mkdir %s", watched);
    make_file(a);
    make_file(b);

    g_events = inotify_init1(IN_NONBLOCK);
    g_oneshot = inotify_init1(IN_CLOEXEC);
    if (g_events < 0 || g_oneshot < 0)
        die("inotify_init1");
    /* Sparse wds: 1..N used and given back (wds are handed out cyclically). */
    long skip = opt_long("--skip-wds", 5);
    for (long i = 0; i < skip; i++) {
        int wd = inotify_add_watch(g_events, b, IN_MODIFY);
        if (wd < 0 || inotify_rm_watch(g_events, wd) != 0)
            die("burning wd %d", wd);
    }
    g_wd_dir = inotify_add_watch(g_events, watched, DIR_MASK);
    /* One more gap between the two. */
    int gap = inotify_add_watch(g_events, a, IN_MODIFY);
    if (gap < 0 || inotify_rm_watch(g_events, gap) != 0)
        die("gap wd");
    g_wd_b = inotify_add_watch(g_events, b, B_MASK);
    g_wd_a = inotify_add_watch(g_oneshot, a, A_MASK);
    if (g_wd_dir < 0 || g_wd_b < 0 || g_wd_a < 0)
        die("inotify_add_watch");
    if (extra && (g_wd_extra = inotify_add_watch(g_events, extra, IN_MODIFY)) < 0)
        die("inotify_add_watch %s", extra);
    if (opt_str("--fanotify", NULL) && fanotify_init(FAN_CLASS_NOTIF, O_RDONLY) < 0)
        die("fanotify_init");
    drain_events(0); /* the IN_IGNORED of the removed watches */
    g_outside_count = 0;

    subject_ready();
    while (!subject_stopping()) {
        drain_events(1);
        sleep_ms(10);
    }
    drain_events(1);

    /* Nothing stray queued: read "oneshot" without blocking. */
    int fl = fcntl(g_oneshot, F_GETFL);
    check(fl >= 0 && !(fl & O_NONBLOCK), "oneshot fd flags %#x: non-blocking", fl);
    check(fcntl(g_oneshot, F_GETFD) == FD_CLOEXEC, "oneshot fd is not close-on-exec");
    fl = fcntl(g_events, F_GETFL);
    check(fl >= 0 && (fl & O_NONBLOCK), "events fd flags %#x: blocking", fl);
    check(fcntl(g_events, F_GETFD) == 0, "events fd is close-on-exec");
    struct pollfd p = { g_oneshot, POLLIN, 0 };
    check(poll(&p, 1, 0) == 0, "an event is queued on the oneshot fd before anything happened");

    struct stat st_dir, st_a, st_b;
    if (stat(watched, &st_dir) || stat(a, &st_a) || stat(b, &st_b))
        die("stat");
    int n = count_watches(g_events, g_wd_dir, st_dir.st_ino, DIR_MASK);
    count_watches(g_events, g_wd_b, st_b.st_ino, B_MASK);
    check(n == (extra ? 3 : 2), "fdinfo of the events fd lists %d watches", n);
    check(count_watches(g_oneshot, g_wd_a, st_a.st_ino, A_MASK) == 1, "fdinfo of the oneshot fd lists another watch");

    if (expect_outside) {
        int seen = 0;
        for (int i = 0; i < g_outside_count; i++)
            seen |= strcmp(g_outside_seen[i], expect_outside) == 0;
        check(seen, "no IN_CREATE '%s' came on wd %d (%d other names)", expect_outside, g_wd_dir, g_outside_count);
    }

    /* Events made now arrive on the original wds. */
    struct inotify_event e;
    char name[NAME_MAX + 1];
    make_file(fresh);
    if (check(next_event(g_events, &e, name, sizeof(name)), "no event for creating %s", fresh))
        check(e.wd == g_wd_dir && (e.mask & IN_CREATE) && strcmp(name, "new") == 0,
              "creating %s gave wd %d mask %#x name '%s', expected wd %d IN_CREATE 'new'", fresh, e.wd, e.mask, name, g_wd_dir);
    int fd = open(b, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0 || write(fd, "x", 1) != 1 || close(fd) != 0)
        die("write %s", b);
    if (check(next_event(g_events, &e, name, sizeof(name)), "no event for writing %s", b))
        check(e.wd == g_wd_b && (e.mask & IN_MODIFY), "writing %s gave wd %d mask %#x, expected wd %d IN_MODIFY", b, e.wd, e.mask, g_wd_b);
    if (chmod(a, 0600) != 0)
        die("chmod %s", a);
    if (check(next_event(g_oneshot, &e, name, sizeof(name)), "no event for chmod %s", a))
        check(e.wd == g_wd_a && (e.mask & IN_ATTRIB), "chmod %s gave wd %d mask %#x, expected wd %d IN_ATTRIB", a, e.wd, e.mask, g_wd_a);
    if (check(next_event(g_oneshot, &e, name, sizeof(name)), "no IN_IGNORED after the one-shot event"))
        check(e.wd == g_wd_a && (e.mask & IN_IGNORED), "after the one-shot event: wd %d mask %#x", e.wd, e.mask);

    int another = inotify_add_watch(g_events, dir, IN_DELETE);
    check(another >= 0 && another != g_wd_dir && another != g_wd_b, "a new watch got wd %d (dir %d, b %d)", another, g_wd_dir, g_wd_b);

    unlink(fresh);
    return subject_finish();
}
