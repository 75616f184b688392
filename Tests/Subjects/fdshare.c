/*
 * fdshare — open file descriptions shared by the processes of a tree (files opened before
 * fork), and ones that must stay separate.
 *
 *   fdshare --out OUT --pidfile PID --dir DIR [--records N]
 *
 *   fdshare-R   the subject
 *   └─ fdshare-A   child
 *      └─ fdshare-G   grandchild
 *
 * Opened by R before forking, so one open file description each in all three processes:
 *   DIR/append.log  O_WRONLY|O_APPEND
 *   DIR/shared.dat  O_RDWR, no O_APPEND: writes go where the shared offset says
 *   DIR/feed.dat    O_RDONLY, N (default 100000) 16-byte records numbered 0..N-1
 * Every 2 ms each process appends a 16-byte record "<who><seq>\n" to append.log and writes
 * the same to shared.dat, and reads the next record of feed.dat. If the offset of shared.dat
 * were not shared, writers would overwrite each other; if feed.dat's were not, records would
 * be read twice. At SIGTERM (everyone stopped): both files hold exactly every writer's records
 * 0..n-1, whole and in order; the records read from feed.dat, over all processes, are exactly
 * 0..T-1 (count, sum and sum of squares), each process's increasing; the offsets of shared.dat
 * and feed.dat are the same in all three processes; append.log is O_APPEND everywhere.
 *
 * Opened separately after forking: DIR/sep.dat by R (offset 100, plus a dup() of it) and by A
 * (offset 200): those offsets stay as they were.
 */
#include "subject.h"
#include "family.h"

#define RECLEN 16

enum { R_WRITES, R_READS, R_SUM, R_SUMSQ, R_SHARED_POS, R_FEED_POS };

static int fd_app, fd_sh, fd_feed;
static const char *g_dir;

struct stats {
    char who;
    int64_t writes, reads, sum, sumsq, last;
    int bad_read;
};

static void path_in(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", g_dir, name);
}

/* One round: a record to both files, one record read from the feed. */
static void step(struct stats *s)
{
    char rec[RECLEN + 1];
    snprintf(rec, sizeof(rec), "%c%014lld\n", s->who, (long long)s->writes);
    if (write(fd_app, rec, RECLEN) != RECLEN || write(fd_sh, rec, RECLEN) != RECLEN) {
        if (!s->bad_read)
            s->bad_read = !check(0, "%c: write: %s", s->who, strerror(errno));
        return;
    }
    s->writes++;
    char in[RECLEN];
    ssize_t n = read(fd_feed, in, RECLEN);
    if (n == 0)
        return; /* the feed is used up */
    long long v = -1;
    if (n != RECLEN || sscanf(in, "%lld", &v) != 1 || v <= s->last) {
        if (!s->bad_read)
            s->bad_read = !check(0, "%c: read %zd bytes from feed.dat: value %lld after %lld",
                                 s->who, n, v, (long long)s->last);
        return;
    }
    s->last = v;
    s->reads++;
    s->sum += v;
    s->sumsq += v * v;
}

static void own_checks(const struct stats *s)
{
    check(fcntl(fd_app, F_GETFL) & O_APPEND, "%c: append.log lost O_APPEND", s->who);
    check(!(fcntl(fd_sh, F_GETFL) & O_APPEND), "%c: shared.dat became O_APPEND", s->who);
}

static void report(const struct stats *s)
{
    int64_t v[6] = { s->writes, s->reads, s->sum, s->sumsq, lseek(fd_sh, 0, SEEK_CUR),
                     lseek(fd_feed, 0, SEEK_CUR) };
    family_result(v);
}

static void grandchild(void *arg)
{
    (void)arg;
    struct stats s = { .who = 'G', .last = -1 };
    family_ready();
    while (!family_poll(2))
        step(&s);
    own_checks(&s);
    report(&s);
}

static void child(void *arg)
{
    (void)arg;
    char p[4096];
    path_in(p, sizeof(p), "sep.dat");
    int sep = open(p, O_RDWR);
    if (sep < 0 || lseek(sep, 200, SEEK_SET) != 200)
        die("fdshare-A: sep.dat");
    struct kid g;
    kid_spawn(&g, "fdshare-G", grandchild, NULL);
    struct stats s = { .who = 'A', .last = -1 };
    family_ready();
    while (!family_poll(2))
        step(&s);
    kids_finish();
    own_checks(&s);
    check(lseek(sep, 0, SEEK_CUR) == 200, "A: sep.dat offset %lld, was 200",
          (long long)lseek(sep, 0, SEEK_CUR));
    report(&s);
    if (g.nresults == 1)
        family_result(g.result[0]);
}

/* Every record of a file written by the three writers: whole, and each writer's 0..n-1 in
   order. */
