/*
 * memory — anonymous and file-backed memory of every common kind.
 *
 *   memory --out OUT --pidfile PID --dir DIR [--depth 2000]
 *
 * State built before "ready", checked at SIGTERM:
 *   - a 64 MiB malloc'ed buffer filled with a pattern derived from the offset;
 *   - a 256 MiB anonymous mapping of which only 3 pages are touched (the rest must read as
 *     zeroes; a checkpoint tool should skip the untouched pages, the harness checks image size);
 *   - stack data in a deep recursion of main's call chain: the wait loop runs at the bottom, and
 *     each frame checks its own locals while unwinding;
 *   - a heap area grown with sbrk(); brk must be where it was and still movable;
 *   - a MAP_GROWSDOWN region (data, and VmFlags "gd" in /proc/self/smaps);
 *   - a PROT_NONE guard between two RW areas: still "---p" at the same address, touching it still
 *     raises SIGSEGV, the RW neighbours keep their data;
 *   - a read-only (mprotect'ed after filling) anonymous area: data intact, still "r--p";
 *   - a MAP_PRIVATE mapping of DIR/private.dat with some pages written (COW): written pages keep
 *     the new data, untouched pages read the file, the file itself is unchanged;
 *   - a MAP_SHARED mapping of DIR/shared.dat: a write made before the checkpoint is in the file
 *     (read(2)); writes through the mapping after it reach the file, and pwrite()s to the file
 *     are seen through the mapping;
 *   - [vdso]: same address as at start (== AT_SYSINFO_EHDR), clock_gettime/gettimeofday work
 *     and agree with each other.
 */
#include "subject.h"

#include <setjmp.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>

#define MiB (1024ul * 1024ul)
#define PAGE 4096ul

#define BIG_SIZE (64 * MiB)
#define SPARSE_SIZE (256 * MiB)
#define BRK_SIZE (1 * MiB)
#define GD_SIZE (16 * PAGE)
#define GUARD_PAGES 4
#define RO_SIZE (8 * PAGE)
#define PRIV_PAGES 16
#define SHARED_PAGES 4

static uint64_t *g_big;
static uint8_t *g_sparse;
static const size_t g_sparse_touched[3] = { 0, 100 * MiB, SPARSE_SIZE - PAGE };
static uint8_t *g_brk_area;
static void *g_brk_end;
static uint8_t *g_gd;
static uint8_t *g_guard_area; /* [rw GUARD_PAGES][--- GUARD_PAGES][rw GUARD_PAGES] */
static uint8_t *g_ro;
static uint8_t *g_priv;
static uint8_t *g_shared;
static int g_priv_fd = -1, g_shared_fd = -1;
static char g_priv_path[4200], g_shared_path[4200];
static unsigned long g_vdso_start, g_vdso_end, g_vvar_start;
static long g_depth;
static const int g_cow_pages[] = { 1, 5, 9, 15 };

static uint64_t pat(uint64_t seed, uint64_t i) { return splitmix64(seed * 0x100000001b3ull ^ i); }

static void fill(void *p, size_t len, uint64_t seed)
{
    uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        w[i] = pat(seed, i);
}

/* Offset of the first mismatching byte, or -1. */
static long verify(const void *p, size_t len, uint64_t seed)
{
    const uint64_t *w = p;
    for (size_t i = 0; i < len / 8; i++)
        if (w[i] != pat(seed, i))
            return (long)(i * 8);
    return -1;
}

/* Look up the /proc/self/maps line containing addr. */
struct mapline {
    unsigned long start, end;
    char perms[8];
    char path[4096];
};

