/*
 * usockets — unix sockets with names: listeners, accepted connections, datagram servers.
 *
 *   usockets --out OUT --pidfile PID --dir DIR
 *
 *   usockets-R   the subject
 *   └─ usockets-A   child (all its sockets are made after the fork)
 *
 * srv      R listens (SOCK_STREAM, backlog 7) on DIR/srv.sock (mode 0640). A connects and sends
 *          numbered 8-byte messages, 16 a round (non-blocking); R reads at most 8 a round, so
 *          data is usually queued at the dump. At SIGTERM A reports how many it sent and R must
 *          have received exactly 0..n-1. R's accepted socket is named DIR/srv.sock, A's peer
 *          name is DIR/srv.sock. At the end R connects to its listener again: accepted.
 * seq      R listens (SOCK_SEQPACKET) on the abstract name @cryo-seq-PID; A connects, and R
 *          sends 3 records (10, 200, 3000 bytes) that A reads only at the end, boundaries kept.
 *          A's socket has SO_PASSCRED.
 * gone     R listens on DIR/gone.sock, A connects, R accepts and closes the listener (the file
 *          stays): the accepted connection is all that is left of that name. A sends 6 bytes,
 *          read by R at the end.
 * dgram    R binds a datagram socket to DIR/dg.sock and one to @cryo-dg-PID; A connects one
 *          datagram socket to each and sends 5 messages to each before "ready"; R reads them at
 *          the end, in order.
 */
#include "subject.h"
#include "family.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static const char *g_dir;
static char srv_path[108], gone_path[108], dg_path[108], seq_name[64], dga_name[64];
static int srv_l, srv_a, seq_l, seq_a, gone_l, gone_a, dg_path_s, dg_abs_s;

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (abstract) {
        memcpy(a->sun_path + 1, name, strlen(name));
        return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
    }
    strncpy(a->sun_path, name, sizeof(a->sun_path) - 1);
    return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

static int bound(int type, const char *name, int abstract)
{
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, name, abstract);
    int fd = socket(AF_UNIX, type, 0);
    if (!abstract)
        unlink(name);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) != 0)
        die("bind %s", name);
    return fd;
}

static int connected(int type, const char *name, int abstract)
{
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, name, abstract);
    int fd = socket(AF_UNIX, type, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, len) != 0)
        die("connect %s", name);
    return fd;
}

/* Whether fd's own (self) or peer name is `name`. */
static int has_name(int fd, int peer, const char *name, int abstract)
{
    struct sockaddr_un want, got;
    socklen_t wl = addr_of(&want, name, abstract), gl = sizeof(got);
    memset(&got, 0, sizeof(got));
    int r = peer ? getpeername(fd, (struct sockaddr *)&got, &gl) : getsockname(fd, (struct sockaddr *)&got, &gl);
    return r == 0 && gl == wl && memcmp(&got, &want, wl) == 0;
}

/* A: up to 16 more numbered messages on the srv connection, as many as it takes. */
static void send_burst(int c, uint64_t *sent, int *failed)
{
    for (int i = 0; i < 16; i++) {
        ssize_t n = send(c, sent, sizeof(*sent), MSG_DONTWAIT);
        if (n == sizeof(*sent)) {
            (*sent)++;
            continue;
        }
        if (!(n < 0 && errno == EAGAIN) && !*failed)
            *failed = !check(0, "A: send on srv: %zd (%s)", n, strerror(errno));
        return;
    }
}

