/*
 * cowtree — private anonymous memory a tree shares copy-on-write.
 *
 *   cowtree --out OUT --pidfile PID [--mib N]
 *
 *   cowtree-R   the subject: fills N MiB (default 48) of MAP_PRIVATE|MAP_ANONYMOUS memory with
 *   │           a pattern, with the text "cryo-cow-needle-from-R" in page NEEDLE_PAGE, then forks
 *   ├─ cowtree-A     changes nothing
 *   │  └─ cowtree-A1    changes nothing (its pages are A's, which are R's)
 *   └─ cowtree-B     rewrites pages 0-7 with another pattern, "cryo-cow-needle-from-B" in page 3
 *   Once all are ready, R rewrites page R_PAGE: the children keep the old contents there (A, B
 *   and A1 still share that old page among themselves, not with R).
 *
 * At the end every process checks every page of the region from inside: the pattern it must
 * see (its own changes, R's data everywhere else, the old page R_PAGE in the children) and the
 * needles. A checkpoint tool that stores shared pages once must still give each process its
 * view; one that does not keep them shared on restore shows in the tree's PSS, which the tests
 * measure from outside.
 */
#include "subject.h"
#include "family.h"

#include <sys/mman.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define B_PAGES 8
#define B_NEEDLE_PAGE 3
#define NEEDLE_PAGE 1000
#define R_PAGE 2000
#define NEEDLE_WORD 16 /* the needles start at this word of their page */

static const char r_needle[] = "cryo-cow-needle-from-R";
static const char b_needle[] = "cryo-cow-needle-from-B";

static uint64_t *g_region;
static size_t g_pages;

static uint64_t word(uint64_t seed, size_t page, size_t j) { return splitmix64(seed << 40 ^ page << 12 ^ j); }

static void fill(size_t page, uint64_t seed, const char *needle)
{
    uint64_t *p = g_region + page * WORDS;
    for (size_t j = 0; j < WORDS; j++)
        p[j] = word(seed, page, j);
    if (needle)
        memcpy(p + NEEDLE_WORD, needle, strlen(needle));
}

/* Checks page `page` holds pattern `seed` (and `needle` at NEEDLE_WORD, if any); 1 if so. */
static int page_ok(size_t page, uint64_t seed, const char *needle)
{
    const uint64_t *p = g_region + page * WORDS;
    size_t skip = needle ? (strlen(needle) + 7) / 8 : 0;
    for (size_t j = 0; j < WORDS; j++) {
        if (needle && j >= NEEDLE_WORD && j < NEEDLE_WORD + skip)
            continue;
        if (p[j] != word(seed, page, j))
            return check(0, "%s: page %zu word %zu is %#llx, expected %#llx (pattern %llu)", g_self, page, j,
                         (unsigned long long)p[j], (unsigned long long)word(seed, page, j), (unsigned long long)seed);
    }
    if (needle && memcmp(p + NEEDLE_WORD, needle, strlen(needle)) != 0)
        return check(0, "%s: page %zu lost its text '%s'", g_self, page, needle);
    return 1;
}

enum role { ROLE_R, ROLE_A, ROLE_B };

/* Every page as `role` must see it. */
static void check_region(enum role role)
{
    for (size_t i = 0; i < g_pages; i++) {
        uint64_t seed = 1;
        const char *needle = i == NEEDLE_PAGE ? r_needle : NULL;
        if (role == ROLE_B && i < B_PAGES) {
            seed = 2;
            needle = i == B_NEEDLE_PAGE ? b_needle : NULL;
        }
        if (role == ROLE_R && i == R_PAGE)
            seed = 3;
        if (!page_ok(i, seed, needle))
            return;
    }
}

static void child_a1(void *arg)
{
    (void)arg;
    family_ready();
    while (!family_poll(100))
        ;
    check_region(ROLE_A);
}

static void child_a(void *arg)
{
    (void)arg;
    static struct kid a1;
    kid_spawn(&a1, "cowtree-A1", child_a1, NULL);
    family_ready();
    while (!family_poll(100))
        ;
    kids_finish();
    check_region(ROLE_A);
}

static void child_b(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < B_PAGES; i++)
        fill(i, 2, i == B_NEEDLE_PAGE ? b_needle : NULL);
    family_ready();
    while (!family_poll(100))
        ;
    check_region(ROLE_B);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    set_name("cowtree-R");
    long mib = opt_long("--mib", 48);
    g_pages = (size_t)mib * 256;
    if (g_pages <= R_PAGE)
        die("--mib %ld is too small (at least 8)", mib);
    g_region = mmap(NULL, g_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_region == MAP_FAILED)
        die("mmap %ld MiB", mib);
    for (size_t i = 0; i < g_pages; i++)
        fill(i, 1, i == NEEDLE_PAGE ? r_needle : NULL);

    struct kid a, b;
    kid_spawn(&a, "cowtree-A", child_a, NULL);
    kid_spawn(&b, "cowtree-B", child_b, NULL);
    fill(R_PAGE, 3, NULL);
    subject_ready();

    while (!family_poll(100))
        ;
    kids_finish();
    check_region(ROLE_R);
    return subject_finish();
}
