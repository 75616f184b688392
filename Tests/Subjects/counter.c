/*
 * counter — the demo subject.
 *
 *   counter --out OUT --pidfile PID --log FILE [--interval-ms 100]
 *
 * Every interval it increments a counter and appends "count N\n" to FILE (opened once with
 * O_APPEND, never reopened). At SIGTERM it checks:
 *   - the log fd is still the same fd, still O_APPEND, still names FILE (same inode);
 *   - the counter equals the number of lines in FILE;
 *   - the lines are exactly "count 1" .. "count N", consecutive;
 *   - the monotonic clock never went backwards as seen by the loop.
 * Proves: registers/stack/globals survive, a regular O_APPEND fd survives with its position,
 * a process sleeping in nanosleep (restartable or -EINTR'd) continues.
 */
#include "subject.h"

#include <sys/stat.h>

static long g_count;

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    const char *log = opt_str("--log", NULL);
    if (!log)
        die("--log FILE is required");
    long interval = opt_long("--interval-ms", 100);

    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd < 0)
        die("open %s", log);
    struct stat st0;
    if (fstat(fd, &st0) != 0)
        die("fstat %s", log);

    subject_ready();

    uint64_t last = now_ns(CLOCK_MONOTONIC);
    int clock_ok = 1;
    while (!subject_stopping()) {
        sleep_ms(interval);
        if (subject_stopping())
            break;
        g_count++;
        char line[64];
        int n = snprintf(line, sizeof(line), "count %ld\n", g_count);
        ssize_t w;
        do
            w = write(fd, line, n);
        while (w < 0 && errno == EINTR);
        if (w != n) {
            check(0, "write of line %ld returned %zd (errno %d)", g_count, w, errno);
            break;
        }
        uint64_t t = now_ns(CLOCK_MONOTONIC);
        if (t < last)
            clock_ok = 0;
        last = t;
    }

    check(clock_ok, "CLOCK_MONOTONIC went backwards");
    int fl = fcntl(fd, F_GETFL);
    check(fl >= 0 && (fl & O_APPEND) && (fl & O_ACCMODE) == O_WRONLY,
          "log fd flags 0x%x, expected O_WRONLY|O_APPEND", fl);
    struct stat st1, stp;
    if (check(fstat(fd, &st1) == 0, "fstat log fd: %s", strerror(errno)) &&
        check(stat(log, &stp) == 0, "stat %s: %s", log, strerror(errno))) {
        check(st1.st_ino == stp.st_ino && st1.st_dev == stp.st_dev,
              "log fd no longer refers to %s", log);
    }
    off_t pos = lseek(fd, 0, SEEK_CUR);

    /* Read the log back and verify it line by line. */
    FILE *f = fopen(log, "r");
    if (check(f != NULL, "cannot reopen %s: %s", log, strerror(errno))) {
        char buf[128];
        long lines = 0;
        int consecutive = 1;
        while (fgets(buf, sizeof(buf), f)) {
            lines++;
            char expect[64];
            snprintf(expect, sizeof(expect), "count %ld\n", lines);
            if (consecutive && strcmp(buf, expect) != 0) {
                consecutive = 0;
                buf[strcspn(buf, "\n")] = '\0';
                check(0, "line %ld is '%s', expected 'count %ld'", lines, buf, lines);
            }
        }
        fclose(f);
        check(lines == g_count, "counter is %ld but the log has %ld lines", g_count, lines);
        check(pos == stp.st_size, "log fd position %lld != file size %lld", (long long)pos,
              (long long)stp.st_size);
    }
    return subject_finish();
}
