/*
 * memfds — memfd files (memfd_create), open and mapped, shared by the processes of a tree.
 *
 *   memfds --out OUT --pidfile PID
 *
 *   memfds-R   the subject
 *   └─ memfds-A   child
 *
 * data    "cryo-data", 1 MiB + 100 bytes, MFD_ALLOW_SEALING, no seals. Pages 16-31 hold a
 *         pattern, the rest are holes. R maps it MAP_SHARED before forking (A inherits the
 *         mapping and the fd, whose offset R set to 12345). Every millisecond each process bumps
 *         its counter in page 0 of the mapping; at SIGTERM A reports its count and the offset it
 *         sees, R checks its own and A's counters in the shared page, the pattern, the holes
 *         (zero), the size, the name in /proc/self/fd, and the shared offset.
 * sealed  "cryo-sealed", 3000 bytes, sealed SHRINK|GROW|WRITE|SEAL: contents and seals come
 *         back, and a write is refused (EPERM).
 * priv    "cryo-priv", 64 KiB, a MAP_PRIVATE mapping in R whose page 2 R changed (copy on write):
 *         the mapping shows the change, the file does not; its fd is O_RDONLY (reopened through
 *         /proc/self/fd) at offset 4096.
 * hidden  "cryo-hidden", 8 KiB, mapped MAP_SHARED and its fd closed: only the mapping holds it.
 * posix   POSIX shared memory (shm_open "/cryo-shm-PID", a file in /dev/shm), 64 KiB, mapped
 *         MAP_SHARED by R before forking, its fd kept open; R and A bump their counters in it
 *         too, and R checks both at the end. It stays in /dev/shm (the tests remove it), so
 *         the same dump can be restored twice.
 */
#include "subject.h"
#include "family.h"

#include <sys/mman.h>
#include <sys/stat.h>

#define PAGE 4096
#define DATA_SIZE (256 * PAGE + 100)

struct ctl {
    volatile uint64_t counter[2];
};

static int data_fd, sealed_fd, priv_fd;
static char *data_map, *priv_map, *hidden_map, *posix_map;
static int posix_fd;
static char posix_name[64];

static uint8_t pattern(uint64_t i, uint64_t seed) { return (uint8_t)(splitmix64(seed * 7919 + i / 8) >> (8 * (i % 8))); }

static int make(const char *name, unsigned flags, size_t size)
{
    int fd = memfd_create(name, flags);
    if (fd < 0 || ftruncate(fd, size) != 0)
        die("memfd %s", name);
    return fd;
}

static void child(void *arg)
{
    (void)arg;
    struct ctl *c = (struct ctl *)data_map, *pc = (struct ctl *)posix_map;
    uint64_t mine = 0;
    family_ready();
    while (!family_poll(1)) {
        c->counter[1]++;
        pc->counter[1]++;
        mine++;
    }
    int64_t v[6] = { (int64_t)mine, lseek(data_fd, 0, SEEK_CUR), 0, 0, 0, 0 };
    family_result(v);
}

