/*
 * nonroot — credentials of a process that dropped root.
 *
 *   nonroot --out OUT --pidfile PID [--uid 65534] [--gid 65534] [--group 100]
 *
 * Starts as root, drops CAP_SYS_BOOT from the bounding set, then (with PR_SET_KEEPCAPS)
 * setgroups([group]), setresgid(gid x3), setresuid(uid x3), and keeps CAP_NET_BIND_SERVICE in
 * the permitted, effective, inheritable and ambient sets. Then it runs as that uid; the pidfile
 * and OUTFILE are written as that uid (their directory must be writable by it).
 * At SIGTERM it checks getresuid/getresgid, fsuid/fsgid, getgroups, the Uid/Gid/Groups and
 * Cap{Inh,Prm,Eff,Bnd,Amb} lines of /proc/self/status, capget(), PR_CAP_AMBIENT_IS_SET,
 * PR_GET_KEEPCAPS, PR_GET_SECUREBITS and PR_GET_DUMPABLE against what they were at start.
 */
#include "subject.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define KEPT_CAP CAP_NET_BIND_SERVICE
#define DROPPED_BOUND CAP_SYS_BOOT

static const char *const status_keys[] = { "Uid", "Gid", "Groups", "CapInh", "CapPrm",
                                           "CapEff", "CapBnd", "CapAmb", "NoNewPrivs" };
#define NKEYS (sizeof(status_keys) / sizeof(status_keys[0]))

static char g_status0[NKEYS][256];

static int capget_raw(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capget, &h, d);
}

static int capset_raw(struct __user_cap_data_struct d[2])
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return (int)syscall(SYS_capset, &h, d);
}

static void read_status(char out[NKEYS][256])
{
    for (size_t i = 0; i < NKEYS; i++)
        if (status_field("/proc/self/status", status_keys[i], out[i], 256) != 0)
            snprintf(out[i], 256, "(missing)");
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    uid_t uid = (uid_t)opt_long("--uid", 65534);
    gid_t gid = (gid_t)opt_long("--gid", 65534);
    gid_t group = (gid_t)opt_long("--group", 100);
    if (getuid() != 0)
        die("must start as root (uid is %d)", getuid());

    if (prctl(PR_CAPBSET_DROP, DROPPED_BOUND, 0, 0, 0) != 0)
        die("PR_CAPBSET_DROP");
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        die("PR_SET_KEEPCAPS");
    if (setgroups(1, &group) != 0)
        die("setgroups");
    if (setresgid(gid, gid, gid) != 0)
        die("setresgid");
    if (setresuid(uid, uid, uid) != 0)
        die("setresuid");

    struct __user_cap_data_struct caps[2];
    memset(caps, 0, sizeof(caps));
    caps[0].permitted = caps[0].effective = caps[0].inheritable = 1u << KEPT_CAP;
    if (capset_raw(caps) != 0)
        die("capset");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, KEPT_CAP, 0, 0) != 0)
        die("PR_CAP_AMBIENT_RAISE");

    int keepcaps = prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0);
    int securebits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    read_status(g_status0);

    subject_ready();
    while (!subject_stopping())
        sleep_ms(20);

    uid_t r, e, s;
    gid_t rg, eg, sg;
    check(getresuid(&r, &e, &s) == 0 && r == uid && e == uid && s == uid,
          "getresuid %d/%d/%d, expected %d", r, e, s, uid);
    check(getresgid(&rg, &eg, &sg) == 0 && rg == gid && eg == gid && sg == gid,
          "getresgid %d/%d/%d, expected %d", rg, eg, sg, gid);
    int fsuid = setfsuid((uid_t)-1), fsgid = setfsgid((gid_t)-1);
    check(fsuid == (int)uid && fsgid == (int)gid, "fsuid/fsgid %d/%d, expected %d/%d", fsuid, fsgid,
          uid, gid);
    gid_t groups[64];
    int ng = getgroups(64, groups);
    check(ng == 1 && groups[0] == group, "getgroups returned %d groups (first %d), expected [%d]",
          ng, ng > 0 ? (int)groups[0] : -1, group);

    struct __user_cap_data_struct now[2];
    if (check(capget_raw(now) == 0, "capget: %s", strerror(errno))) {
        check(now[0].permitted == 1u << KEPT_CAP && now[0].effective == 1u << KEPT_CAP &&
                  now[0].inheritable == 1u << KEPT_CAP && now[1].permitted == 0 &&
                  now[1].effective == 0 && now[1].inheritable == 0,
              "capget: permitted 0x%x effective 0x%x inheritable 0x%x", now[0].permitted,
              now[0].effective, now[0].inheritable);
    }
    check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, KEPT_CAP, 0, 0) == 1,
          "CAP_NET_BIND_SERVICE is no longer ambient");
    check(prctl(PR_CAPBSET_READ, DROPPED_BOUND, 0, 0, 0) == 0,
          "CAP_SYS_BOOT is back in the bounding set");
    check(prctl(PR_CAPBSET_READ, KEPT_CAP, 0, 0, 0) == 1,
          "CAP_NET_BIND_SERVICE is no longer in the bounding set");
    check(prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) == keepcaps, "PR_GET_KEEPCAPS changed");
    check(prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) == securebits, "securebits 0x%x, expected 0x%x",
          prctl(PR_GET_SECUREBITS, 0, 0, 0, 0), securebits);
    check(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == dumpable, "dumpable %d, expected %d",
          prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), dumpable);

    char st[NKEYS][256];
    read_status(st);
    for (size_t i = 0; i < NKEYS; i++)
        check(strcmp(st[i], g_status0[i]) == 0, "/proc/self/status %s: '%s', was '%s'",
              status_keys[i], st[i], g_status0[i]);

    return subject_finish();
}
