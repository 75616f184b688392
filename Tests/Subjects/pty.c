/*
 * pty — pseudo-terminals the subject opened itself.
 *
 *   pty --out OUT --pidfile PID
 *
 * Pair A: /dev/ptmx master (non-blocking, packet mode) and its slave (non-blocking,
 * exclusive), which becomes the subject's controlling terminal (the subject leads its session)
 * with its own group in the foreground. The slave gets its own settings: canonical without
 * echo, ^G as INTR, ^E as EOF, 9600 baud, a 37x101 window (640x480 pixels). Before "ready" the
 * master writes two lines that the slave never reads, and the slave writes a line (turned into
 * CR LF by ONLCR) that the master never reads.
 * Pair B: a master never unlocked (its slave cannot be opened), with a 24x80 window.
 *
 * Checked at SIGTERM: both masters still have their pts index; A's slave is /dev/pts/<index>;
 * A's settings, window size, packet mode, exclusive flag; B is still locked, not in packet
 * mode, its window 24x80; A's slave is still the controlling terminal of the session, with the
 * subject's group in the foreground, and an fd on /dev/tty opened at the start reaches it;
 * the slave reads exactly the two queued lines (in any number of reads: the line boundaries
 * are not checked) and the master reads exactly the slave's line; then the pair still
 * carries new data both ways.
 */
#include "subject.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

static const char to_slave[] = "line one\nline two\n";
static const char to_master[] = "to the master\r\n";

/* Reads what fd has within timeout_ms (until want bytes came); in packet mode each read's
 * first byte is the packet status and is dropped. Returns the byte count. */
static size_t read_some(int fd, char *buf, size_t want, int timeout_ms, int packet)
{
    size_t got = 0;
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000ull;
    while (got < want && now_ns(CLOCK_MONOTONIC) < deadline) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 50) <= 0)
            continue;
        char tmp[512];
        ssize_t n = read(fd, tmp, sizeof(tmp));
        if (n <= 0)
            continue;
        int skip = packet ? 1 : 0;
        if (n > skip) {
            size_t k = (size_t)n - skip;
            if (got + k > want)
                k = want - got;
            memcpy(buf + got, tmp + skip, k);
            got += k;
        }
    }
    return got;
}

