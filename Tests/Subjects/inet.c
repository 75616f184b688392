/*
 * inet — network sockets a checkpoint keeps without --tcp-established (a tree: R and child A).
 *
 *   R: lst4    TCP listener on 127.0.0.1 (SO_REUSEADDR, SO_RCVBUF, SO_KEEPALIVE, TCP_NODELAY,
 *              O_NONBLOCK, backlog 5)
 *      lst6    TCP dual-stack listener on [::] (IPV6_V6ONLY off, backlog 7)
 *      shared  TCP listener on 127.0.0.1 inherited by A: one socket in two processes
 *      u1      UDP bound to 127.0.0.1; u2 UDP bound and connected to u1
 *      v6a     UDP bound to [::1] (v6only); v6b UDP connected to it
 *      bound   TCP bound to 127.0.0.1, never listening; fresh: TCP only created
 *      freeb   UDP bound with IP_FREEBIND to 192.0.2.1, an address the machine does not have
 *   A: keeps `shared` and reports its inode; after QUIT connects to it and accepts the
 *      connection itself.
 *
 * Every port is chosen by the kernel (bind to port 0) and remembered. After the checkpoint
 * R checks the addresses, options and flags, accepts a fresh connection on each listener
 * (lst6 over IPv4 and IPv6) and exchanges datagrams both ways on both UDP pairs.
 */
#include "subject.h"
#include "family.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

static int lst4, lst6, shared, u1, u2, v6a, v6b, bound, fresh, freeb;
/* Addresses as created, to compare with after the checkpoint. */
static struct sockaddr_storage name_of[64], peer_of[64];

static int sock(int family, int type)
{
    int fd = socket(family, type, 0);
    if (fd < 0)
        die("socket");
    return fd;
}

static void set_int(int fd, int level, int opt, int v, const char *what)
{
    if (setsockopt(fd, level, opt, &v, sizeof(v)) != 0)
        die("setsockopt %s", what);
}

static int get_int(int fd, int level, int opt)
{
    int v = -1;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, level, opt, &v, &len) != 0)
        return -1;
    return v;
}

/* Fills `a` with address `addr` (text) and `port` of `family`; returns its length. */
static socklen_t make_address(struct sockaddr_storage *a, int family, const char *addr, int port)
{
    memset(a, 0, sizeof(*a));
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)a;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        inet_pton(AF_INET, addr, &s->sin_addr);
        return sizeof(*s);
    }
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)a;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    inet_pton(AF_INET6, addr, &s->sin6_addr);
    return sizeof(*s);
}

static void bind_to(int fd, int family, const char *addr)
{
    struct sockaddr_storage a;
    socklen_t len = make_address(&a, family, addr, 0);
    if (bind(fd, (struct sockaddr *)&a, len) != 0)
        die("bind %s", addr);
}

/* Connect `fd` to where `to` is bound (getsockname), with the address family of `to`. */
static int connect_to(int fd, int to)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    if (getsockname(to, (struct sockaddr *)&a, &len) != 0)
        return -1;
    return connect(fd, (struct sockaddr *)&a, len);
}

static void remember(int fd)
{
    socklen_t len = sizeof(name_of[fd]);
    getsockname(fd, (struct sockaddr *)&name_of[fd], &len);
    len = sizeof(peer_of[fd]);
    getpeername(fd, (struct sockaddr *)&peer_of[fd], &len);
}

/* Whether fd's own and peer addresses are those remembered. */
static int same_addresses(int fd)
{
    struct sockaddr_storage a, p;
    memset(&a, 0, sizeof(a));
    memset(&p, 0, sizeof(p));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    len = sizeof(p);
    getpeername(fd, (struct sockaddr *)&p, &len);
    return memcmp(&a, &name_of[fd], sizeof(a)) == 0 && memcmp(&p, &peer_of[fd], sizeof(p)) == 0;
}

static int port_of(int fd)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    return ntohs(a.ss_family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port : ((struct sockaddr_in6 *)&a)->sin6_port);
}

/* A fresh connection to listener `l` from a new socket of `family` to `addr`, accepted and
   used for one byte each way. 1 on success. */
static int connection_works(int l, int family, const char *addr, const char *what)
{
    int c = sock(family, SOCK_STREAM);
    struct sockaddr_storage a;
    socklen_t len = make_address(&a, family, addr, port_of(l));
    int ok = check(connect(c, (struct sockaddr *)&a, len) == 0, "%s: connect to %s port %d: %s", what, addr,
                   port_of(l), strerror(errno));
    struct pollfd p = { .fd = l, .events = POLLIN };
    int n = ok && poll(&p, 1, 5000) == 1 ? accept(l, NULL, NULL) : -1;
    char b = 0;
    ok = ok && check(n >= 0, "%s: accept: %s", what, strerror(errno)) &&
         check(write(c, "x", 1) == 1 && read(n, &b, 1) == 1 && b == 'x' && write(n, "y", 1) == 1 &&
                   read(c, &b, 1) == 1 && b == 'y',
               "%s: no data through the new connection", what);
    close(c);
    if (n >= 0)
        close(n);
    return ok;
}

