/*
 * sysvshm — System V shared memory segments (shmget/shmat) shared by the processes of a tree.
 *
 *   sysvshm --out OUT --pidfile PID
 *
 *   sysvshm-R   the subject
 *   └─ sysvshm-A   child
 *
 * data   key (1 << 28) | PID, 1 MiB + 100 bytes, mode 0600, attached by R before forking (A
 *        inherits the attach). Pages 16-31 hold a pattern. Every millisecond each process bumps
 *        its counter in page 0; at SIGTERM A reports its count and R checks both counters.
 * ro     key (2 << 28) | PID, 8 KiB, mode 0640, attached read-write by R and read-only by A
 *        (after the fork): R writes a sequence number into it each round, A checks that what
 *        it reads never goes back, and at the end equals R's last value.
 * dest   IPC_PRIVATE, 64 KiB, attached by R and removed (IPC_RMID) at once: it lives only as
 *        long as R's attach. R checks its pattern and that it is still marked removed.
 * R removes data and ro at the end (the tests remove them too if the subject dies).
 */
#include "subject.h"
#include "family.h"

#include <sys/ipc.h>
#include <sys/shm.h>

#define PAGE 4096
#define DATA_SIZE (256 * PAGE + 100)

struct ctl {
    volatile uint64_t counter[2];
};

static int data_id, ro_id, dest_id;
static char *data_map, *dest_map;
static volatile uint64_t *ro_map;

static uint8_t pattern(uint64_t i, uint64_t seed) { return (uint8_t)(splitmix64(seed * 7919 + i / 8) >> (8 * (i % 8))); }

static int segment(key_t key, size_t size, int mode)
{
    int id = shmget(key, size, IPC_CREAT | IPC_EXCL | mode);
    if (id < 0)
        die("shmget %#x", (unsigned)key);
    return id;
}

static void *attach(int id, int flags)
{
    void *p = shmat(id, NULL, flags);
    if (p == (void *)-1)
        die("shmat %d", id);
    return p;
}

static void child(void *arg)
{
    (void)arg;
    const volatile uint64_t *ro = attach(ro_id, SHM_RDONLY);
    struct ctl *c = (struct ctl *)data_map;
    uint64_t mine = 0, last = 0;
    family_ready();
    while (!family_poll(1)) {
        c->counter[1]++;
        mine++;
        uint64_t now = ro[0];
        check(now >= last, "A: ro went back from %llu to %llu", (unsigned long long)last, (unsigned long long)now);
        last = now;
    }
    int64_t v[6] = { (int64_t)mine, (int64_t)ro[0], 0, 0, 0, 0 };
    family_result(v);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    set_name("sysvshm-R");
    pid_t me = getpid();
    data_id = segment((1 << 28) | me, DATA_SIZE, 0600);
    ro_id = segment((2 << 28) | me, 2 * PAGE, 0640);
    dest_id = segment(IPC_PRIVATE, 16 * PAGE, 0600);
    data_map = attach(data_id, 0);
    ro_map = attach(ro_id, 0);
    dest_map = attach(dest_id, 0);
    if (shmctl(dest_id, IPC_RMID, NULL) != 0)
        die("IPC_RMID");
    for (int i = 16 * PAGE; i < 32 * PAGE; i++)
        data_map[i] = pattern(i, 1);
    for (int i = 0; i < 16 * PAGE; i++)
        dest_map[i] = pattern(i, 2);

    struct kid a;
    kid_spawn(&a, "sysvshm-A", child, NULL);
    subject_ready();

    struct ctl *c = (struct ctl *)data_map;
    uint64_t mine = 0;
    while (!subject_stopping()) {
        c->counter[0]++;
        mine++;
        ro_map[0] = mine;
        sleep_ms(1);
    }
    kids_finish();
    check(c->counter[0] == mine, "data: R's counter is %llu, R counted %llu", (unsigned long long)c->counter[0],
          (unsigned long long)mine);
    if (check(a.nresults == 1, "no result from A")) {
        check(c->counter[1] == (uint64_t)a.result[0][0], "data: A's counter in R's attach is %llu, A counted %lld (not shared?)",
              (unsigned long long)c->counter[1], (long long)a.result[0][0]);
        check((uint64_t)a.result[0][1] == mine, "ro: A last read %lld, R wrote %llu", (long long)a.result[0][1],
              (unsigned long long)mine);
    }
    int bad = -1;
    for (int i = PAGE; i < DATA_SIZE && bad < 0; i++)
        if (data_map[i] != (i >= 16 * PAGE && i < 32 * PAGE ? (char)pattern(i, 1) : 0))
            bad = i;
    check(bad < 0, "data: byte %d differs", bad);
    for (int i = 0; i < 16 * PAGE; i++)
        if (!check((uint8_t)dest_map[i] == pattern(i, 2), "dest: byte %d differs", i))
            break;

    struct shmid_ds ds;
    check(shmctl(data_id, IPC_STAT, &ds) == 0 && ds.shm_perm.__key == ((1 << 28) | me) && ds.shm_segsz == DATA_SIZE &&
              (ds.shm_perm.mode & 0777) == 0600,
          "data: segment %d is not key %#x, %d bytes, mode 0600", data_id, (unsigned)((1 << 28) | me), DATA_SIZE);
    check(shmctl(ro_id, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & 0777) == 0640, "ro: mode is not 0640");
    check(shmctl(dest_id, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST), "dest: no longer marked removed");
    check(shmget((1 << 28) | me, 0, 0) == data_id, "data: key and id no longer match");
    shmctl(data_id, IPC_RMID, NULL);
    shmctl(ro_id, IPC_RMID, NULL);
    return subject_finish();
}
