/*
 * lines.h — answering what is typed on a terminal, line by line (header-only; include after
 * subject.h). Used by the subjects that play a program on a terminal (ttyjob, ptytree).
 */
#ifndef CRYO_LINES_H
#define CRYO_LINES_H

struct line_answerer {
    char buf[512]; /* an incomplete line so far */
    size_t len;
    long lines;    /* complete lines read */
    long answered; /* answers written whole */
};

/* One read from `in`; each complete line LINE it completes is answered with "PREFIX LINE\n"
   on `out`. Returns what read returned. */
static __attribute__((unused)) ssize_t answer_lines(struct line_answerer *a, int in, int out, const char *prefix)
{
    ssize_t n = read(in, a->buf + a->len, sizeof(a->buf) - 1 - a->len);
    if (n <= 0)
        return n;
    a->len += (size_t)n;
    char *nl;
    while ((nl = memchr(a->buf, '\n', a->len)) != NULL) {
        size_t one = (size_t)(nl - a->buf);
        char reply[600];
        int r = snprintf(reply, sizeof(reply), "%s%.*s\n", prefix, (int)one, a->buf);
        a->lines++;
        if (write(out, reply, r) == r)
            a->answered++;
        memmove(a->buf, nl + 1, a->len - one - 1);
        a->len -= one + 1;
    }
    if (a->len == sizeof(a->buf) - 1) /* a line too long to keep: drop it */
        a->len = 0;
    return n;
}

#endif
