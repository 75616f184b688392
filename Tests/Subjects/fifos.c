/*
 * fifos — FIFOs (named pipes) between the processes of a tree, with data in their buffers.
 *
 *   fifos --out OUT --pidfile PID --dir DIR
 *
 *   fifos-R   the subject
 *   └─ fifos-A   child
 *
 * DIR/chan  R reads it (O_RDONLY|O_NONBLOCK, opened before A exists), A writes numbered 8-byte
 *           messages into it (O_WRONLY|O_NONBLOCK, its own open). A writes 16 messages a
 *           round, R reads at most 8, so the FIFO is usually full when the dump happens. At
 *           SIGTERM A reports how many it wrote; R drains the FIFO and must have received
 *           exactly 0..n-1, each once, in order.
 * DIR/left  opened O_RDWR by R before forking (one description in R and A), 5000 bytes of a
 *           pattern written and left there. At the end A checks its fd still shares R's
 *           description (same flags, O_RDWR), then R reads the 5000 bytes back and then EAGAIN.
 * DIR/rd    R opens it O_RDWR, then O_RDONLY and O_WRONLY (3 descriptions of one FIFO); 100
 *           bytes written through the write-only one are read back at the end through the
 *           read-only one.
 */
#include "subject.h"
#include "family.h"

#include <sys/stat.h>

#define LEFT_BYTES 5000
#define RD_BYTES 100

static const char *g_dir;
static int chan_r = -1, chan_w = -1, left_fd = -1;

static uint8_t pattern(uint64_t i, uint64_t seed) { return (uint8_t)(splitmix64(seed + i / 8) >> (8 * (i % 8))); }

static void path_in(char *buf, size_t size, const char *name) { snprintf(buf, size, "%s/%s", g_dir, name); }

static void make_fifo(const char *name)
{
    char p[4096];
    path_in(p, sizeof(p), name);
    unlink(p);
    if (mkfifo(p, 0600) != 0)
        die("mkfifo %s", p);
}

static int open_fifo(const char *name, int flags)
{
    char p[4096];
    path_in(p, sizeof(p), name);
    int fd = open(p, flags);
    if (fd < 0)
        die("open %s", p);
    return fd;
}

/* A: up to 16 more numbered messages into chan, as many as it takes. */
static void write_burst(uint64_t *sent, int *failed)
{
    for (int i = 0; i < 16; i++) {
        ssize_t n = write(chan_w, sent, sizeof(*sent));
        if (n == sizeof(*sent)) {
            (*sent)++;
            continue;
        }
        if (!(n < 0 && errno == EAGAIN) && !*failed)
            *failed = !check(0, "A: write to chan: %zd (%s)", n, strerror(errno));
        return;
    }
}

static void writer(void *arg)
{
    (void)arg;
    close(chan_r);
    chan_w = open_fifo("chan", O_WRONLY | O_NONBLOCK);
    uint64_t sent = 0;
    int failed = 0;
    write_burst(&sent, &failed); /* before "ready": some always go, however soon the end comes */
    family_ready();
    while (!family_poll(1))
        write_burst(&sent, &failed);
    check((fcntl(left_fd, F_GETFL) & O_ACCMODE) == O_RDWR, "A: left is no longer O_RDWR");
    int64_t v[6] = { (int64_t)sent, 0, 0, 0, 0, 0 };
    family_result(v);
}

/* R: reads what is waiting in chan (up to max messages); returns 0 once it is empty (EAGAIN,
   or end of file while no writer has it open). */
static int drain(uint64_t *expect, int max)
{
    for (int i = 0; i < max; i++) {
        uint64_t m;
        ssize_t n = read(chan_r, &m, sizeof(m));
        if ((n < 0 && errno == EAGAIN) || n == 0)
            return 0;
        if (n != sizeof(m))
            return check(0, "R: read from chan: %zd (%s)", n, n < 0 ? strerror(errno) : "short"), -1;
        if (m != *expect)
            return check(0, "R: message %llu from chan, expected %llu", (unsigned long long)m,
                         (unsigned long long)*expect), -1;
        (*expect)++;
    }
    return 1;
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    g_dir = opt_str("--dir", ".");
    set_name("fifos-R");
    make_fifo("chan");
    make_fifo("left");
    make_fifo("rd");
    chan_r = open_fifo("chan", O_RDONLY | O_NONBLOCK);
    left_fd = open_fifo("left", O_RDWR);
    uint8_t buf[LEFT_BYTES];
    for (int i = 0; i < LEFT_BYTES; i++)
        buf[i] = pattern(i, 7);
    if (write_all(left_fd, buf, LEFT_BYTES) != 0)
        die("write left");
    int rd_rw = open_fifo("rd", O_RDWR);
    int rd_r = open_fifo("rd", O_RDONLY | O_NONBLOCK);
    int rd_w = open_fifo("rd", O_WRONLY);
    for (int i = 0; i < RD_BYTES; i++)
        buf[i] = pattern(i, 11);
    if (write_all(rd_w, buf, RD_BYTES) != 0)
        die("write rd");

    struct kid a;
    kid_spawn(&a, "fifos-A", writer, NULL);
    subject_ready();

    uint64_t expect = 0;
    int ok = 1;
    while (!subject_stopping()) {
        if (ok)
            ok = drain(&expect, 8) >= 0;
        sleep_ms(1);
    }
    kids_finish();
    while (ok && drain(&expect, 1 << 20) > 0)
        ;
    if (check(a.nresults == 1, "R: no result from A"))
        check(ok && (int64_t)expect == a.result[0][0], "R: received %llu messages, A sent %lld",
              (unsigned long long)expect, (long long)a.result[0][0]);
    check(expect > 0, "R: no message came through chan");

    int fl = fcntl(left_fd, F_GETFL);
    check((fl & O_ACCMODE) == O_RDWR, "left is not O_RDWR");
    fcntl(left_fd, F_SETFL, fl | O_NONBLOCK);
    uint8_t in[LEFT_BYTES + 1];
    ssize_t n = read(left_fd, in, sizeof(in));
    check(n == LEFT_BYTES, "left: read %zd bytes, expected %d", n, LEFT_BYTES);
    for (int i = 0; i < n && i < LEFT_BYTES; i++)
        if (!check(in[i] == pattern(i, 7), "left: byte %d differs", i))
            break;
    n = read(left_fd, in, 1);
    check(n < 0 && errno == EAGAIN, "left: more data than was written (%zd)", n);

    check((fcntl(rd_r, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK), "rd: read end flags changed");
    check((fcntl(rd_w, F_GETFL) & O_ACCMODE) == O_WRONLY, "rd: write end flags changed");
    check((fcntl(rd_rw, F_GETFL) & O_ACCMODE) == O_RDWR, "rd: read-write fd flags changed");
    n = read(rd_r, in, sizeof(in));
    check(n == RD_BYTES, "rd: read %zd bytes, expected %d", n, RD_BYTES);
    for (int i = 0; i < n && i < RD_BYTES; i++)
        if (!check(in[i] == pattern(i, 11), "rd: byte %d differs", i))
            break;
    return subject_finish();
}
