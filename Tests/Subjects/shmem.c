/*
 * shmem — MAP_SHARED|MAP_ANONYMOUS memory shared by the processes of a tree.
 *
 *   shmem --out OUT --pidfile PID [--partial]
 *
 *   shmem-R   the subject; maps region 1 (1 MiB) before forking, region 3 (128 KiB) after
 *   ├─ shmem-A   maps region 2 (64 KiB) before forking G
 *   │  └─ shmem-G   shares regions 1 and 2
 *   └─ shmem-B   shares region 1 (with --partial it unmaps the region's first and last pages,
 *                so its mapping starts 4 KiB into the shared object)
 *
 * Region 1: page 1 holds a ping word written by R, a pong word per child and a counter per
 * process; pages 16-31 a pattern written by R before forking; pages 32-255 are never touched.
 * Every millisecond each process bumps its own counter; each child copies the ping into its
 * pong; once all three pongs equal the ping R increments it. A pings G the same way through
 * region 2. If the memory stopped being shared the pings would stall (after 20000 rounds
 * without progress the pinger gives up and FAILs). Region 3 is R's alone (a pattern).
 * Region 4 (48 KiB), mapped by R before forking B: B writes a pattern to its pages 4-7 and
 * unmaps it before "ready"; R reads those pages only at the end. No process has them in its
 * page tables at the dump: they exist only in the shared object.
 * At SIGTERM every process stops and reports its own count: the counter in the shared page,
 * read by R (region 1) or A (region 2), must equal it; the patterns and the untouched pages
 * (zero) are checked by every process mapping them.
 */
#include "subject.h"
#include "family.h"

#include <sys/mman.h>

#define PAGE 4096
#define R1_SIZE (256 * PAGE)
#define R2_SIZE (16 * PAGE)
#define R3_SIZE (32 * PAGE)
#define R4_SIZE (12 * PAGE)
#define STALL_ROUNDS 20000

enum { ID_R, ID_A, ID_B, ID_G };

struct ctl {
    volatile uint64_t ping;
    volatile uint64_t pong[4];
    volatile uint64_t counter[4];
};

static char *r1, *r4;
static struct ctl *c1; /* page 1 of region 1 */
static int g_partial;

static uint64_t pattern(uint64_t i, uint64_t seed) { return splitmix64(seed * 1000003 + i); }

static void fill(char *p, size_t bytes, uint64_t seed)
{
    for (size_t i = 0; i < bytes / 8; i++)
        ((uint64_t *)p)[i] = pattern(i, seed);
}

/* The pattern in [p, p+bytes) and zeros in [z, z+zbytes): returns a failure or NULL */
static const char *verify(const char *p, size_t bytes, uint64_t seed, const char *z, size_t zbytes)
{
    for (size_t i = 0; i < bytes / 8; i++)
        if (((const uint64_t *)p)[i] != pattern(i, seed))
            return "pattern changed";
    for (size_t i = 0; i < zbytes; i++)
        if (z[i])
            return "an untouched page is not zero";
    return NULL;
}

static void check_region1(const char *who)
{
    const char *e = verify(r1 + 16 * PAGE, 16 * PAGE, 1, r1 + 32 * PAGE,
                           R1_SIZE - 32 * PAGE - (g_partial ? PAGE : 0));
    check(!e, "%s: region 1: %s", who, e);
}

/* A ponger: bump the counter, answer the pings, until QUIT; report the count. */
static void pong_loop(struct ctl *c, int id, struct ctl *c2, int id2, const char *who)
{
    int64_t count = 0, count2 = 0;
    family_ready();
    while (!family_poll(1)) {
        c->counter[id] = ++count;
        uint64_t p = __atomic_load_n(&c->ping, __ATOMIC_ACQUIRE);
        if (c->pong[id] != p)
            __atomic_store_n(&c->pong[id], p, __ATOMIC_RELEASE);
        if (c2) {
            c2->counter[id2] = ++count2;
            p = __atomic_load_n(&c2->ping, __ATOMIC_ACQUIRE);
            if (c2->pong[id2] != p)
                __atomic_store_n(&c2->pong[id2], p, __ATOMIC_RELEASE);
        }
    }
    check(c->counter[id] == (uint64_t)count, "%s: its counter in shared memory is %llu, it counted %lld",
          who, (unsigned long long)c->counter[id], (long long)count);
    int64_t v[6] = { count, count2 };
    family_result(v);
}

/* A pinger: one step; returns 0 if it stalled. */
struct pinger {
    struct ctl *c;
    int ids[3];
    int n;
    uint64_t pings;
    long idle;
    int stalled;
};

static void ping_step(struct pinger *p, const char *who)
{
    uint64_t cur = p->c->ping;
    int all = 1;
    for (int i = 0; i < p->n; i++)
        if (__atomic_load_n(&p->c->pong[p->ids[i]], __ATOMIC_ACQUIRE) != cur)
            all = 0;
    if (all) {
        __atomic_store_n(&p->c->ping, cur + 1, __ATOMIC_RELEASE);
        p->pings++;
        p->idle = 0;
    } else if (++p->idle > STALL_ROUNDS && !p->stalled) {
        p->stalled = 1;
        check(0, "%s: ping %llu unanswered for %d rounds (pongs %llu %llu %llu %llu)", who,
              (unsigned long long)cur, STALL_ROUNDS, (unsigned long long)p->c->pong[0],
              (unsigned long long)p->c->pong[1], (unsigned long long)p->c->pong[2],
              (unsigned long long)p->c->pong[3]);
    }
}

