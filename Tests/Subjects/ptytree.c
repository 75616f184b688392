/*
 * ptytree — a terminal emulator, a shell and a job, all in one tree (like `script` or tmux).
 *
 *   ptytree --out OUT --pidfile PID
 *
 *   ptytree-R   the "emulator": holds the pty master (non-blocking), types a line into it every
 *   |           ~100 ms and reads what the terminal shows
 *   └─ ptytree-S   the "shell": its own session, whose controlling terminal is the slave
 *      |           (opened without O_NOCTTY as a session leader); it closed the master and,
 *      |           once J runs, keeps no fd on the terminal (stdin/stdout on /dev/null)
 *      └─ ptytree-J   the "job": its own process group, the terminal's foreground group; stdin
 *                     and stdout on the slave, answers each line it reads with "got: LINE"
 *
 * Checked at the end: R: the terminal shows "got: last" after R typed "last", and it showed
 * the answer to the last line it typed before; S: it leads its session, the slave is its
 * controlling terminal (/dev/tty opens, /proc/self/stat's tty_nr is the slave), J's group is
 * in the foreground; J: it leads its group in S's session, which is the foreground group, and it
 * answered every line it read.
 */
#include "subject.h"
#include "family.h"
#include "lines.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

static pid_t g_job;

/* Reads what fd has now (non-blocking) and appends it to buf (len in *len, kept < size). */
static void take(int fd, char *buf, size_t *len, size_t size)
{
    for (;;) {
        ssize_t n = read(fd, buf + *len, size - 1 - *len);
        if (n <= 0)
            break;
        *len += (size_t)n;
        buf[*len] = '\0';
        if (*len > size / 2) { /* keep the tail only */
            memmove(buf, buf + *len - size / 4, size / 4);
            *len = size / 4;
            buf[*len] = '\0';
        }
    }
}

static void job(void *arg)
{
    (void)arg;
    if (setpgid(0, 0) != 0)
        die("J: setpgid");
    /* Put ourselves in the foreground, as a job-control shell would for us. */
    signal(SIGTTOU, SIG_IGN);
    if (tcsetpgrp(0, getpid()) != 0)
        die("J: tcsetpgrp");
    signal(SIGTTOU, SIG_DFL);
    family_ready();
    struct line_answerer a = { .len = 0 };
    while (!family_poll(5))
        answer_lines(&a, 0, 1, "got: ");
    check(getpgrp() == getpid(), "J: group %d is not its own", (int)getpgrp());
    check(getsid(0) == getppid(), "J: session %d, not S's (%d)", (int)getsid(0), (int)getppid());
    check(tcgetpgrp(0) == getpgrp(), "J: foreground group %d, J's %d", (int)tcgetpgrp(0), (int)getpgrp());
    check(a.lines == a.answered, "J: %ld lines read, %ld answered", a.lines, a.answered);
}

static void shell(void *arg)
{
    int master = *(int *)arg;
    if (setsid() < 0)
        die("S: setsid");
    int slave = open(ptsname(master), O_RDWR | O_NONBLOCK); /* becomes the controlling terminal */
    if (slave < 0)
        die("S: open %s", ptsname(master));
    close(master);
    struct stat st;
    if (fstat(slave, &st) != 0 || dup2(slave, 0) < 0 || dup2(slave, 1) < 0)
        die("S: dup2");
    close(slave);
    struct kid j;
    kid_spawn(&j, "ptytree-J", job, NULL);
    g_job = j.pid;
    /* Like a login shell's parent: no fd on the terminal, yet its controlling process. */
    int devnull = open("/dev/null", O_RDWR);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0)
        die("S: /dev/null");
    close(devnull);
    family_ready();
    uint32_t seq = 0;
    while (!family_poll(10))
        if (!j.finished && !kid_ping(&j, ++seq))
            kids_finish();
    /* /dev/tty opens only with a controlling terminal; which one it is, /proc/self/stat says
       (field 7, tty_nr, in the kernel's encoding). */
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
    check(tty >= 0, "S: no controlling terminal (/dev/tty: %s)", strerror(errno));
    char stat_text[1024];
    unsigned tty_nr = 0;
    if (read_file("/proc/self/stat", stat_text, sizeof(stat_text)) > 0 && strrchr(stat_text, ')'))
        sscanf(strrchr(stat_text, ')') + 2, "%*c %*d %*d %*d %u", &tty_nr);
    check(tty_nr == ((major(st.st_rdev) << 8) | (minor(st.st_rdev) & 0xff) | ((minor(st.st_rdev) & ~0xffu) << 12)),
          "S: the controlling terminal (tty_nr %#x) is not the slave", tty_nr);
    if (tty >= 0) {
        check(getsid(0) == getpid() && tcgetsid(tty) == getpid(), "S: session %d, terminal's %d", (int)getsid(0), (int)tcgetsid(tty));
        check(tcgetpgrp(tty) == g_job, "S: foreground group %d, J is %d", (int)tcgetpgrp(tty), (int)g_job);
        close(tty);
    }
    kids_finish();
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0)
        die("/dev/ptmx");
    struct kid s;
    kid_spawn(&s, "ptytree-S", shell, &master);
    subject_ready();

    char shown[8192];
    size_t len = 0;
    long typed = 0;
    uint32_t seq = 0;
    while (!family_poll(10)) {
        if (!s.finished && !kid_ping(&s, ++seq))
            kids_finish();
        take(master, shown, &len, sizeof(shown));
        if (seq % 10 == 0) {
            char line[32];
            int n = snprintf(line, sizeof(line), "line %ld\n", typed + 1);
            if (write(master, line, n) == n)
                typed++;
        }
    }
    if (!check(write(master, "last\n", 5) == 5, "R: cannot type: %s", strerror(errno)))
        typed = -1;
    for (int i = 0; i < 300 && !strstr(shown, "got: last"); i++) {
        sleep_ms(10);
        take(master, shown, &len, sizeof(shown));
    }
    check(strstr(shown, "got: last") != NULL, "R: no answer to 'last'; the terminal shows '%.200s'",
          len > 200 ? shown + len - 200 : shown);
    char want[48];
    snprintf(want, sizeof(want), "got: line %ld\r\n", typed);
    check(typed <= 0 || strstr(shown, want) != NULL, "R: no answer to line %ld", typed);
    kids_finish();
    return subject_finish();
}