static void child(void *arg)
{
    (void)arg;
    /* R's sockets stay R's alone: in particular gone.sock's listener must be gone once R
       closes it. */
    close(srv_l), close(seq_l), close(gone_l), close(dg_path_s), close(dg_abs_s);
    int c = connected(SOCK_STREAM, srv_path, 0);
    fcntl(c, F_SETFL, O_NONBLOCK);
    int sq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    int one = 1;
    struct sockaddr_un a;
    socklen_t len = addr_of(&a, seq_name, 1);
    if (sq < 0 || setsockopt(sq, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0 ||
        connect(sq, (struct sockaddr *)&a, len) != 0)
        die("A: seqpacket");
    int g = connected(SOCK_STREAM, gone_path, 0);
    if (write_all(g, "gone!\n", 6) != 0)
        die("A: gone");
    int d1 = connected(SOCK_DGRAM, dg_path, 0), d2 = connected(SOCK_DGRAM, dga_name, 1);
    for (int i = 0; i < 5; i++) {
        char m[32];
        int n = snprintf(m, sizeof(m), "dgram %d", i);
        if (send(d1, m, n, 0) != n || send(d2, m, n + 1, 0) != n + 1)
            die("A: dgram");
    }
    uint64_t sent = 0;
    int failed = 0;
    send_burst(c, &sent, &failed); /* before "ready": some always go, however soon the end comes */
    family_ready();
    while (!family_poll(1))
        send_burst(c, &sent, &failed);
    check(has_name(c, 1, srv_path, 0), "A: the srv connection's peer name is not %s", srv_path);
    check(has_name(sq, 1, seq_name, 1), "A: the seq connection's peer name is not @%s", seq_name);
    check(has_name(g, 1, gone_path, 0), "A: the gone connection's peer name is not %s", gone_path);
    check(has_name(d1, 1, dg_path, 0) && has_name(d2, 1, dga_name, 1), "A: datagram peers lost their names");
    int v = 0;
    socklen_t vl = sizeof(v);
    check(getsockopt(sq, SOL_SOCKET, SO_PASSCRED, &v, &vl) == 0 && v == 1, "A: SO_PASSCRED lost");
    static char buf[4096];
    int sizes[3] = { 10, 200, 3000 };
    for (int i = 0; i < 3; i++) {
        ssize_t n = recv(sq, buf, sizeof(buf), MSG_DONTWAIT);
        if (!check(n == sizes[i], "A: seq record %d has %zd bytes, expected %d", i, n, sizes[i]))
            break;
        check(buf[0] == 'a' + i && buf[n - 1] == 'a' + i, "A: seq record %d damaged", i);
    }
    int64_t r[6] = { (int64_t)sent, 0, 0, 0, 0, 0 };
    family_result(r);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    g_dir = opt_str("--dir", ".");
    set_name("usockets-R");
    if (strlen(g_dir) + sizeof("/gone.sock") > sizeof(srv_path))
        die("--dir %s is too long for socket names (108 bytes)", g_dir);
    snprintf(srv_path, sizeof(srv_path), "%s/srv.sock", g_dir);
    snprintf(gone_path, sizeof(gone_path), "%s/gone.sock", g_dir);
    snprintf(dg_path, sizeof(dg_path), "%s/dg.sock", g_dir);
    snprintf(seq_name, sizeof(seq_name), "cryo-seq-%d", getpid());
    snprintf(dga_name, sizeof(dga_name), "cryo-dg-%d", getpid());

    srv_l = bound(SOCK_STREAM, srv_path, 0);
    if (chmod(srv_path, 0640) != 0 || listen(srv_l, 7) != 0)
        die("listen srv");
    seq_l = bound(SOCK_SEQPACKET, seq_name, 1);
    gone_l = bound(SOCK_STREAM, gone_path, 0);
    if (listen(seq_l, 3) != 0 || listen(gone_l, 1) != 0)
        die("listen");
    dg_path_s = bound(SOCK_DGRAM, dg_path, 0);
    dg_abs_s = bound(SOCK_DGRAM, dga_name, 1);

    struct kid a;
    kid_spawn(&a, "usockets-A", child, NULL);
    srv_a = accept4(srv_l, NULL, NULL, SOCK_NONBLOCK);
    seq_a = accept(seq_l, NULL, NULL);
    gone_a = accept(gone_l, NULL, NULL);
    if (srv_a < 0 || seq_a < 0 || gone_a < 0)
        die("accept");
    close(gone_l);
    static char rec[3000];
    int sizes[3] = { 10, 200, 3000 };
    for (int i = 0; i < 3; i++) {
        memset(rec, 'a' + i, sizes[i]);
        if (send(seq_a, rec, sizes[i], 0) != sizes[i])
            die("send seq");
    }
    subject_ready();

    uint64_t expect = 0;
    int ok = 1;
    while (!subject_stopping()) {
        for (int i = 0; ok && i < 8; i++) {
            uint64_t m;
            ssize_t n = recv(srv_a, &m, sizeof(m), MSG_DONTWAIT);
            if (n < 0 && errno == EAGAIN)
                break;
            ok = check(n == sizeof(m) && m == expect, "R: srv message %llu (%zd bytes), expected %llu",
                       (unsigned long long)m, n, (unsigned long long)expect);
            expect++;
        }
        sleep_ms(1);
    }
    kids_finish();
    for (;;) {
        uint64_t m;
        ssize_t n = recv(srv_a, &m, sizeof(m), MSG_DONTWAIT);
        if (n <= 0 || !ok)
            break;
        ok = check(n == sizeof(m) && m == expect, "R: srv message %llu, expected %llu", (unsigned long long)m,
                   (unsigned long long)expect);
        expect++;
    }
    if (check(a.nresults == 1, "R: no result from A"))
        check(!ok || (int64_t)expect == a.result[0][0], "R: received %llu srv messages, A sent %lld",
              (unsigned long long)expect, (long long)a.result[0][0]);
    check(expect > 0, "R: nothing came through srv");

    check(has_name(srv_l, 0, srv_path, 0) && has_name(srv_a, 0, srv_path, 0), "R: srv sockets are not named %s", srv_path);
    check(has_name(seq_l, 0, seq_name, 1) && has_name(seq_a, 0, seq_name, 1), "R: seq sockets are not named @%s", seq_name);
    check(has_name(gone_a, 0, gone_path, 0), "R: the gone connection is not named %s", gone_path);
    check(has_name(dg_path_s, 0, dg_path, 0) && has_name(dg_abs_s, 0, dga_name, 1), "R: datagram sockets lost their names");
    struct stat st;
    check(stat(srv_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0640,
          "R: %s is not a socket file of mode 0640", srv_path);
    int bl = -1;
    socklen_t bll = sizeof(bl);
    check(getsockopt(srv_l, SOL_SOCKET, SO_ACCEPTCONN, &bl, &bll) == 0 && bl == 1, "R: srv no longer listens");
    char buf[64];
    check(recv(gone_a, buf, sizeof(buf), MSG_DONTWAIT) == 6 && memcmp(buf, "gone!\n", 6) == 0, "R: gone data lost");
    for (int i = 0; i < 5; i++) {
        char m[32];
        int n = snprintf(m, sizeof(m), "dgram %d", i);
        ssize_t r1 = recv(dg_path_s, buf, sizeof(buf), MSG_DONTWAIT);
        check(r1 == n && memcmp(buf, m, n) == 0, "R: dg.sock message %d: %zd bytes", i, r1);
        ssize_t r2 = recv(dg_abs_s, buf, sizeof(buf), MSG_DONTWAIT);
        check(r2 == n + 1 && memcmp(buf, m, n + 1) == 0, "R: @dg message %d: %zd bytes", i, r2);
    }
    check(recv(dg_path_s, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN, "R: extra datagram");
    /* The listener still takes connections. */
    int c = connected(SOCK_STREAM, srv_path, 0);
    int n = accept(srv_l, NULL, NULL);
    check(n >= 0 && write(c, "x", 1) == 1 && read(n, buf, 1) == 1 && buf[0] == 'x', "R: a new connection to srv failed");
    return subject_finish();
}