static int maps_find(unsigned long addr, struct mapline *out)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[8192];
    int found = -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long s, e;
        char perms[8];
        int pos = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &s, &e, perms, &pos) < 3)
            continue;
        if (addr >= s && addr < e) {
            out->start = s;
            out->end = e;
            snprintf(out->perms, sizeof(out->perms), "%s", perms);
            char *p = line + pos;
            while (*p == ' ')
                p++;
            p[strcspn(p, "\n")] = '\0';
            snprintf(out->path, sizeof(out->path), "%s", p);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static int maps_find_name(const char *name, unsigned long *start, unsigned long *end)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[8192];
    int found = -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long s, e;
        char path[4096] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &s, &e, path) >= 2 &&
            strcmp(path, name) == 0) {
            *start = s;
            *end = e;
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

/* VmFlags of the smaps entry starting at start. */
static int smaps_vmflags(unsigned long start, char *out, size_t outsz)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[8192];
    int in = 0, found = -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long s, e;
        char c;
        if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            in = (s == start);
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, outsz, "%.200s", line + 8);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static void create_file(const char *path, size_t pages, uint64_t seed)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die("create %s", path);
    uint8_t page[PAGE];
    for (size_t i = 0; i < pages; i++) {
        fill(page, PAGE, seed + i);
        if (pwrite(fd, page, PAGE, i * PAGE) != (ssize_t)PAGE)
            die("write %s", path);
    }
    close(fd);
}

static void setup(const char *dir)
{
    /* 64 MiB malloc'ed, pattern by offset. */
    g_big = malloc(BIG_SIZE);
    if (!g_big)
        die("malloc 64 MiB");
    fill(g_big, BIG_SIZE, 1);

    /* 256 MiB mapping, three pages touched. */
    g_sparse = mmap(NULL, SPARSE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_sparse == MAP_FAILED)
        die("mmap 256 MiB");
    for (int i = 0; i < 3; i++)
        fill(g_sparse + g_sparse_touched[i], PAGE, 100 + i);

    /* brk. */
    g_brk_area = sbrk(BRK_SIZE);
    if (g_brk_area == (void *)-1)
        die("sbrk");
    fill(g_brk_area, BRK_SIZE, 2);

    /* MAP_GROWSDOWN. */
    g_gd = mmap(NULL, GD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN,
                -1, 0);
    if (g_gd == MAP_FAILED)
        die("mmap MAP_GROWSDOWN");
    fill(g_gd, GD_SIZE, 3);

    /* rw / --- / rw. */
    g_guard_area = mmap(NULL, 3 * GUARD_PAGES * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_guard_area == MAP_FAILED)
        die("mmap guard area");
    fill(g_guard_area, GUARD_PAGES * PAGE, 4);
    fill(g_guard_area + 2 * GUARD_PAGES * PAGE, GUARD_PAGES * PAGE, 5);
    if (mprotect(g_guard_area + GUARD_PAGES * PAGE, GUARD_PAGES * PAGE, PROT_NONE) != 0)
        die("mprotect PROT_NONE");

    /* Read-only after filling. */
    g_ro = mmap(NULL, RO_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_ro == MAP_FAILED)
        die("mmap ro");
    fill(g_ro, RO_SIZE, 6);
    if (mprotect(g_ro, RO_SIZE, PROT_READ) != 0)
        die("mprotect PROT_READ");

    /* Private file mapping with COW'ed pages. */
    snprintf(g_priv_path, sizeof(g_priv_path), "%s/private.dat", dir);
    create_file(g_priv_path, PRIV_PAGES, 1000);
    g_priv_fd = open(g_priv_path, O_RDONLY | O_CLOEXEC);
    if (g_priv_fd < 0)
        die("open %s", g_priv_path);
    g_priv = mmap(NULL, PRIV_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, g_priv_fd, 0);
    if (g_priv == MAP_FAILED)
        die("mmap private %s", g_priv_path);
    /* Read every page once (page cache), then COW a few. */
    volatile uint8_t sink = 0;
    for (int i = 0; i < PRIV_PAGES; i++)
        sink ^= g_priv[i * PAGE];
    (void)sink;
    for (size_t i = 0; i < sizeof(g_cow_pages) / sizeof(g_cow_pages[0]); i++)
        fill(g_priv + g_cow_pages[i] * PAGE, PAGE, 2000 + g_cow_pages[i]);
    close(g_priv_fd); /* the mapping alone keeps the file */
    g_priv_fd = -1;

    /* Shared file mapping: page 0 written through the mapping before the checkpoint. */
    snprintf(g_shared_path, sizeof(g_shared_path), "%s/shared.dat", dir);
    create_file(g_shared_path, SHARED_PAGES, 3000);
    g_shared_fd = open(g_shared_path, O_RDWR | O_CLOEXEC);
    if (g_shared_fd < 0)
        die("open %s", g_shared_path);
    g_shared = mmap(NULL, SHARED_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, g_shared_fd, 0);
    if (g_shared == MAP_FAILED)
        die("mmap shared %s", g_shared_path);
    fill(g_shared, PAGE, 4000);
    close(g_shared_fd); /* the mapping alone keeps the file; reopened for the checks */
    g_shared_fd = -1;

    /* vdso / vvar. */
    if (maps_find_name("[vdso]", &g_vdso_start, &g_vdso_end) != 0)
        die("no [vdso] in /proc/self/maps");
    unsigned long e;
    if (maps_find_name("[vvar]", &g_vvar_start, &e) != 0)
        g_vvar_start = 0;
    if (getauxval(AT_SYSINFO_EHDR) != g_vdso_start)
        die("AT_SYSINFO_EHDR %lx != [vdso] %lx", getauxval(AT_SYSINFO_EHDR), g_vdso_start);

    /* Last: malloc (fopen above) may have moved brk past our area. */
    g_brk_end = sbrk(0);
}