static void check_name(int fd, const char *name)
{
    char link[64], want[128], got[256] = "";
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    snprintf(want, sizeof(want), "/memfd:%s (deleted)", name);
    ssize_t n = readlink(link, got, sizeof(got) - 1);
    if (n > 0)
        got[n] = 0;
    check(strcmp(got, want) == 0, "fd %d is '%s', expected '%s'", fd, got, want);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    set_name("memfds-R");

    data_fd = make("cryo-data", MFD_ALLOW_SEALING, DATA_SIZE);
    data_map = mmap(NULL, DATA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, data_fd, 0);
    if (data_map == MAP_FAILED)
        die("mmap data");
    for (int i = 16 * PAGE; i < 32 * PAGE; i++)
        data_map[i] = pattern(i, 1);
    lseek(data_fd, 12345, SEEK_SET);

    sealed_fd = make("cryo-sealed", MFD_ALLOW_SEALING, 0);
    uint8_t buf[3000];
    for (int i = 0; i < 3000; i++)
        buf[i] = pattern(i, 2);
    if (write_all(sealed_fd, buf, sizeof(buf)) != 0 ||
        fcntl(sealed_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        die("seal");

    int p = make("cryo-priv", 0, 16 * PAGE);
    for (int i = 0; i < 16 * PAGE; i += 8)
        pwrite(p, &(uint64_t){ i }, 8, i);
    priv_map = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, p, 0);
    if (priv_map == MAP_FAILED)
        die("mmap priv");
    memset(priv_map + 2 * PAGE, 0xab, PAGE);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", p);
    priv_fd = open(path, O_RDONLY);
    close(p);
    if (priv_fd < 0 || lseek(priv_fd, 4096, SEEK_SET) != 4096)
        die("reopen priv");

    int h = make("cryo-hidden", 0, 2 * PAGE);
    hidden_map = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, h, 0);
    if (hidden_map == MAP_FAILED)
        die("mmap hidden");
    close(h);
    for (int i = 0; i < 2 * PAGE; i++)
        hidden_map[i] = pattern(i, 3);

    snprintf(posix_name, sizeof(posix_name), "/cryo-shm-%d", getpid());
    posix_fd = shm_open(posix_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (posix_fd < 0 || ftruncate(posix_fd, 16 * PAGE) != 0)
        die("shm_open %s", posix_name);
    posix_map = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, posix_fd, 0);
    if (posix_map == MAP_FAILED)
        die("mmap posix");

    struct kid a;
    kid_spawn(&a, "memfds-A", child, NULL);
    subject_ready();

    struct ctl *c = (struct ctl *)data_map, *pc = (struct ctl *)posix_map;
    uint64_t mine = 0;
    while (!subject_stopping()) {
        c->counter[0]++;
        pc->counter[0]++;
        mine++;
        sleep_ms(1);
    }
    kids_finish();
    check(pc->counter[0] == mine, "posix: R's counter is %llu, R counted %llu",
          (unsigned long long)pc->counter[0], (unsigned long long)mine);
    check(a.nresults != 1 || pc->counter[1] == (uint64_t)a.result[0][0],
          "posix: A's counter in R's mapping is %llu, A counted %lld (not shared?)",
          (unsigned long long)pc->counter[1], (long long)a.result[0][0]);
    check(c->counter[0] == mine, "data: R's counter in the mapping is %llu, R counted %llu",
          (unsigned long long)c->counter[0], (unsigned long long)mine);
    if (check(a.nresults == 1, "no result from A")) {
        check(c->counter[1] == (uint64_t)a.result[0][0],
              "data: A's counter in R's mapping is %llu, A counted %lld (not shared?)",
              (unsigned long long)c->counter[1], (long long)a.result[0][0]);
        check(a.result[0][1] == 12345 && lseek(data_fd, 0, SEEK_CUR) == 12345,
              "data: offset %lld in A, %lld in R, expected 12345", (long long)a.result[0][1],
              (long long)lseek(data_fd, 0, SEEK_CUR));
    }
    struct stat st;
    check(fstat(data_fd, &st) == 0 && st.st_size == DATA_SIZE, "data: size %lld", (long long)st.st_size);
    int bad = -1;
    for (int i = PAGE; i < DATA_SIZE && bad < 0; i++)
        if (data_map[i] != (i >= 16 * PAGE && i < 32 * PAGE ? (char)pattern(i, 1) : 0))
            bad = i;
    check(bad < 0, "data: byte %d differs", bad);
    uint8_t in[PAGE];
    check(pread(data_fd, in, 8, 16 * PAGE) == 8 && in[0] == pattern(16 * PAGE, 1), "data: read through the fd differs");
    check(fcntl(data_fd, F_GET_SEALS) == 0, "data: seals %#x, expected none", fcntl(data_fd, F_GET_SEALS));
    check_name(data_fd, "cryo-data");

    check(fcntl(sealed_fd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL),
          "sealed: seals %#x", fcntl(sealed_fd, F_GET_SEALS));
    check(pread(sealed_fd, buf, sizeof(buf), 0) == sizeof(buf), "sealed: short read");
    for (int i = 0; i < 3000; i++)
        if (!check(buf[i] == pattern(i, 2), "sealed: byte %d differs", i))
            break;
    errno = 0;
    check(pwrite(sealed_fd, buf, 1, 0) < 0 && errno == EPERM, "sealed: a write was not refused (%s)", strerror(errno));
    check_name(sealed_fd, "cryo-sealed");

    check((fcntl(priv_fd, F_GETFL) & O_ACCMODE) == O_RDONLY, "priv: fd is not O_RDONLY");
    check(lseek(priv_fd, 0, SEEK_CUR) == 4096, "priv: offset %lld", (long long)lseek(priv_fd, 0, SEEK_CUR));
    check(pread(priv_fd, in, PAGE, 2 * PAGE) == PAGE && ((uint64_t *)in)[0] == 2 * PAGE, "priv: the file took the private change");
    check((uint8_t)priv_map[2 * PAGE] == 0xab && (uint8_t)priv_map[3 * PAGE - 1] == 0xab, "priv: private page lost");
    check(((uint64_t *)priv_map)[5 * PAGE / 8] == 5 * PAGE, "priv: file page differs");
    check_name(priv_fd, "cryo-priv");

    for (int i = 0; i < 2 * PAGE; i++)
        if (!check((uint8_t)hidden_map[i] == pattern(i, 3), "hidden: byte %d differs", i))
            break;
    return subject_finish();
}
