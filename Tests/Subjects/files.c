/*
 * files — file descriptors of regular files, a directory and character devices.
 *
 *   files --out OUT --pidfile PID --dir DIR
 *
 * Opened before "ready" (files live in DIR):
 *   fd_ro      ro.txt, O_RDONLY|O_NOATIME, read 100 bytes (position 100)
 *   fd_append  append.log, O_WRONLY|O_APPEND, 3 lines written
 *   fd_rw      rw.dat, O_RDWR|O_CLOEXEC, positioned at 12345
 *   fd_dir     DIR, O_RDONLY|O_DIRECTORY
 *   fd_null    /dev/null O_WRONLY, fd_zero /dev/zero O_RDONLY, fd_urandom /dev/urandom
 *              O_RDONLY|O_NONBLOCK
 *   fd_dup_a/b dup.dat, one open file description shared by dup() (position 1000)
 *   200        high.dat dup2()'ed to fd 200 (the original fd closed), O_RDWR, position 7
 * At SIGTERM it checks: the set of open fds equals the one at start; each fd number names the
 * same path (/proc/self/fd) and the same inode; F_GETFL flags and F_GETFD (FD_CLOEXEC) are
 * unchanged; positions are unchanged; content read through each fd is right; reading through
 * one of the dup()'ed pair moves the other; O_APPEND still appends at the end; the directory fd
 * works with openat(); the devices behave like themselves.
 */
#include "subject.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define HIGH_FD 200
#define RW_SIZE 65536
#define RW_POS 12345
#define MAX_FDS 64

struct fdrec {
    const char *what;
    int fd;
    char path[PATH_MAX];
    int flags; /* F_GETFL */
    int fdflags;
    off_t pos;
    dev_t dev;
    ino_t ino;
};

static struct fdrec g_fds[16];
static int g_nfds;
static int g_open_at_start[MAX_FDS];
static int g_nopen_at_start;
static char g_dir[PATH_MAX];

static int fd_ro, fd_append, fd_rw, fd_dir, fd_null, fd_zero, fd_urandom, fd_dup_a, fd_dup_b;

static uint8_t rw_byte(size_t i) { return (uint8_t)(splitmix64(i / 8) >> (8 * (i % 8))); }

static void ro_text(char *buf, size_t size)
{
    size_t len = 0;
    for (int i = 0; len + 32 < size; i++)
        len += snprintf(buf + len, size - len, "read-only line %05d\n", i);
}

static void path_in_dir(char *out, const char *name)
{
    snprintf(out, PATH_MAX, "%.3000s/%s", g_dir, name);
}

static void write_file(const char *name, const void *data, size_t len)
{
    char path[PATH_MAX];
    path_in_dir(path, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) != 0)
        die("create %s", path);
}

static int open_in_dir(const char *name, int flags)
{
    char path[PATH_MAX];
    path_in_dir(path, name);
    int fd = open(path, flags);
    if (fd < 0)
        die("open %s", path);
    return fd;
}

static void record(const char *what, int fd)
{
    struct fdrec *r = &g_fds[g_nfds++];
    r->what = what;
    r->fd = fd;
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, r->path, sizeof(r->path) - 1);
    if (n < 0)
        die("readlink %s", link);
    r->path[n] = '\0';
    r->flags = fcntl(fd, F_GETFL);
    r->fdflags = fcntl(fd, F_GETFD);
    r->pos = lseek(fd, 0, SEEK_CUR);
    struct stat st;
    if (fstat(fd, &st) != 0)
        die("fstat %d", fd);
    r->dev = st.st_dev;
    r->ino = st.st_ino;
}

