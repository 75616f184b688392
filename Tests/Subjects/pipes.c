/*
 * pipes — pipes between the processes of a tree, with data in flight.
 *
 *   pipes --out OUT --pidfile PID [--left BYTES] [--pipe-size BYTES]
 *
 *   pipes-R   the subject
 *   └─ pipes-A   child
 *      └─ pipes-G   grandchild
 *
 * A message protocol: R sends numbered 8-byte messages (0, 1, 2, ...) to A over pipe M; A
 * forwards each to G over pipe N and acknowledges it to R over pipe K; G acknowledges each to
 * R over the same pipe K (its write end is shared by A and G: one open file description, set
 * O_NONBLOCK by G). R keeps up to 64 messages unacknowledged, so messages and acks are usually
 * sitting in M, N and K. Every receiver checks it gets each number exactly once, in order: A
 * and G the messages, R the acks of each of A and G. At SIGTERM R sends a stop message; A and G
 * answer with how many messages they received, which must be exactly how many R sent.
 *
 * Data left in buffers since before "ready", read only at the end:
 *   L  R -> A: --left bytes (default 40000) of a pattern; R closes its end at the end and A
 *      must read exactly those bytes, then end of file. With --pipe-size, L's capacity is set
 *      to that (F_SETPIPE_SZ) and A checks it is still so.
 *   S  both ends in R: 1000 bytes; the read end is O_NONBLOCK, the write end not. R reads the
 *      1000 bytes back, then EAGAIN, then writes and reads through it once more.
 */
#include "subject.h"
#include "family.h"

#define WINDOW 64
#define STOP UINT64_MAX
#define SELF_BYTES 1000

enum { SRC_A = 1, SRC_G = 2 };
enum { K_ACK = 0, K_FINAL = 1 };

struct rec {
    uint32_t src;
    uint32_t kind;
    uint64_t seq;
};

static int M[2], N[2], K[2], L[2], S[2];
static long g_left;
static long g_pipe_size;

static uint8_t pattern(uint64_t i, uint64_t seed) { return (uint8_t)(splitmix64(seed + i / 8) >> (8 * (i % 8))); }

static int fl(int fd) { return fcntl(fd, F_GETFL); }

static void send_rec(uint32_t src, uint32_t kind, uint64_t seq)
{
    struct rec r = { src, kind, seq };
    if (write_all(K[1], &r, sizeof(r)) != 0)
        _exit(4);
}

/* A receiver of numbered messages (A or G): returns the count received, up to STOP. */
static uint64_t receive(int in, int fwd, uint32_t src, const char *who)
{
    uint64_t expect = 0, count = 0;
    int reported = 0;
    for (;;) {
        uint64_t v;
        int r = read_full(in, &v, sizeof(v));
        if (r == -1)
            _exit(4); /* the sender is gone */
        if (r == -2) {
            check(0, "%s: no message for 60 s after %llu", who, (unsigned long long)count);
            return count;
        }
        if (v == STOP) {
            if (fwd >= 0 && write_all(fwd, &v, sizeof(v)) != 0)
                check(0, "%s: forwarding stop: %s", who, strerror(errno));
            return count;
        }
        if (v != expect && !reported)
            reported = !check(0, "%s: got message %llu, expected %llu", who, (unsigned long long)v,
                              (unsigned long long)expect);
        expect = v + 1;
        count++;
        if (fwd >= 0 && write_all(fwd, &v, sizeof(v)) != 0 && !reported)
            reported = !check(0, "%s: forwarding %llu: %s", who, (unsigned long long)v, strerror(errno));
        send_rec(src, K_ACK, v);
        if (src == SRC_G && count % 16 == 0)
            sleep_ms(1); /* let messages pile up in N */
    }
}

static void grandchild(void *arg)
{
    (void)arg;
    close(N[1]);
    close(L[0]);
    int fl_k = fl(K[1]);
    if (fcntl(K[1], F_SETFL, fl_k | O_NONBLOCK) != 0)
        die("pipes-G: O_NONBLOCK on K");
    family_ready();
    uint64_t count = receive(N[0], -1, SRC_G, "pipes-G");
    send_rec(SRC_G, K_FINAL, count);
    while (!family_poll(50))
        ;
    check(fl(K[1]) & O_NONBLOCK, "pipes-G: K's write end lost O_NONBLOCK (flags 0%o)", fl(K[1]));
    check(!(fl(N[0]) & O_NONBLOCK), "pipes-G: N's read end became O_NONBLOCK");
}

