/*
 * ttyjob — a shell job: runs on the terminal it was started from and answers what is typed.
 *
 *   ttyjob --out OUT --pidfile PID
 *
 * Start it from a shell on a terminal (stdin, stdout, stderr on that terminal, the shell
 * leading the session). It reads lines from stdin and writes "echo: LINE" to stdout for
 * each; a counter in its memory counts the lines.
 *
 * Checked at SIGTERM (and so after a --shell-job restore, on whatever terminal it is then):
 * fds 0, 1 and 2 are one terminal, which is the controlling terminal of the subject's session
 * and has the subject's group in the foreground; an fd on /dev/tty, opened at the start,
 * works on the session's terminal; the subject leads neither its session nor
 * its group (it is a job of someone else's session); every line read was answered.
 */
#include "subject.h"
#include "lines.h"

#include <sys/stat.h>
#include <termios.h>

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    for (int fd = 0; fd < 3; fd++)
        if (!isatty(fd))
            die("fd %d is not a terminal", fd);

    int tty = open("/dev/tty", O_RDWR); /* the controlling terminal, whichever it is */
    if (tty < 0)
        die("open /dev/tty");
    struct line_answerer a = { .len = 0 };
    subject_ready();
    while (!subject_stopping())
        if (answer_lines(&a, 0, 1, "echo: ") == 0)
            sleep_ms(10); /* hung up: wait for SIGTERM */

    struct stat st[3];
    for (int fd = 0; fd < 3; fd++)
        check(fstat(fd, &st[fd]) == 0 && isatty(fd), "fd %d is not a terminal", fd);
    check(st[0].st_rdev == st[1].st_rdev && st[1].st_rdev == st[2].st_rdev, "fds 0-2 are not one terminal");
    check(tcgetsid(0) == getsid(0), "the terminal belongs to session %d, ours is %d", (int)tcgetsid(0), (int)getsid(0));
    check(tcgetpgrp(0) == getpgrp(), "foreground group %d, ours %d", (int)tcgetpgrp(0), (int)getpgrp());
    check(tcgetsid(tty) == getsid(0), "/dev/tty (fd %d) is in session %d, ours is %d", tty, (int)tcgetsid(tty), (int)getsid(0));
    check(getsid(0) != getpid(), "the subject leads its session");
    check(getpgrp() != getpid(), "the subject leads its process group");
    check(a.lines == a.answered, "%ld lines read, %ld answered", a.lines, a.answered);
    return subject_finish();
}