static sigjmp_buf g_segv_jmp;
static volatile sig_atomic_t g_segv_seen;

static void on_segv(int sig)
{
    (void)sig;
    g_segv_seen = 1;
    siglongjmp(g_segv_jmp, 1);
}

static int touches_fault(volatile uint8_t *p, int write)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_segv;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old);
    g_segv_seen = 0;
    if (sigsetjmp(g_segv_jmp, 1) == 0) {
        if (write)
            *p = 1;
        else
            (void)*p;
    }
    sigaction(SIGSEGV, &old, NULL);
    return g_segv_seen;
}

static void check_pattern(const void *p, size_t len, uint64_t seed, const char *what)
{
    long off = verify(p, len, seed);
    check(off < 0, "%s differs at +%ld", what, off);
}

static void check_map(const void *addr, size_t len, const char *perms, const char *what)
{
    struct mapline m;
    if (!check(maps_find((unsigned long)addr, &m) == 0, "%s at %p missing from /proc/self/maps",
               what, addr))
        return;
    check(strcmp(m.perms, perms) == 0, "%s at %p has perms %s, expected %s", what, addr, m.perms,
          perms);
    if (len)
        check(m.start <= (unsigned long)addr && m.end >= (unsigned long)addr + len,
              "%s at %p..+%zu is in mapping %lx-%lx", what, addr, len, m.start, m.end);
}