static void grandchild(void *arg)
{
    struct ctl *c2 = arg;
    check_region1("shmem-G");
    pong_loop(c1, ID_G, c2, ID_G, "shmem-G");
    check_region1("shmem-G");
}

static void child_b(void *arg)
{
    (void)arg;
    if (g_partial && (munmap(r1, PAGE) != 0 || munmap(r1 + R1_SIZE - PAGE, PAGE) != 0))
        die("shmem-B: munmap");
    fill(r4 + 4 * PAGE, 4 * PAGE, 4);
    if (munmap(r4, R4_SIZE) != 0)
        die("shmem-B: munmap region 4");
    pong_loop(c1, ID_B, NULL, 0, "shmem-B");
    check_region1("shmem-B");
}

static void child_a(void *arg)
{
    (void)arg;
    char *r2 = mmap(NULL, R2_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r2 == MAP_FAILED)
        die("shmem-A: mmap region 2");
    struct ctl *c2 = (struct ctl *)r2;
    fill(r2 + 8 * PAGE, 4 * PAGE, 2);
    struct kid g;
    kid_spawn(&g, "shmem-G", grandchild, c2);
    struct pinger pg = { c2, { ID_G }, 1, 0, 0, 0 };
    while (pg.pings == 0 && !pg.stalled) /* one answered ping before "ready" */
        ping_step(&pg, "shmem-A"), sleep_ms(1);
    if (pg.stalled)
        die("shmem-A: G does not answer pings");
    int64_t count = 0;
    family_ready();
    while (!family_poll(1)) {
        c1->counter[ID_A] = ++count;
        uint64_t p = __atomic_load_n(&c1->ping, __ATOMIC_ACQUIRE);
        if (c1->pong[ID_A] != p)
            __atomic_store_n(&c1->pong[ID_A], p, __ATOMIC_RELEASE);
        ping_step(&pg, "shmem-A");
    }
    kids_finish();
    check(g.nresults == 1 && (int64_t)c2->counter[ID_G] == g.result[0][1],
          "shmem-A: G's counter in region 2 is %llu, G counted %lld",
          (unsigned long long)c2->counter[ID_G], (long long)(g.nresults ? g.result[0][1] : -1));
    check(pg.pings > 0, "shmem-A: no ping to G was answered");
    const char *e = verify(r2 + 8 * PAGE, 4 * PAGE, 2, r2 + 12 * PAGE, 4 * PAGE);
    check(!e, "shmem-A: region 2: %s", e);
    check_region1("shmem-A");
    int64_t v[6] = { count, 0 };
    family_result(v);
    if (g.nresults == 1)
        family_result(g.result[0]);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    for (int i = 1; i < argc; i++)
        g_partial |= strcmp(argv[i], "--partial") == 0;
    set_name("shmem-R");
    r1 = mmap(NULL, R1_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r1 == MAP_FAILED)
        die("mmap region 1");
    c1 = (struct ctl *)(r1 + PAGE);
    fill(r1 + 16 * PAGE, 16 * PAGE, 1);
    struct kid a, b;
    kid_spawn(&a, "shmem-A", child_a, NULL);
    r4 = mmap(NULL, R4_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r4 == MAP_FAILED)
        die("mmap region 4");
    kid_spawn(&b, "shmem-B", child_b, NULL);
    char *r3 = mmap(NULL, R3_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r3 == MAP_FAILED)
        die("mmap region 3");
    fill(r3, R3_SIZE / 2, 3);

    struct pinger p = { c1, { ID_A, ID_B, ID_G }, 3, 0, 0, 0 };
    while (p.pings == 0 && !p.stalled)
        ping_step(&p, "shmem-R"), sleep_ms(1);
    if (p.stalled)
        die("shmem-R: the children do not answer pings");
    subject_ready();
    int64_t count = 0;
    while (!subject_stopping()) {
        c1->counter[ID_R] = ++count;
        ping_step(&p, "shmem-R");
        sleep_ms(1);
    }
    kids_finish();
    /* A sent its result and G's; B its own. */
    int64_t want[4] = { count, a.nresults >= 1 ? a.result[0][0] : -1,
                        b.nresults >= 1 ? b.result[0][0] : -1,
                        a.nresults >= 2 ? a.result[1][0] : -1 };
    static const char *name[4] = { "R", "A", "B", "G" };
    for (int i = 0; i < 4; i++)
        check((int64_t)c1->counter[i] == want[i],
              "shmem-R: %s's counter in region 1 is %llu, %s counted %lld", name[i],
              (unsigned long long)c1->counter[i], name[i], (long long)want[i]);
    check(p.pings > 0, "shmem-R: no ping was answered");
    check_region1("shmem-R");
    const char *e = verify(r3, R3_SIZE / 2, 3, r3 + R3_SIZE / 2, R3_SIZE / 2);
    check(!e, "shmem-R: region 3: %s", e);
    e = verify(r4 + 4 * PAGE, 4 * PAGE, 4, r4 + 8 * PAGE, R4_SIZE - 8 * PAGE);
    check(!e, "shmem-R: region 4 (written by B only): %s", e);
    return subject_finish();
}
