// Benchmark subject: dirties SIZE MiB of anonymous memory with a pattern, says it is ready
// (pidfile), then sleeps. On SIGTERM it checks every page and writes PASS or FAIL to OUT.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: memhog MIB OUT PIDFILE\n"); return 2; }
    size_t size = strtoull(argv[1], 0, 10) << 20;
    signal(SIGTERM, on_term);
    uint64_t *p = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    for (size_t i = 0; i < size / 8; i += 512) p[i] = i * 0x9E3779B97F4A7C15ull;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[3]);
    FILE *f = fopen(tmp, "w"); fprintf(f, "%d\n", getpid()); fclose(f); rename(tmp, argv[3]);
    while (!stop) pause();
    for (size_t i = 0; i < size / 8; i += 512)
        if (p[i] != i * 0x9E3779B97F4A7C15ull) { f = fopen(argv[2], "w"); fprintf(f, "FAIL: word %zu\n", i); fclose(f); return 1; }
    f = fopen(argv[2], "w"); fprintf(f, "PASS\n"); fclose(f);
    return 0;
}