static void child(void *arg)
{
    (void)arg;
    close(M[1]);
    close(K[0]);
    close(L[1]);
    close(S[0]);
    close(S[1]);
    if (pipe(N) != 0)
        die("pipes-A: pipe N");
    struct kid g;
    kid_spawn(&g, "pipes-G", grandchild, NULL);
    close(N[0]);
    int size_at_start = fcntl(L[0], F_GETPIPE_SZ);
    family_ready();
    uint64_t count = receive(M[0], N[1], SRC_A, "pipes-A");
    send_rec(SRC_A, K_FINAL, count);
    while (!family_poll(50))
        ;
    /* The leftover bytes, then end of file (R closed its end before QUIT). */
    check(fcntl(L[0], F_GETPIPE_SZ) == size_at_start, "pipes-A: L's capacity is %d, was %d",
          fcntl(L[0], F_GETPIPE_SZ), size_at_start);
    if (g_pipe_size)
        check(size_at_start == g_pipe_size, "pipes-A: L's capacity %d, set to %ld", size_at_start,
              g_pipe_size);
    static uint8_t buf[1 << 20];
    long got = 0;
    for (;;) {
        ssize_t n = read(L[0], buf + got, sizeof(buf) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += n;
    }
    long bad = -1;
    for (long i = 0; i < got && bad < 0; i++)
        if (buf[i] != pattern(i, 0x1eF7))
            bad = i;
    check(got == g_left && bad < 0, "pipes-A: read %ld leftover bytes from L (expected %ld), first "
          "wrong byte at %ld", got, g_left, bad);
    check(fl(K[1]) & O_NONBLOCK, "pipes-A: K's write end (shared with G) lost O_NONBLOCK");
    kids_finish();
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    g_left = opt_long("--left", 40000);
    g_pipe_size = opt_long("--pipe-size", 0);
    set_name("pipes-R");
    if (pipe(M) != 0 || pipe(K) != 0 || pipe(L) != 0 || pipe(S) != 0)
        die("pipe");
    if (g_pipe_size && fcntl(L[1], F_SETPIPE_SZ, (int)g_pipe_size) < 0)
        die("F_SETPIPE_SZ %ld", g_pipe_size);
    long cap = fcntl(L[1], F_GETPIPE_SZ);
    if (g_left < 0 || g_left >= cap)
        die("--left %ld must be below the pipe's capacity %ld", g_left, cap);
    {
        static uint8_t buf[1 << 20];
        for (long i = 0; i < g_left; i++)
            buf[i] = pattern(i, 0x1eF7);
        if (write_all(L[1], buf, g_left) != 0)
            die("write L");
        for (int i = 0; i < SELF_BYTES; i++)
            buf[i] = pattern(i, 0x5e1f);
        if (write_all(S[1], buf, SELF_BYTES) != 0)
            die("write S");
        if (fcntl(S[0], F_SETFL, O_NONBLOCK) != 0)
            die("O_NONBLOCK on S");
    }
    struct kid a;
    kid_spawn(&a, "pipes-A", child, NULL);
    close(M[0]);
    close(K[1]);
    close(L[0]);
    subject_ready();

    uint64_t sent = 0, ack[3] = { 0, 0, 0 };
    int reported[3] = { 0, 0, 0 };
    long idle = 0;
    char pending[4096];
    size_t have = 0;
    while (!subject_stopping()) {
        uint64_t low = ack[SRC_A] < ack[SRC_G] ? ack[SRC_A] : ack[SRC_G];
        while (sent - low < WINDOW) {
            if (write_all(M[1], &sent, sizeof(sent)) != 0) {
                check(0, "pipes-R: writing message %llu: %s", (unsigned long long)sent,
                      strerror(errno));
                goto stop;
            }
            sent++;
        }
        sleep_ms(1);
        struct pollfd pfd = { K[0], POLLIN, 0 };
        if (poll(&pfd, 1, 0) <= 0) {
            if (++idle > 20000) {
                check(0, "pipes-R: no ack for 20000 rounds (sent %llu, acked %llu/%llu)",
                      (unsigned long long)sent, (unsigned long long)ack[SRC_A],
                      (unsigned long long)ack[SRC_G]);
                goto stop;
            }
            continue;
        }
        idle = 0;
        ssize_t n = read(K[0], pending + have, sizeof(pending) - have);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            check(0, "pipes-R: reading acks: %s", n ? strerror(errno) : "end of file");
            goto stop;
        }
        have += n;
        size_t off = 0;
        for (; have - off >= sizeof(struct rec); off += sizeof(struct rec)) {
            struct rec r;
            memcpy(&r, pending + off, sizeof(r));
            if ((r.src != SRC_A && r.src != SRC_G) || r.kind != K_ACK) {
                check(0, "pipes-R: bad ack record src %u kind %u", r.src, r.kind);
                goto stop;
            }
            if (r.seq != ack[r.src] && !reported[r.src])
                reported[r.src] = !check(0, "pipes-R: %s acked %llu, expected %llu",
                                         r.src == SRC_A ? "A" : "G", (unsigned long long)r.seq,
                                         (unsigned long long)ack[r.src]);
            ack[r.src] = r.seq + 1;
        }
        memmove(pending, pending + off, have - off);
        have -= off;
    }
    /* Stop: A and G each end with a final record holding how many messages they got. */
    {
        uint64_t stop = STOP;
        check(write_all(M[1], &stop, sizeof(stop)) == 0, "pipes-R: writing stop: %s", strerror(errno));
        uint64_t final[3] = { 0, 0, 0 };
        int finals = 0;
        while (finals < 2) {
            struct rec r;
            if (have >= sizeof(r)) {
                memcpy(&r, pending, sizeof(r));
                memmove(pending, pending + sizeof(r), have - sizeof(r));
                have -= sizeof(r);
            } else {
                int e = read_full(K[0], pending + have, sizeof(r) - have);
                if (e != 0) {
                    check(0, "pipes-R: waiting for the final counts: %s", wait_error(e));
                    break;
                }
                have = 0;
                memcpy(&r, pending, sizeof(r));
            }
            if (r.src != SRC_A && r.src != SRC_G) {
                check(0, "pipes-R: bad record src %u", r.src);
                break;
            }
            if (r.kind == K_FINAL) {
                final[r.src] = r.seq;
                finals++;
                continue;
            }
            if (r.seq != ack[r.src] && !reported[r.src])
                reported[r.src] = !check(0, "pipes-R: %s acked %llu, expected %llu",
                                         r.src == SRC_A ? "A" : "G", (unsigned long long)r.seq,
                                         (unsigned long long)ack[r.src]);
            ack[r.src] = r.seq + 1;
        }
        for (int s = SRC_A; s <= SRC_G; s++)
            check(final[s] == sent && ack[s] == sent,
                  "pipes-R: sent %llu messages; %s received %llu and acked %llu", (unsigned long long)sent,
                  s == SRC_A ? "A" : "G", (unsigned long long)final[s], (unsigned long long)ack[s]);
    }
stop:
    close(M[1]);
    close(L[1]);
    /* The self pipe: both ends here, 1000 bytes waiting, the read end non-blocking. */
    {
        check((fl(S[0]) & O_NONBLOCK) && !(fl(S[1]) & O_NONBLOCK),
              "pipes-R: S flags read 0%o write 0%o (want O_NONBLOCK on the read end only)",
              fl(S[0]), fl(S[1]));
        uint8_t buf[4096];
        ssize_t n = read(S[0], buf, sizeof(buf));
        int ok = n == SELF_BYTES;
        for (int i = 0; ok && i < SELF_BYTES; i++)
            ok = buf[i] == pattern(i, 0x5e1f);
        check(ok, "pipes-R: read %zd bytes from S, expected the %d written", n, SELF_BYTES);
        n = read(S[0], buf, sizeof(buf));
        check(n < 0 && errno == EAGAIN, "pipes-R: S after draining: read %zd (%s), expected EAGAIN",
              n, n < 0 ? strerror(errno) : "data");
        n = write(S[1], "again", 5);
        ssize_t m = read(S[0], buf, sizeof(buf));
        check(n == 5 && m == 5 && memcmp(buf, "again", 5) == 0,
              "pipes-R: S no longer connects its ends (write %zd, read %zd)", n, m);
    }
    kids_finish();
    return subject_finish();
}
