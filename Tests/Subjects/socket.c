/*
 * socket — holds a socket, for tests of what a dumper does with an fd it may not support.
 *
 *   socket --out OUT --pidfile PID [--kind unix|tcp]
 *
 * unix (default): a socketpair(AF_UNIX, SOCK_STREAM) with 5 unread bytes queued one way.
 * tcp: a TCP socket listening on 127.0.0.1 (ephemeral port), and a connected pair through it
 *      with 5 unread bytes queued.
 * tcp-pending: a TCP listener on 127.0.0.1 with one connection it has not accepted yet
 *      (the connected end is held too), 5 bytes sent on it.
 * udp-queued: two UDP sockets on 127.0.0.1, one connected to the other, which has a datagram
 *      "hello" waiting unread.
 * At SIGTERM it checks the queued bytes are still there (tcp-pending: after accepting) and
 * the sockets still work (send/receive the other way).
 */
#include "subject.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    const char *kind = opt_str("--kind", "unix");
    int a = -1, b = -1, l = -1;
    if (strcmp(kind, "unix") == 0) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            die("socketpair");
        a = sv[0], b = sv[1];
    } else if (strcmp(kind, "tcp") == 0 || strcmp(kind, "tcp-pending") == 0) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sin);
        l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0 || bind(l, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(l, 4) != 0 ||
            getsockname(l, (struct sockaddr *)&sin, &len) != 0)
            die("listen");
        a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (a < 0 || connect(a, (struct sockaddr *)&sin, sizeof(sin)) != 0)
            die("connect");
        if (strcmp(kind, "tcp") == 0 && (b = accept4(l, NULL, NULL, SOCK_CLOEXEC)) < 0)
            die("accept");
    } else if (strcmp(kind, "udp-queued") == 0) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sin);
        b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        a = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (b < 0 || a < 0 || bind(b, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
            getsockname(b, (struct sockaddr *)&sin, &len) != 0 || connect(a, (struct sockaddr *)&sin, len) != 0)
            die("udp");
    } else {
        die("--kind must be unix, tcp, tcp-pending or udp-queued");
    }
    if (send(a, "hello", 5, 0) != 5)
        die("send");

    subject_ready();
    while (!subject_stopping())
        sleep_ms(20);

    char buf[16] = "";
    if (b < 0)
        b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    check(b >= 0, "accept: %s", strerror(errno));
    ssize_t n = recv(b, buf, sizeof(buf), MSG_DONTWAIT);
    check(n == 5 && memcmp(buf, "hello", 5) == 0, "queued bytes: got %zd", n);
    if (strcmp(kind, "udp-queued") == 0) {
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);
        getsockname(a, (struct sockaddr *)&sin, &len);
        n = sendto(b, "world", 5, 0, (struct sockaddr *)&sin, len);
    } else {
        n = send(b, "world", 5, 0);
    }
    check(n == 5, "send back: %zd", n);
    n = recv(a, buf, sizeof(buf), 0);
    check(n == 5 && memcmp(buf, "world", 5) == 0, "reply: got %zd", n);
    return subject_finish();
}