static void check_records(const char *name, const int64_t writes[3], const char *who)
{
    char p[4096];
    path_in(p, sizeof(p), name);
    int fd = open(p, O_RDONLY);
    if (fd < 0) {
        check(0, "open %s: %s", p, strerror(errno));
        return;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    int64_t total = writes[0] + writes[1] + writes[2];
    check(size == total * RECLEN, "%s: %lld bytes, expected %lld records of %d", name,
          (long long)size, (long long)total, RECLEN);
    char *buf = malloc(size > 0 ? size : 1);
    if (!buf || pread(fd, buf, size, 0) != size) {
        check(0, "%s: cannot read it", name);
        close(fd);
        free(buf);
        return;
    }
    close(fd);
    int64_t next[3] = { 0, 0, 0 };
    for (off_t off = 0; off + RECLEN <= size; off += RECLEN) {
        char *r = buf + off;
        const char *w = memchr(who, r[0], 3);
        char *end;
        long long seq = strtoll(r + 1, &end, 10);
        if (!w || end != r + RECLEN - 1 || *end != '\n') {
            check(0, "%s: record at offset %lld is damaged: '%.15s'", name, (long long)off, r);
            break;
        }
        int i = w - who;
        if (seq != next[i]) {
            check(0, "%s: record at offset %lld is %c's %lld, expected its %lld", name,
                  (long long)off, r[0], seq, (long long)next[i]);
            break;
        }
        next[i]++;
    }
    for (int i = 0; i < 3; i++)
        check(next[i] == writes[i], "%s: %lld records of %c, it wrote %lld", name,
              (long long)next[i], who[i], (long long)writes[i]);
    free(buf);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    g_dir = opt_str("--dir", ".");
    long nrec = opt_long("--records", 100000);
    set_name("fdshare-R");
    char p[4096];
    path_in(p, sizeof(p), "feed.dat");
    {
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            die("create %s", p);
        char *buf = malloc(nrec * RECLEN + 1);
        if (!buf)
            die("malloc");
        for (long i = 0; i < nrec; i++)
            snprintf(buf + i * RECLEN, RECLEN + 1, "%015ld\n", i % 1000000000000000L);
        if (write_all(fd, buf, nrec * RECLEN) != 0 || close(fd) != 0)
            die("write %s", p);
        free(buf);
    }
    fd_feed = open(p, O_RDONLY);
    path_in(p, sizeof(p), "append.log");
    fd_app = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    path_in(p, sizeof(p), "shared.dat");
    fd_sh = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    path_in(p, sizeof(p), "sep.dat");
    int sep_init = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd_feed < 0 || fd_app < 0 || fd_sh < 0 || sep_init < 0 || ftruncate(sep_init, 4096) != 0)
        die("open files in %s", g_dir);
    close(sep_init);

    struct kid a;
    kid_spawn(&a, "fdshare-A", child, NULL);
    int sep = open(p, O_RDWR);
    if (sep < 0 || lseek(sep, 100, SEEK_SET) != 100)
        die("sep.dat");
    int sep_dup = dup(sep);
    subject_ready();

    struct stats s = { .who = 'R', .last = -1 };
    while (!subject_stopping()) {
        step(&s);
        sleep_ms(2);
    }
    kids_finish();
    own_checks(&s);
    check(a.nresults == 2, "R: %d results from A, expected 2 (A's and G's)", a.nresults);
    if (a.nresults == 2) {
        int64_t *ra = a.result[0], *rg = a.result[1];
        int64_t writes[3] = { s.writes, ra[R_WRITES], rg[R_WRITES] };
        check_records("shared.dat", writes, "RAG");
        check_records("append.log", writes, "RAG");
        off_t sh = lseek(fd_sh, 0, SEEK_CUR), feed = lseek(fd_feed, 0, SEEK_CUR);
        check(ra[R_SHARED_POS] == sh && rg[R_SHARED_POS] == sh,
              "shared.dat offset: R %lld, A %lld, G %lld (not one shared offset)", (long long)sh,
              (long long)ra[R_SHARED_POS], (long long)rg[R_SHARED_POS]);
        check(sh == (writes[0] + writes[1] + writes[2]) * RECLEN,
              "shared.dat offset %lld after %lld records", (long long)sh,
              (long long)(writes[0] + writes[1] + writes[2]));
        check(ra[R_FEED_POS] == feed && rg[R_FEED_POS] == feed,
              "feed.dat offset: R %lld, A %lld, G %lld (not one shared offset)", (long long)feed,
              (long long)ra[R_FEED_POS], (long long)rg[R_FEED_POS]);
        int64_t t = s.reads + ra[R_READS] + rg[R_READS];
        int64_t sum = s.sum + ra[R_SUM] + rg[R_SUM], sumsq = s.sumsq + ra[R_SUMSQ] + rg[R_SUMSQ];
        check(feed == t * RECLEN, "feed.dat offset %lld, but %lld records were read",
              (long long)feed, (long long)t);
        check(sum == t * (t - 1) / 2 && sumsq == (t - 1) * t * (2 * t - 1) / 6,
              "the %lld records read from feed.dat are not exactly 0..%lld once each (sum %lld, "
              "sum of squares %lld)", (long long)t, (long long)t - 1, (long long)sum,
              (long long)sumsq);
    }
    check(lseek(sep, 0, SEEK_CUR) == 100 && lseek(sep_dup, 0, SEEK_CUR) == 100,
          "R: sep.dat offset %lld (dup: %lld), was 100", (long long)lseek(sep, 0, SEEK_CUR),
          (long long)lseek(sep_dup, 0, SEEK_CUR));
    lseek(sep, 300, SEEK_SET);
    check(lseek(sep_dup, 0, SEEK_CUR) == 300, "R: sep.dat and its dup no longer share an offset");
    return subject_finish();
}
