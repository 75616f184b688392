/*
 * mixed — a small "real" program: it keeps appending generated records to a growing buffer
 * (realloc), keeps a running SHA-256 over the buffer, and indexes every record in a chained
 * hash table of malloc'ed nodes. When the buffer reaches --max-mib (default 16) it frees
 * everything and starts a new generation, so the heap keeps changing shape (brk and mmap'ed
 * chunks come and go).
 *
 *   mixed --out OUT --pidfile PID [--max-mib 16]
 *
 * At SIGTERM it re-verifies its whole state: every record regenerated from its seed, the
 * SHA-256 of the buffer recomputed from scratch equals the running one, and every hash-table
 * node is present with the right checksum; the generation and record counters agree.
 */
#include "subject.h"

#define RECORD 4096

/* ---- SHA-256 ---- */
struct sha256 {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
    size_t fill;
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5],
             g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha_init(struct sha256 *s)
{
    static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(s->h, iv, sizeof(iv));
    s->len = 0;
    s->fill = 0;
}

static void sha_update(struct sha256 *s, const uint8_t *p, size_t n)
{
    s->len += n;
    while (n) {
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, k);
        s->fill += k, p += k, n -= k;
        if (s->fill == 64) {
            sha_block(s, s->buf);
            s->fill = 0;
        }
    }
}

static void sha_final(struct sha256 s, uint8_t out[32]) /* by value: the running one goes on */
{
    uint64_t bits = s.len * 8;
    uint8_t pad = 0x80, zero = 0;
    sha_update(&s, &pad, 1);
    while (s.fill != 56)
        sha_update(&s, &zero, 1);
    uint8_t lenbe[8];
    for (int i = 0; i < 8; i++)
        lenbe[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(&s, lenbe, 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(s.h[i] >> (24 - 8 * j));
}

/* ---- state ---- */
struct node {
    struct node *next;
    uint64_t index;
    uint64_t checksum;
    char *label; /* a small separate allocation */
};

#define NBUCKETS 1024
static struct node *g_table[NBUCKETS];
static uint8_t *g_buf;
static size_t g_len, g_cap, g_max;
static uint64_t g_records, g_generation, g_total_records;
static struct sha256 g_sha;

static void gen_record(uint64_t gen, uint64_t index, uint8_t *out)
{
    uint64_t *w = (uint64_t *)out;
    for (size_t i = 0; i < RECORD / 8; i++)
        w[i] = splitmix64(gen << 40 ^ index << 12 ^ i);
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void reset_generation(void)
{
    for (int b = 0; b < NBUCKETS; b++) {
        struct node *n = g_table[b];
        while (n) {
            struct node *next = n->next;
            free(n->label);
            free(n);
            n = next;
        }
        g_table[b] = NULL;
    }
    free(g_buf);
    g_buf = NULL;
    g_len = g_cap = 0;
    g_records = 0;
    g_generation++;
    sha_init(&g_sha);
}

static void append_record(void)
{
    if (g_len + RECORD > g_max)
        reset_generation();
    if (g_len + RECORD > g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 64 * 1024;
        uint8_t *p = realloc(g_buf, cap);
        if (!p)
            die("realloc %zu", cap);
        g_buf = p;
        g_cap = cap;
    }
    uint8_t *rec = g_buf + g_len;
    gen_record(g_generation, g_records, rec);
    struct node *n = malloc(sizeof(*n));
    if (!n)
        die("malloc node");
    n->index = g_records;
    n->checksum = fnv(rec, RECORD);
    n->label = malloc(32);
    if (!n->label)
        die("malloc label");
    snprintf(n->label, 32, "g%llu/r%llu", (unsigned long long)g_generation,
             (unsigned long long)g_records);
    size_t b = splitmix64(n->index) % NBUCKETS;
    n->next = g_table[b];
    g_table[b] = n;
    sha_update(&g_sha, rec, RECORD);
    g_len += RECORD;
    g_records++;
    g_total_records++;
}

static void verify_all(void)
{
    check(g_len == g_records * RECORD, "buffer length %zu for %llu records", g_len,
          (unsigned long long)g_records);
    uint8_t rec[RECORD];
    for (uint64_t i = 0; i < g_records; i++) {
        gen_record(g_generation, i, rec);
        if (!check(memcmp(rec, g_buf + i * RECORD, RECORD) == 0,
                   "record %llu of generation %llu is corrupt", (unsigned long long)i,
                   (unsigned long long)g_generation))
            break;
    }
    struct sha256 fresh;
    sha_init(&fresh);
    sha_update(&fresh, g_buf, g_len);
    uint8_t a[32], b[32];
    sha_final(fresh, a);
    sha_final(g_sha, b);
    check(memcmp(a, b, 32) == 0, "running SHA-256 differs from a fresh one over %zu bytes", g_len);

    uint64_t count = 0;
    for (int bk = 0; bk < NBUCKETS; bk++)
        for (struct node *n = g_table[bk]; n; n = n->next) {
            count++;
            if (!check(n->index < g_records, "node with index %llu >= %llu records",
                       (unsigned long long)n->index, (unsigned long long)g_records))
                return;
            check(splitmix64(n->index) % NBUCKETS == (uint64_t)bk, "node %llu in wrong bucket",
                  (unsigned long long)n->index);
            check(n->checksum == fnv(g_buf + n->index * RECORD, RECORD),
                  "checksum of record %llu differs", (unsigned long long)n->index);
            char label[32];
            snprintf(label, sizeof(label), "g%llu/r%llu", (unsigned long long)g_generation,
                     (unsigned long long)n->index);
            check(strcmp(label, n->label) == 0, "label '%s', expected '%s'", n->label, label);
        }
    check(count == g_records, "hash table has %llu nodes for %llu records",
          (unsigned long long)count, (unsigned long long)g_records);
    uint64_t per_gen = g_max / RECORD;
    check(g_total_records == (g_generation - 1) * per_gen + g_records,
          "total %llu records != %llu generations x %llu + %llu", (unsigned long long)g_total_records,
          (unsigned long long)g_generation - 1, (unsigned long long)per_gen,
          (unsigned long long)g_records);
}

int main(int argc, char **argv)
{
    subject_init(argc, argv);
    long mib = opt_long("--max-mib", 16);
    if (mib < 1 || mib > 1024)
        die("--max-mib must be 1..1024");
    g_max = (size_t)mib * 1024 * 1024;
    reset_generation();
    for (int i = 0; i < 256; i++)
        append_record();
    subject_ready();
    while (!subject_stopping()) {
        for (int i = 0; i < 4 && !subject_stopping(); i++)
            append_record();
        sleep_ms(2);
    }
    verify_all();
    return subject_finish();
}