static void check_all(void)
{
    /* brk first, before anything here may malloc. */
    void *brk_now = sbrk(0);
    check(brk_now == g_brk_end, "brk is %p, expected %p", brk_now, g_brk_end);
    check_pattern(g_brk_area, BRK_SIZE, 2, "sbrk area");
    uint8_t *more = sbrk(PAGE);
    if (check(more != (void *)-1, "sbrk(+4096) after restore failed: %s", strerror(errno))) {
        check(more == g_brk_end, "sbrk grew from %p, expected %p", more, g_brk_end);
        memset(more, 0xa5, PAGE);
        check(more[PAGE - 1] == 0xa5, "grown brk page not writable");
        check(sbrk(-(intptr_t)PAGE) != (void *)-1, "sbrk(-4096) failed");
    }

    check_pattern(g_big, BIG_SIZE, 1, "64 MiB buffer");

    for (int i = 0; i < 3; i++)
        check(verify(g_sparse + g_sparse_touched[i], PAGE, 100 + i) < 0,
              "touched page +%zu of the 256 MiB mapping lost its data", g_sparse_touched[i]);
    for (size_t p = PAGE; p < SPARSE_SIZE - PAGE; p += 7 * PAGE) {
        if (p == g_sparse_touched[1])
            continue;
        const uint64_t *w = (const uint64_t *)(g_sparse + p);
        if (!check(w[0] == 0 && w[PAGE / 8 - 1] == 0, "untouched sparse page +%zu is not zero", p))
            break;
    }
    check_map(g_sparse, SPARSE_SIZE, "rw-p", "256 MiB mapping");

    check_pattern(g_gd, GD_SIZE, 3, "MAP_GROWSDOWN area");
    char flags[256] = "";
    struct mapline m;
    if (maps_find((unsigned long)g_gd, &m) == 0 &&
        check(smaps_vmflags(m.start, flags, sizeof(flags)) == 0, "no smaps for growsdown area"))
        check(strstr(flags, " gd") != NULL, "growsdown area VmFlags lack gd:%s", flags);

    uint8_t *guard = g_guard_area + GUARD_PAGES * PAGE;
    if (check(maps_find((unsigned long)guard, &m) == 0, "guard at %p missing", guard)) {
        check(m.start == (unsigned long)guard && m.end == (unsigned long)guard + GUARD_PAGES * PAGE,
              "guard is %lx-%lx, expected %p-%p", m.start, m.end, guard,
              guard + GUARD_PAGES * PAGE);
        check(strcmp(m.perms, "---p") == 0, "guard perms %s, expected ---p", m.perms);
    }
    check(touches_fault(guard, 0), "reading the PROT_NONE guard did not fault");
    check(touches_fault(guard + GUARD_PAGES * PAGE - 1, 1), "writing the guard did not fault");
    check_pattern(g_guard_area, GUARD_PAGES * PAGE, 4, "area below guard");
    check_pattern(g_guard_area + 2 * GUARD_PAGES * PAGE, GUARD_PAGES * PAGE, 5, "area above guard");
    check_map(g_guard_area, GUARD_PAGES * PAGE, "rw-p", "area below guard");
    check_map(g_guard_area + 2 * GUARD_PAGES * PAGE, GUARD_PAGES * PAGE, "rw-p", "area above guard");

    check_pattern(g_ro, RO_SIZE, 6, "read-only area");
    check_map(g_ro, RO_SIZE, "r--p", "read-only area");
    check(touches_fault(g_ro, 1), "writing the read-only area did not fault");

    /* Private file mapping. */
    check_map(g_priv, PRIV_PAGES * PAGE, "rw-p", "private file mapping");
    if (maps_find((unsigned long)g_priv, &m) == 0)
        check(strcmp(m.path, g_priv_path) == 0, "private mapping names '%s', expected '%s'", m.path,
              g_priv_path);
    int pfd = open(g_priv_path, O_RDONLY | O_CLOEXEC);
    if (check(pfd >= 0, "open %s: %s", g_priv_path, strerror(errno))) {
        uint8_t page[PAGE];
        for (int i = 0; i < PRIV_PAGES; i++) {
            int cow = 0;
            for (size_t j = 0; j < sizeof(g_cow_pages) / sizeof(g_cow_pages[0]); j++)
                cow |= g_cow_pages[j] == i;
            if (cow)
                check(verify(g_priv + i * PAGE, PAGE, 2000 + i) < 0,
                      "COW'ed page %d of private mapping lost its data", i);
            else
                check(verify(g_priv + i * PAGE, PAGE, 1000 + i) < 0,
                      "untouched page %d of private mapping does not read the file", i);
            check(pread(pfd, page, PAGE, i * PAGE) == (ssize_t)PAGE &&
                      verify(page, PAGE, 1000 + i) < 0,
                  "page %d of %s changed on disk", i, g_priv_path);
        }
        struct stat st;
        check(fstat(pfd, &st) == 0 && st.st_size == (off_t)(PRIV_PAGES * PAGE),
              "%s changed size", g_priv_path);
        close(pfd);
    }

    /* Shared file mapping. */
    check_map(g_shared, SHARED_PAGES * PAGE, "rw-s", "shared file mapping");
    if (maps_find((unsigned long)g_shared, &m) == 0)
        check(strcmp(m.path, g_shared_path) == 0, "shared mapping names '%s', expected '%s'", m.path,
              g_shared_path);
    {
        uint8_t page[PAGE];
        int sfd = open(g_shared_path, O_RDWR | O_CLOEXEC);
        check(sfd >= 0, "open %s: %s", g_shared_path, strerror(errno));
        check(pread(sfd, page, PAGE, 0) == (ssize_t)PAGE && verify(page, PAGE, 4000) < 0,
              "write made through the shared mapping before the checkpoint is not in the file");
        check(verify(g_shared, PAGE, 4000) < 0, "shared mapping page 0 lost its data");
        check(verify(g_shared + 3 * PAGE, PAGE, 3000 + 3) < 0,
              "shared mapping page 3 does not read the file");
        fill(g_shared + PAGE, PAGE, 5000);
        check(pread(sfd, page, PAGE, PAGE) == (ssize_t)PAGE && verify(page, PAGE, 5000) < 0,
              "write through the shared mapping after restore did not reach the file");
        fill(page, PAGE, 6000);
        check(pwrite(sfd, page, PAGE, 2 * PAGE) == (ssize_t)PAGE, "pwrite %s", g_shared_path);
        check(verify(g_shared + 2 * PAGE, PAGE, 6000) < 0,
              "pwrite to the file is not seen through the shared mapping");
        close(sfd);
    }

    /* vdso. */
    unsigned long s = 0, e = 0;
    if (check(maps_find_name("[vdso]", &s, &e) == 0, "[vdso] missing"))
        check(s == g_vdso_start && e == g_vdso_end, "[vdso] moved from %lx-%lx to %lx-%lx",
              g_vdso_start, g_vdso_end, s, e);
    if (g_vvar_start && check(maps_find_name("[vvar]", &s, &e) == 0, "[vvar] missing"))
        check(s == g_vvar_start, "[vvar] moved from %lx to %lx", g_vvar_start, s);
    struct timespec ts1, ts2, rt;
    struct timeval tv;
    check(clock_gettime(CLOCK_MONOTONIC, &ts1) == 0, "clock_gettime(MONOTONIC)");
    check(clock_gettime(CLOCK_REALTIME, &rt) == 0, "clock_gettime(REALTIME)");
    check(gettimeofday(&tv, NULL) == 0, "gettimeofday");
    check(clock_gettime(CLOCK_MONOTONIC, &ts2) == 0, "clock_gettime(MONOTONIC)");
    check(ts2.tv_sec > ts1.tv_sec || (ts2.tv_sec == ts1.tv_sec && ts2.tv_nsec >= ts1.tv_nsec),
          "CLOCK_MONOTONIC went backwards");
    long diff = (long)tv.tv_sec - (long)rt.tv_sec;
    check(diff >= -1 && diff <= 1, "gettimeofday %ld and CLOCK_REALTIME %ld disagree",
          (long)tv.tv_sec, (long)rt.tv_sec);
    check(rt.tv_sec > 1600000000, "CLOCK_REALTIME %ld is implausible", (long)rt.tv_sec);
    time_t t = time(NULL);
    /* time() reads the tick-updated coarse clock: it may lag CLOCK_REALTIME by a tick. */
    check(t - rt.tv_sec >= -1 && t - rt.tv_sec <= 1, "time() %ld disagrees with clock_gettime %ld",
          (long)t, (long)rt.tv_sec);
}

/* Each frame keeps a few locals derived from its depth; the wait loop runs at the bottom. */
static __attribute__((noinline)) int recurse(long depth)
{
    volatile uint64_t local[8];
    for (int i = 0; i < 8; i++)
        local[i] = pat(7, depth * 8 + i);
    int bad = 0;
    if (depth > 0) {
        bad = recurse(depth - 1);
    } else {
        while (!subject_stopping())
            sleep_ms(20);
        check_all();
    }
    for (int i = 0; i < 8; i++)
        if (local[i] != pat(7, depth * 8 + i))
            bad++;
    return bad;
}

static __attribute__((noinline)) int start_recursion(long depth)
{
    subject_ready();
    return recurse(depth);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    const char *dir = opt_str("--dir", NULL);
    if (!dir)
        die("--dir DIR is required");
    g_depth = opt_long("--depth", 2000);
    char absdir[4096];
    if (!realpath(dir, absdir))
        die("realpath %s", dir);
    setup(absdir);
    int bad = start_recursion(g_depth);
    check(bad == 0, "%d stack words of the %ld-deep recursion changed", bad, g_depth);
    return subject_finish();
}