/* A datagram from `from` reaches `to` with `from`'s address as sender. */
static int datagram_works(int from, int to, const struct sockaddr *dest, socklen_t destlen, const char *what)
{
    char m[32];
    int n = snprintf(m, sizeof(m), "%s %d", what, getpid());
    ssize_t s = dest ? sendto(from, m, n, 0, dest, destlen) : send(from, m, n, 0);
    if (!check(s == n, "%s: send: %s", what, strerror(errno)))
        return 0;
    struct pollfd p = { .fd = to, .events = POLLIN };
    char buf[64];
    struct sockaddr_storage sender, mine;
    socklen_t sl = sizeof(sender), ml = sizeof(mine);
    memset(&sender, 0, sizeof(sender));
    memset(&mine, 0, sizeof(mine));
    ssize_t r = poll(&p, 1, 5000) == 1 ? recvfrom(to, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&sender, &sl) : -1;
    getsockname(from, (struct sockaddr *)&mine, &ml);
    return check(r == n && memcmp(buf, m, n) == 0, "%s: datagram lost (%zd bytes)", what, r) &&
           check(sl == ml && memcmp(&sender, &mine, sl) == 0, "%s: sender address differs", what);
}

static void child(void *arg)
{
    (void)arg;
    close(lst4), close(lst6), close(u1), close(u2), close(v6a), close(v6b), close(bound), close(fresh), close(freeb);
    struct stat st;
    fstat(shared, &st);
    family_ready();
    while (!family_poll(1))
        ;
    /* The shared listener still works from here. */
    int c = sock(AF_INET, SOCK_STREAM);
    check(connect_to(c, shared) == 0, "A: connect to shared: %s", strerror(errno));
    struct pollfd p = { .fd = shared, .events = POLLIN };
    int n = poll(&p, 1, 5000) == 1 ? accept(shared, NULL, NULL) : -1;
    check(n >= 0, "A: accept on shared: %s", strerror(errno));
    struct stat now;
    fstat(shared, &now);
    int64_t r[6] = { (int64_t)st.st_ino, (int64_t)now.st_ino, 0, 0, 0, 0 };
    family_result(r);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    set_name("inet-R");

    lst4 = sock(AF_INET, SOCK_STREAM);
    set_int(lst4, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    set_int(lst4, SOL_SOCKET, SO_RCVBUF, 48 * 1024, "SO_RCVBUF");
    set_int(lst4, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    set_int(lst4, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    set_int(lst4, IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE");
    bind_to(lst4, AF_INET, "127.0.0.1");
    if (listen(lst4, 5) != 0 || fcntl(lst4, F_SETFL, O_NONBLOCK) != 0)
        die("listen lst4");
    int rcvbuf = get_int(lst4, SOL_SOCKET, SO_RCVBUF);

    lst6 = sock(AF_INET6, SOCK_STREAM);
    set_int(lst6, IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY");
    bind_to(lst6, AF_INET6, "::");
    if (listen(lst6, 7) != 0)
        die("listen lst6");

    shared = sock(AF_INET, SOCK_STREAM);
    set_int(shared, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    bind_to(shared, AF_INET, "127.0.0.1");
    if (listen(shared, 3) != 0)
        die("listen shared");

    u1 = sock(AF_INET, SOCK_DGRAM);
    bind_to(u1, AF_INET, "127.0.0.1");
    u2 = sock(AF_INET, SOCK_DGRAM);
    set_int(u2, SOL_SOCKET, SO_BROADCAST, 1, "SO_BROADCAST");
    bind_to(u2, AF_INET, "127.0.0.1");
    if (connect_to(u2, u1) != 0)
        die("connect u2");
    v6a = sock(AF_INET6, SOCK_DGRAM);
    set_int(v6a, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    bind_to(v6a, AF_INET6, "::1");
    v6b = sock(AF_INET6, SOCK_DGRAM);
    if (connect_to(v6b, v6a) != 0) /* bound implicitly, to an address and port the kernel chose */
        die("connect v6b");

    bound = sock(AF_INET, SOCK_STREAM);
    bind_to(bound, AF_INET, "127.0.0.1");
    fresh = sock(AF_INET6, SOCK_STREAM);
    freeb = sock(AF_INET, SOCK_DGRAM);
    set_int(freeb, IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    bind_to(freeb, AF_INET, "192.0.2.1");

    int fds[] = { lst4, lst6, shared, u1, u2, v6a, v6b, bound, fresh, freeb };
    for (unsigned i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (fds[i] >= 64)
            die("fd %d too high", fds[i]);
        remember(fds[i]);
    }
    struct kid a;
    kid_spawn(&a, "inet-A", child, NULL);
    struct stat shared_st;
    fstat(shared, &shared_st);
    subject_ready();

    while (!subject_stopping())
        sleep_ms(5);

    const char *names[] = { "lst4", "lst6", "shared", "u1", "u2", "v6a", "v6b", "bound", "fresh", "freeb" };
    for (unsigned i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        check(same_addresses(fds[i]), "R: %s has other addresses than before", names[i]);
    check(get_int(lst4, SOL_SOCKET, SO_ACCEPTCONN) == 1 && get_int(lst6, SOL_SOCKET, SO_ACCEPTCONN) == 1 &&
              get_int(shared, SOL_SOCKET, SO_ACCEPTCONN) == 1,
          "R: a listener no longer listens");
    check(get_int(bound, SOL_SOCKET, SO_ACCEPTCONN) == 0, "R: bound listens");
    check(get_int(lst4, SOL_SOCKET, SO_REUSEADDR) == 1, "R: lst4 lost SO_REUSEADDR");
    check(get_int(lst6, SOL_SOCKET, SO_REUSEADDR) == 0, "R: lst6 got SO_REUSEADDR");
    check(get_int(shared, SOL_SOCKET, SO_REUSEPORT) == 1, "R: shared lost SO_REUSEPORT");
    check(get_int(lst4, SOL_SOCKET, SO_RCVBUF) == rcvbuf, "R: lst4 SO_RCVBUF %d, was %d",
          get_int(lst4, SOL_SOCKET, SO_RCVBUF), rcvbuf);
    check(get_int(lst4, SOL_SOCKET, SO_KEEPALIVE) == 1, "R: lst4 lost SO_KEEPALIVE");
    check(get_int(lst4, IPPROTO_TCP, TCP_KEEPIDLE) == 77, "R: lst4 TCP_KEEPIDLE is %d", get_int(lst4, IPPROTO_TCP, TCP_KEEPIDLE));
    check(get_int(lst4, IPPROTO_TCP, TCP_NODELAY) == 1, "R: lst4 lost TCP_NODELAY");
    check(get_int(u2, SOL_SOCKET, SO_BROADCAST) == 1, "R: u2 lost SO_BROADCAST");
    check(fcntl(lst4, F_GETFL) & O_NONBLOCK, "R: lst4 lost O_NONBLOCK");
    check(!(fcntl(lst6, F_GETFL) & O_NONBLOCK), "R: lst6 became non-blocking");
    check(get_int(lst6, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "R: lst6 is IPv6-only");
    check(get_int(v6a, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "R: v6a is no longer IPv6-only");
    check(get_int(freeb, IPPROTO_IP, IP_FREEBIND) == 1 && get_int(u1, IPPROTO_IP, IP_FREEBIND) == 0,
          "R: IP_FREEBIND is not as it was");
    check(get_int(lst4, SOL_SOCKET, SO_TYPE) == SOCK_STREAM && get_int(u1, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM,
          "R: socket types changed");

    connection_works(lst4, AF_INET, "127.0.0.1", "R: lst4");
    connection_works(lst6, AF_INET6, "::1", "R: lst6 over IPv6");
    connection_works(lst6, AF_INET, "127.0.0.1", "R: lst6 over IPv4");
    datagram_works(u2, u1, NULL, 0, "R: u2 -> u1");
    datagram_works(u1, u2, (struct sockaddr *)&name_of[u2], sizeof(struct sockaddr_in), "R: u1 -> u2");
    datagram_works(v6b, v6a, NULL, 0, "R: v6b -> v6a");
    datagram_works(v6a, v6b, (struct sockaddr *)&name_of[v6b], sizeof(struct sockaddr_in6), "R: v6a -> v6b");
    int b = sock(AF_INET, SOCK_STREAM);
    check(connect_to(b, bound) != 0 && errno == ECONNREFUSED, "R: connecting to bound did not fail as it should");
    close(b);

    kids_finish();
    struct stat now_st;
    fstat(shared, &now_st);
    if (check(a.nresults == 1, "R: no result from A"))
        check(a.result[0][0] == (int64_t)shared_st.st_ino && a.result[0][1] == (int64_t)now_st.st_ino,
              "R: A's shared listener is socket:[%lld] (was [%lld]), R's is socket:[%llu] (was [%llu])",
              (long long)a.result[0][1], (long long)a.result[0][0], (unsigned long long)now_st.st_ino,
              (unsigned long long)shared_st.st_ino);
    return subject_finish();
}