static void check_bytes(const char *what, int fd, const char *expect, int packet)
{
    char buf[256], extra[64];
    size_t len = strlen(expect);
    size_t got = read_some(fd, buf, len, 1500, packet);
    size_t more = read_some(fd, extra, sizeof(extra), 100, packet);
    check(got == len && memcmp(buf, expect, len) == 0 && more == 0, "%s: read %zu bytes '%.*s' (then %zu more), expected %zu '%s'",
          what, got, (int)got, buf, more, len, expect);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);

    int ma = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (ma < 0 || grantpt(ma) != 0 || unlockpt(ma) != 0)
        die("pair A: /dev/ptmx");
    int index_a;
    if (ioctl(ma, TIOCGPTN, &index_a) != 0)
        die("TIOCGPTN");
    int sa = open(ptsname(ma), O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (sa < 0)
        die("open %s", ptsname(ma));

    struct termios t;
    if (tcgetattr(sa, &t) != 0)
        die("tcgetattr");
    t.c_lflag &= ~(ECHO | ECHOE | ECHOK);
    t.c_lflag |= ICANON;
    t.c_cc[VINTR] = 0x07;
    t.c_cc[VEOF] = 0x05;
    cfsetispeed(&t, B9600);
    cfsetospeed(&t, B9600);
    if (tcsetattr(sa, TCSANOW, &t) != 0)
        die("tcsetattr");
    struct winsize ws = { .ws_row = 37, .ws_col = 101, .ws_xpixel = 640, .ws_ypixel = 480 };
    if (ioctl(sa, TIOCSWINSZ, &ws) != 0)
        die("TIOCSWINSZ");
    int one = 1;
    if (ioctl(ma, TIOCPKT, &one) != 0)
        die("TIOCPKT");
    if (ioctl(sa, TIOCEXCL) != 0)
        die("TIOCEXCL");
    if (ioctl(sa, TIOCSCTTY, 0) != 0)
        die("TIOCSCTTY");
    if (tcsetpgrp(sa, getpgrp()) != 0)
        die("tcsetpgrp");
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY); /* names the controlling terminal */
    if (tty < 0)
        die("open /dev/tty");

    if (write(ma, to_slave, strlen(to_slave)) != (ssize_t)strlen(to_slave))
        die("write to master");
    if (write(sa, "to the master\n", 14) != 14)
        die("write to slave");

    int mb = posix_openpt(O_RDWR | O_NOCTTY);
    if (mb < 0 || grantpt(mb) != 0)
        die("pair B: /dev/ptmx");
    int index_b;
    if (ioctl(mb, TIOCGPTN, &index_b) != 0)
        die("TIOCGPTN B");
    struct winsize wsb = { .ws_row = 24, .ws_col = 80 };
    if (ioctl(mb, TIOCSWINSZ, &wsb) != 0)
        die("TIOCSWINSZ B");

    /* Let the kernel move the written bytes into the queues before "ready". */
    sleep_ms(50);
    subject_ready();
    while (!subject_stopping())
        sleep_ms(10);

    int n = -1;
    check(ioctl(ma, TIOCGPTN, &n) == 0 && n == index_a, "pair A index %d, was %d", n, index_a);
    check(ioctl(mb, TIOCGPTN, &n) == 0 && n == index_b, "pair B index %d, was %d", n, index_b);
    struct stat st;
    check(fstat(sa, &st) == 0 && major(st.st_rdev) == 136 + (unsigned)index_a / 256 && minor(st.st_rdev) == (unsigned)index_a % 256,
          "slave A is %u:%u, not /dev/pts/%d", major(st.st_rdev), minor(st.st_rdev), index_a);

    struct termios now;
    if (check(tcgetattr(sa, &now) == 0, "tcgetattr: %s", strerror(errno))) {
        check(now.c_iflag == t.c_iflag && now.c_oflag == t.c_oflag && now.c_cflag == t.c_cflag && now.c_lflag == t.c_lflag,
              "termios flags %o %o %o %o, expected %o %o %o %o", now.c_iflag, now.c_oflag, now.c_cflag, now.c_lflag,
              t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag);
        check(memcmp(now.c_cc, t.c_cc, 19) == 0, "termios c_cc differ (VINTR %d VEOF %d)", now.c_cc[VINTR], now.c_cc[VEOF]);
        check(cfgetospeed(&now) == B9600 && cfgetispeed(&now) == B9600, "speed %u", (unsigned)cfgetospeed(&now));
    }
    struct winsize w = { 0 };
    check(ioctl(ma, TIOCGWINSZ, &w) == 0 && w.ws_row == 37 && w.ws_col == 101 && w.ws_xpixel == 640 && w.ws_ypixel == 480,
          "pair A window %ux%u (%ux%u px)", w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel);
    check(ioctl(mb, TIOCGWINSZ, &w) == 0 && w.ws_row == 24 && w.ws_col == 80, "pair B window %ux%u", w.ws_row, w.ws_col);
    int v = -1;
    check(ioctl(ma, TIOCGPKT, &v) == 0 && v == 1, "pair A packet mode %d", v);
    check(ioctl(mb, TIOCGPKT, &v) == 0 && v == 0, "pair B packet mode %d", v);
    check(ioctl(ma, TIOCGPTLCK, &v) == 0 && v == 0, "pair A locked %d", v);
    check(ioctl(mb, TIOCGPTLCK, &v) == 0 && v == 1, "pair B unlocked (%d)", v);
    check(ioctl(sa, TIOCGEXCL, &v) == 0 && v == 1, "slave A exclusive %d", v);
    check((fcntl(ma, F_GETFL) & O_NONBLOCK) && (fcntl(sa, F_GETFL) & O_NONBLOCK), "pair A fds lost O_NONBLOCK");
    check(tcgetsid(sa) == getsid(0), "slave A belongs to session %d, not ours (%d)", (int)tcgetsid(sa), (int)getsid(0));
    check(tcgetpgrp(sa) == getpgrp(), "slave A foreground group %d, ours %d", (int)tcgetpgrp(sa), (int)getpgrp());
    check(tcgetsid(tty) == getsid(0) && tcgetpgrp(tty) == getpgrp(), "/dev/tty: session %d, foreground group %d",
          (int)tcgetsid(tty), (int)tcgetpgrp(tty));

    check_bytes("queued for the slave", sa, to_slave, 0);
    check_bytes("queued for the master", ma, to_master, 1);
    if (write(ma, "after\n", 6) != 6)
        check(0, "write to master after: %s", strerror(errno));
    check_bytes("new data to the slave", sa, "after\n", 0);
    if (write(sa, "back\n", 5) != 5)
        check(0, "write to slave after: %s", strerror(errno));
    check_bytes("new data to the master", ma, "back\r\n", 1);
    return subject_finish();
}