static int list_fds(int *out, int max)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d), n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) != self && n < max)
            out[n++] = atoi(e->d_name);
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort */
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static void check_records(void)
{
    for (int i = 0; i < g_nfds; i++) {
        struct fdrec *r = &g_fds[i];
        char link[64], path[PATH_MAX] = "";
        snprintf(link, sizeof(link), "/proc/self/fd/%d", r->fd);
        ssize_t n = readlink(link, path, sizeof(path) - 1);
        if (!check(n >= 0, "fd %d (%s) is not open", r->fd, r->what))
            continue;
        path[n] = '\0';
        check(strcmp(path, r->path) == 0, "fd %d (%s) names '%s', expected '%s'", r->fd, r->what,
              path, r->path);
        int fl = fcntl(r->fd, F_GETFL), fdfl = fcntl(r->fd, F_GETFD);
        /* O_LARGEFILE means nothing on x86_64; do not insist on it. */
        check((fl & ~0100000) == (r->flags & ~0100000), "fd %d (%s) F_GETFL 0%o, expected 0%o",
              r->fd, r->what, fl, r->flags);
        check(fdfl == r->fdflags, "fd %d (%s) F_GETFD %d, expected %d", r->fd, r->what, fdfl,
              r->fdflags);
        off_t pos = lseek(r->fd, 0, SEEK_CUR);
        check(pos == r->pos, "fd %d (%s) position %lld, expected %lld", r->fd, r->what,
              (long long)pos, (long long)r->pos);
        struct stat st;
        if (check(fstat(r->fd, &st) == 0, "fstat fd %d: %s", r->fd, strerror(errno)))
            check(st.st_dev == r->dev && st.st_ino == r->ino, "fd %d (%s) is another inode", r->fd,
                  r->what);
    }
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    const char *dir = opt_str("--dir", NULL);
    if (!dir)
        die("--dir DIR is required");
    if (!realpath(dir, g_dir))
        die("realpath %s", dir);

    static char ro[8192];
    ro_text(ro, sizeof(ro));
    write_file("ro.txt", ro, strlen(ro));
    const char *lines = "first line\nsecond line\n";
    write_file("append.log", lines, strlen(lines));
    static uint8_t rw[RW_SIZE];
    for (size_t i = 0; i < RW_SIZE; i++)
        rw[i] = rw_byte(i);
    write_file("rw.dat", rw, sizeof(rw));
    static uint8_t dupdata[4096];
    for (size_t i = 0; i < sizeof(dupdata); i++)
        dupdata[i] = (uint8_t)(i * 7 + 3);
    write_file("dup.dat", dupdata, sizeof(dupdata));
    write_file("high.dat", "0123456789abcdef", 16);

    fd_ro = open_in_dir("ro.txt", O_RDONLY | O_NOATIME);
    char buf[8192];
    if (read(fd_ro, buf, 100) != 100)
        die("read ro.txt");
    fd_append = open_in_dir("append.log", O_WRONLY | O_APPEND);
    if (write(fd_append, "third line\n", 11) != 11)
        die("write append.log");
    fd_rw = open_in_dir("rw.dat", O_RDWR | O_CLOEXEC);
    if (lseek(fd_rw, RW_POS, SEEK_SET) != RW_POS)
        die("lseek rw.dat");
    fd_dir = open(g_dir, O_RDONLY | O_DIRECTORY);
    if (fd_dir < 0)
        die("open %s", g_dir);
    fd_null = open("/dev/null", O_WRONLY);
    fd_zero = open("/dev/zero", O_RDONLY);
    fd_urandom = open("/dev/urandom", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_null < 0 || fd_zero < 0 || fd_urandom < 0)
        die("open devices");
    fd_dup_a = open_in_dir("dup.dat", O_RDONLY);
    fd_dup_b = dup(fd_dup_a);
    if (fd_dup_b < 0 || lseek(fd_dup_a, 1000, SEEK_SET) != 1000)
        die("dup");
    int h = open_in_dir("high.dat", O_RDWR);
    if (dup2(h, HIGH_FD) != HIGH_FD)
        die("dup2 %d", HIGH_FD);
    close(h);
    if (lseek(HIGH_FD, 7, SEEK_SET) != 7)
        die("lseek high");

    record("ro.txt", fd_ro);
    record("append.log", fd_append);
    record("rw.dat", fd_rw);
    record("dir", fd_dir);
    record("/dev/null", fd_null);
    record("/dev/zero", fd_zero);
    record("/dev/urandom", fd_urandom);
    record("dup a", fd_dup_a);
    record("dup b", fd_dup_b);
    record("high", HIGH_FD);
    g_nopen_at_start = list_fds(g_open_at_start, MAX_FDS);
    if (g_nopen_at_start < 0)
        die("list /proc/self/fd");

    subject_ready();
    while (!subject_stopping())
        sleep_ms(20);

    /* Same fds, same files, same flags and positions. */
    int now[MAX_FDS];
    int nnow = list_fds(now, MAX_FDS);
    int same = nnow == g_nopen_at_start;
    for (int i = 0; same && i < nnow; i++)
        same = now[i] == g_open_at_start[i];
    if (!same) {
        char a[512] = "", b[512] = "";
        for (int i = 0; i < nnow; i++)
            snprintf(a + strlen(a), sizeof(a) - strlen(a), " %d", now[i]);
        for (int i = 0; i < g_nopen_at_start; i++)
            snprintf(b + strlen(b), sizeof(b) - strlen(b), " %d", g_open_at_start[i]);
        check(0, "open fds are [%s ], expected [%s ]", a, b);
    }
    check_records();
    check((fcntl(fd_rw, F_GETFD) & FD_CLOEXEC) && !(fcntl(fd_ro, F_GETFD) & FD_CLOEXEC),
          "FD_CLOEXEC wrong");

    /* Content through each fd. */
    ssize_t n = read(fd_ro, buf, 200);
    check(n == 200 && memcmp(buf, ro + 100, 200) == 0, "ro.txt: wrong data at 100");
    n = read(fd_rw, buf, 100);
    int ok = n == 100;
    for (int i = 0; ok && i < 100; i++)
        ok = (uint8_t)buf[i] == rw_byte(RW_POS + i);
    check(ok, "rw.dat: wrong data at %d", RW_POS);
    check(pwrite(fd_rw, "XYZ", 3, 10) == 3 && pread(fd_rw, buf, 3, 10) == 3 &&
              memcmp(buf, "XYZ", 3) == 0,
          "rw.dat: not writable");
    check(lseek(fd_rw, 0, SEEK_CUR) == RW_POS + 100, "rw.dat: pread/pwrite moved the position");

    check(write(fd_append, "fourth line\n", 12) == 12, "append.log: write failed");
    char path[PATH_MAX];
    path_in_dir(path, "append.log");
    char all[256];
    n = read_file(path, all, sizeof(all));
    check(n >= 0 && strcmp(all, "first line\nsecond line\nthird line\nfourth line\n") == 0,
          "append.log is '%s'", n >= 0 ? all : "(unreadable)");

    /* dup()'ed pair shares one position. */
    n = read(fd_dup_a, buf, 10);
    check(n == 10 && memcmp(buf, dupdata + 1000, 10) == 0, "dup.dat: wrong data at 1000");
    check(lseek(fd_dup_b, 0, SEEK_CUR) == 1010,
          "reading through fd %d did not move fd %d (position %lld, expected 1010)", fd_dup_a,
          fd_dup_b, (long long)lseek(fd_dup_b, 0, SEEK_CUR));
    n = read(fd_dup_b, buf, 10);
    check(n == 10 && memcmp(buf, dupdata + 1010, 10) == 0, "dup.dat: wrong data at 1010 via fd %d",
          fd_dup_b);
    check(lseek(fd_dup_a, 0, SEEK_CUR) == 1020, "the dup()'ed pair no longer shares a position");

    n = read(HIGH_FD, buf, 4);
    check(n == 4 && memcmp(buf, "789a", 4) == 0, "fd %d: wrong data", HIGH_FD);

    /* Directory fd. */
    struct stat st, st2;
    check(fstat(fd_dir, &st) == 0 && S_ISDIR(st.st_mode) && stat(g_dir, &st2) == 0 &&
              st.st_ino == st2.st_ino,
          "directory fd is not %s", g_dir);
    int fd = openat(fd_dir, "ro.txt", O_RDONLY | O_CLOEXEC);
    if (check(fd >= 0, "openat(dirfd, ro.txt): %s", strerror(errno))) {
        check(read(fd, buf, 20) == 20 && memcmp(buf, ro, 20) == 0, "openat: wrong data");
        close(fd);
    }

    /* Devices. */
    check(write(fd_null, "x", 1) == 1, "/dev/null: write failed");
    memset(buf, 1, 64);
    n = read(fd_zero, buf, 64);
    ok = n == 64;
    for (int i = 0; ok && i < 64; i++)
        ok = buf[i] == 0;
    check(ok, "/dev/zero does not read zeroes");
    uint64_t r1 = 0, r2 = 0;
    check(read(fd_urandom, &r1, 8) == 8 && read(fd_urandom, &r2, 8) == 8 && r1 != r2,
          "/dev/urandom does not read random bytes");
    check(fstat(fd_null, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3),
          "/dev/null fd is not the null device");
    check(fstat(fd_zero, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 5),
          "/dev/zero fd is not the zero device");
    check(fstat(fd_urandom, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 9),
          "/dev/urandom fd is not the urandom device");

    return subject_finish();
}
