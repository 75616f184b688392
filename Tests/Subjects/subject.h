/*
 * subject.h — the protocol every test subject follows (header-only, shared by the subjects in Tests/Subjects).
 *
 *   BIN --out OUTFILE --pidfile PIDFILE [subject options]
 *
 * 1. The subject builds its state.
 * 2. subject_ready() writes its pid to PIDFILE.tmp and renames it to PIDFILE ("ready").
 * 3. It loops until SIGTERM sets g_stop (subject_stopping()).
 * 4. It checks its state and subject_finish() writes exactly "PASS\n" or "FAIL: <reason>\n"
 *    to OUTFILE and returns the exit status (0 or 1).
 *
 * A checkpoint may happen at any moment of steps 3 and 4's loop; the restored process continues
 * from there. Subjects check everything from inside and never depend on the checkpoint tool.
 * The OUTFILE is only opened at the very end, so it is not part of the checkpointed state.
 */
#ifndef CRYO_SUBJECT_H
#define CRYO_SUBJECT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;
static const char *g_outfile;
static const char *g_pidfile;
static int g_argc;
static char **g_argv;
static char g_fail[2048];
static int g_failures;

static void subject_on_sigterm(int sig) { (void)sig; g_stop = 1; }

static __attribute__((unused)) int subject_stopping(void) { return g_stop != 0; }

/* Record a failure (the first few reasons are kept, joined by "; "). Returns cond. */
static __attribute__((format(printf, 2, 3), unused)) int check(int cond, const char *fmt, ...)
{
    if (cond)
        return 1;
    g_failures++;
    size_t len = strlen(g_fail);
    if (len < sizeof(g_fail) - 64) {
        if (len > 0) {
            snprintf(g_fail + len, sizeof(g_fail) - len, "; ");
            len = strlen(g_fail);
        }
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_fail + len, sizeof(g_fail) - len, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static __attribute__((noreturn, format(printf, 1, 2), unused)) void die(const char *fmt, ...)
{
    /* Setup failed before "ready": report on stderr and in OUTFILE, exit 2. */
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "setup failed: %s (errno %d: %s)\n", buf, errno, strerror(errno));
    if (g_outfile) {
        FILE *f = fopen(g_outfile, "w");
        if (f) {
            fprintf(f, "FAIL: setup: %s (%s)\n", buf, strerror(errno));
            fclose(f);
        }
    }
    exit(2);
}

/* Value of "--name VALUE" in argv, or dflt. */
static __attribute__((unused)) const char *opt_str(const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < g_argc; i++)
        if (strcmp(g_argv[i], name) == 0)
            return g_argv[i + 1];
    return dflt;
}

static __attribute__((unused)) long opt_long(const char *name, long dflt)
{
    const char *s = opt_str(name, NULL);
    if (!s)
        return dflt;
    char *end;
    long v = strtol(s, &end, 0);
    if (*s == '\0' || *end != '\0')
        die("option %s: bad number '%s'", name, s);
    return v;
}

/* Make a path absolute (subjects may chdir). */
static const char *absolute_path(const char *path, char *buf, size_t size)
{
    if (path[0] == '/')
        return path;
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd)))
        return path;
    snprintf(buf, size, "%.4000s/%.4000s", cwd, path);
    return buf;
}

/* Parse --out/--pidfile and install the SIGTERM handler. */
static __attribute__((unused)) void subject_init(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    static char outbuf[8192], pidbuf[8192];
    g_outfile = opt_str("--out", NULL);
    g_pidfile = opt_str("--pidfile", NULL);
    if (!g_outfile || !g_pidfile) {
        fprintf(stderr, "usage: %s --out OUTFILE --pidfile PIDFILE [options]\n", argv[0]);
        exit(2);
    }
    g_outfile = absolute_path(g_outfile, outbuf, sizeof(outbuf));
    g_pidfile = absolute_path(g_pidfile, pidbuf, sizeof(pidbuf));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = subject_on_sigterm;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        die("sigaction(SIGTERM)");
}

/* Announce readiness: write our pid atomically to the pidfile. */
static __attribute__((unused)) void subject_ready(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", g_pidfile);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open %s", tmp);
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, n) != n)
        die("write %s", tmp);
    if (close(fd) != 0)
        die("close %s", tmp);
    if (rename(tmp, g_pidfile) != 0)
        die("rename %s -> %s", tmp, g_pidfile);
}

/* Write the verdict. Returns the exit status for main. */
static __attribute__((unused)) int subject_finish(void)
{
    int fd = open(g_outfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "cannot open %s: %s\n", g_outfile, strerror(errno));
        return 3;
    }
    char buf[sizeof(g_fail) + 16];
    int n;
    if (g_failures == 0)
        n = snprintf(buf, sizeof(buf), "PASS\n");
    else
        n = snprintf(buf, sizeof(buf), "FAIL: %s\n", g_fail);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    if (write(fd, buf, n) != n || close(fd) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", g_outfile, strerror(errno));
        return 3;
    }
    return g_failures == 0 ? 0 : 1;
}

/* Sleep; returns early (without complaint) when interrupted by a signal. */
static __attribute__((unused)) void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static __attribute__((unused)) uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Read a whole (small) file into buf, NUL-terminated. Returns length or -1. */
static __attribute__((unused)) ssize_t read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < size - 1) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += n;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Find the line of a "Key:\tvalue" file (e.g. /proc/self/status) starting with key; copy value. */
static __attribute__((unused)) int status_field(const char *path, const char *key, char *out, size_t outsz)
{
    char buf[16384];
    if (read_file(path, buf, sizeof(buf)) < 0)
        return -1;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            char *v = line + klen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            snprintf(out, outsz, "%s", v);
            return 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

static __attribute__((unused)) uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

#endif
