/*
 * farm-workload: the agent's built-in workloads as one small native program.
 *
 *     farm-workload PKG CONFIG [QUOTA_BYTES]
 *
 * Pre-spawned jobs (FARM_GATE=1 in the environment) wait for their release:
 * the agent starts them ahead of time, policy and all, with stdin a pipe, and
 * at the release writes one byte to it (await_release). Only then does the
 * workload run (stdin is /dev/null again). End of file instead of the byte
 * means the job was cancelled: exit EXIT_CANCELLED.
 *
 *     farm-workload --exec PROGRAM [ARG...]
 *
 * holds another program (cyclictest) at the same gate: once released it
 * execs PROGRAM with its arguments (policy, process group and limits
 * unchanged), so that program too is ready at its release instead of being
 * forked and exec'd then. Without FARM_GATE=1 it execs at once. A failed exec
 * exits EXIT_NOEXEC with a message on stderr. (FARM_EXEC_GATE marks builds
 * that know this mode.)
 *
 * The same pkgs, configs, output lines and exit statuses as
 * farm/agent/workloads.py (the fallback, and the reference: keep them in
 * step), without an interpreter to start per job: under TCG a Python job
 * spends ~170 ms before its first line of work, a native one well under
 * 10 ms. CONFIG is the compact "key=value,..." form of encode_config() or a
 * flat JSON object. Exit 2 (EXIT_USAGE) for a bad command line or config,
 * with a message on stderr; 86 (EXIT_QUOTA) when the memory quota
 * (RLIMIT_AS = size at start + QUOTA_BYTES) is exceeded; linpack exits 1 if
 * its residual is bad. libc only, built with gcc -O2 -static by farm image
 * build (farm/image/native.py); CONFIG is parsed by config.c. Deterministic:
 * no clock, no random seed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "workloads.h"

#define INT_MAX_40 1099511627776.0 /* 1 << 40 */

/* ---- helpers -------------------------------------------------------------- */

void die_quota(void)
{
    static const char msg[] = "workload: out of memory quota\n";
    fflush(stdout);
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to say */
    }
    _exit(EXIT_QUOTA);
}

void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        die_quota();
    return p;
}

static const char *env_or(const char *name)
{
    const char *v = getenv(name);
    return v ? v : "?";
}

/* ---- hey, namaste -------------------------------------------------------- */

static int run_hey(const double *cfg)
{
    (void)cfg;
    printf("Hey! I am task %s job %s.\n", env_or("FARM_TASK_ID"), env_or("FARM_JOB"));
    return 0;
}

static int run_namaste(const double *cfg)
{
    (void)cfg;
    printf("Namaste from task %s job %s.\n", env_or("FARM_TASK_ID"), env_or("FARM_JOB"));
    return 0;
}

/* ---- pi: Machin's formula in fixed point, exactly as workloads.py ---------
 * Big numbers are arrays of base-1e9 limbs, most significant first, all of
 * the same length; only non-negative values occur. */

#define BASE 1000000000u

typedef struct {
    uint32_t *d;
    size_t n;
} big;

static big big_new(size_t n)
{
    big b = {xmalloc(n * sizeof(uint32_t)), n};
    memset(b.d, 0, n * sizeof(uint32_t));
    return b;
}

/* b //= v (floor division of a non-negative number); returns 1 if b is now 0 */
static int big_div(big *b, uint32_t v, size_t *first)
{
    uint64_t rem = 0;
    size_t i = *first;
    for (; i < b->n; i++) {
        uint64_t cur = rem * BASE + b->d[i];
        b->d[i] = (uint32_t)(cur / v);
        rem = cur % v;
    }
    while (*first < b->n && b->d[*first] == 0)
        (*first)++;
    return *first == b->n;
}

/* dst = src // v, from index first */
static void big_div_into(big *dst, const big *src, uint32_t v, size_t first)
{
    uint64_t rem = 0;
    memset(dst->d, 0, first * sizeof(uint32_t));
    for (size_t i = first; i < src->n; i++) {
        uint64_t cur = rem * BASE + src->d[i];
        dst->d[i] = (uint32_t)(cur / v);
        rem = cur % v;
    }
}

static void big_add(big *a, const big *b, size_t first)
{
    uint32_t carry = 0;
    for (size_t i = a->n; i-- > first;) {
        uint32_t s = a->d[i] + b->d[i] + carry;
        carry = s >= BASE;
        a->d[i] = carry ? s - BASE : s;
    }
    for (size_t i = first; carry && i-- > 0;) {
        uint32_t s = a->d[i] + carry;
        carry = s >= BASE;
        a->d[i] = carry ? s - BASE : s;
    }
}

static void big_sub(big *a, const big *b, size_t first) /* a >= b */
{
    uint32_t borrow = 0;
    for (size_t i = a->n; i-- > first;) {
        uint32_t sub = b->d[i] + borrow;
        borrow = a->d[i] < sub;
        a->d[i] = borrow ? a->d[i] + BASE - sub : a->d[i] - sub;
    }
    for (size_t i = first; borrow && i-- > 0;) {
        borrow = a->d[i] == 0;
        a->d[i] = borrow ? BASE - 1 : a->d[i] - 1;
    }
}

static void big_mul_small(big *a, uint32_t v)
{
    uint64_t carry = 0;
    for (size_t i = a->n; i-- > 0;) {
        uint64_t cur = (uint64_t)a->d[i] * v + carry;
        a->d[i] = (uint32_t)(cur % BASE);
        carry = cur / BASE;
    }
}

/* total = arctan(1/x) * scale, with Python's floor divisions */
static void arctan_inv(big *total, const big *scale, uint32_t x)
{
    big term = big_new(scale->n), part = big_new(scale->n);
    size_t first = 0;
    uint64_t x2 = (uint64_t)x * x, n = 3;
    int sign = -1;
    memcpy(term.d, scale->d, scale->n * sizeof(uint32_t));
    big_div(&term, x, &first);
    memcpy(total->d, term.d, term.n * sizeof(uint32_t));
    while (first < term.n) {
        big_div(&term, (uint32_t)x2, &first);
        if (n > UINT32_MAX)
            die_usage("pi: too many digits");
        big_div_into(&part, &term, (uint32_t)n, first);
        if (sign > 0)
            big_add(total, &part, first);
        else
            big_sub(total, &part, first);
        n += 2;
        sign = -sign;
    }
    free(term.d);
    free(part.d);
}

static int run_pi(const double *cfg)
{
    long digits = (long)cfg[0];
    long places = digits + 10; /* scale = 10 ** (digits + 10) */
    size_t limbs = (size_t)(places / 9) + 2;
    big scale = big_new(limbs), a = big_new(limbs), b = big_new(limbs);
    uint32_t top = 1;
    for (long i = 0; i < places % 9; i++)
        top *= 10;
    scale.d[limbs - 1 - (size_t)(places / 9)] = top;
    arctan_inv(&a, &scale, 5);
    arctan_inv(&b, &scale, 239);
    big_mul_small(&a, 4);
    big_sub(&a, &b, 0);
    big_mul_small(&a, 4);
    /* decimal text, then drop the last 10 digits (// 10**10 of a positive number) */
    char *text = xmalloc(limbs * 9 + 1), *p = text;
    size_t i = 0;
    while (i < limbs - 1 && a.d[i] == 0)
        i++;
    p += sprintf(p, "%u", a.d[i]);
    for (i++; i < limbs; i++)
        p += sprintf(p, "%09u", a.d[i]);
    size_t len = (size_t)(p - text);
    len = len > 10 ? len - 10 : 1;
    text[len] = '\0';
    printf("%c.%s\n", text[0], text + 1);
    free(text);
    free(scale.d);
    free(a.d);
    free(b.d);
    return 0;
}

/* ---- cond_42, cond_mod ----------------------------------------------------- */

static int count_unless(int condition, double count)
{
    if (condition) {
        puts("condition met, no counting");
        return 0;
    }
    volatile uint64_t total = 0; /* volatile: the counting is the work */
    uint64_t n = (uint64_t)count;
    for (uint64_t i = 0; i < n; i++)
        total += i;
    printf("counted to %llu\n", (unsigned long long)n);
    return 0;
}

static int run_cond_42(const double *cfg) { return count_unless(cfg[0] == 42, cfg[1]); }

static int run_cond_mod(const double *cfg)
{
    return count_unless((long long)cfg[0] % 2 == 0, cfg[1]);
}

/* ---- linpack, tumatmul ------------------------------------------------------ */

typedef struct {
    uint64_t state;
} lcg;

static lcg lcg_new(uint64_t seed)
{
    lcg r = {seed & 0xFFFFFFFFFFFFull};
    if (!r.state)
        r.state = 1;
    return r;
}

static double lcg_uniform(lcg *r, double low, double high)
{
    r->state = (r->state * 0x5DEECE66Dull + 0xB) & 0xFFFFFFFFFFFFull;
    return low + (high - low) * (double)r->state / 281474976710656.0;
}

static double *matrix(size_t rows, size_t cols, size_t n, lcg *r)
{
    double *m = xmalloc(rows * cols * sizeof(double));
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            m[i * cols + j] = lcg_uniform(r, -1.0, 1.0);
    return m;
}

static int run_linpack(const double *cfg)
{
    size_t n = (size_t)cfg[0], w = n + 1;
    lcg r = lcg_new(n);
    double *m = matrix(n, w, n, &r); /* [A | b] */
    for (size_t i = 0; i < n; i++)
        m[i * w + i] += (double)n; /* diagonally dominant: well conditioned */
    for (size_t i = 0; i < n; i++) { /* b = row sums: the solution is all ones */
        double s = 0.0;
        for (size_t j = 0; j < n; j++)
            s += m[i * w + j];
        m[i * w + n] = s;
    }
    for (size_t col = 0; col < n; col++) {
        size_t pivot = col;
        for (size_t r2 = col + 1; r2 < n; r2++)
            if (fabs(m[r2 * w + col]) > fabs(m[pivot * w + col]))
                pivot = r2;
        if (pivot != col)
            for (size_t c = 0; c < w; c++) {
                double t = m[col * w + c];
                m[col * w + c] = m[pivot * w + c];
                m[pivot * w + c] = t;
            }
        for (size_t r2 = col + 1; r2 < n; r2++) {
            double f = m[r2 * w + col] / m[col * w + col];
            if (f != 0.0)
                for (size_t c = col; c < w; c++)
                    m[r2 * w + c] -= f * m[col * w + c];
        }
    }
    double *x = xmalloc(n * sizeof(double)), residual = 0.0;
    for (size_t r2 = n; r2-- > 0;) {
        double s = 0.0;
        for (size_t c = r2 + 1; c < n; c++)
            s += m[r2 * w + c] * x[c];
        x[r2] = (m[r2 * w + n] - s) / m[r2 * w + r2];
    }
    for (size_t i = 0; i < n; i++) {
        double d = fabs(x[i] - 1.0);
        if (d > residual || isnan(d))
            residual = d;
    }
    printf("linpack n=%zu residual=%.3e\n", n, residual);
    free(m);
    free(x);
    return residual < 1e-6 ? 0 : 1;
}

static int run_tumatmul(const double *cfg)
{
    size_t n = (size_t)cfg[0];
    lcg r = lcg_new(n);
    double *a = matrix(n, n, n, &r), *b = matrix(n, n, n, &r);
    double *bt = xmalloc(n * n * sizeof(double)), *c = xmalloc(n * n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            bt[j * n + i] = b[i * n + j];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t k = 0; k < n; k++)
                s += a[i * n + k] * bt[j * n + k];
            c[i * n + j] = s;
        }
    double trace = 0.0;
    volatile double all = 0.0; /* reads every element: the product is not optimised away */
    for (size_t i = 0; i < n * n; i++)
        all += c[i];
    for (size_t i = 0; i < n; i++)
        trace += c[i * n + i];
    printf("tumatmul n=%zu trace=%.6f\n", n, trace);
    free(a);
    free(b);
    free(bt);
    free(c);
    return 0;
}

/* ---- idle, memhog ---------------------------------------------------------------- */

static int run_idle(const double *cfg)
{
    double s = cfg[0] / 1000.0;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 0;
}

static int run_memhog(const double *cfg)
{
    size_t size = (size_t)cfg[0];
    volatile char *buf = xmalloc(size);
    for (size_t i = 0; i < size; i += 4096)
        buf[i] = 1; /* touch every page */
    printf("memhog holds %zu bytes\n", size);
    free((void *)buf);
    return 0;
}

/* ---- the table (SCHEMAS of workloads.py) ------------------------------------------ */

static const workload WORKLOADS[] = {
    {"hey", {{0}}, run_hey},
    {"namaste", {{0}}, run_namaste},
    {"pi", {{"digits", 1, 100, 1, 1000000}}, run_pi},
    {"cond_42",
     {{"arg", 1, 42, -INT_MAX_40, INT_MAX_40}, {"count", 1, 100000, 0, INT_MAX_40}},
     run_cond_42},
    {"cond_mod",
     {{"arg", 1, 2, -INT_MAX_40, INT_MAX_40}, {"count", 1, 100000, 0, INT_MAX_40}},
     run_cond_mod},
    {"linpack", {{"n", 1, 30, 1, 2000}}, run_linpack},
    {"tumatmul", {{"n", 1, 20, 1, 2000}}, run_tumatmul},
    {"idle", {{"ms", 0, 10, 0, 1e10}}, run_idle},
    {"memhog", {{"bytes", 1, 1048576, 0, 17592186044416.0}}, run_memhog},
};

/* cap the address space at its size now plus quota bytes (workloads._limit_memory) */
static void limit_memory(long long quota)
{
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    rlim_t limit = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)quota;
    struct rlimit rl = {limit, limit};
    setrlimit(RLIMIT_AS, &rl);
}

/* a pre-spawned job: block until the agent releases it (one byte on stdin) */
static void await_release(void)
{
    char go;
    ssize_t n;
    do
        n = read(0, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        _exit(EXIT_CANCELLED);
    int fd = open("/dev/null", O_RDONLY);
    if (fd > 0) {
        dup2(fd, 0);
        close(fd);
    }
}

/* --exec: PROGRAM ARG... once released (the agent looks for FARM_EXEC_GATE in this file) */
__attribute__((used)) static const char exec_marker[] = "FARM_EXEC_GATE";

static int exec_after_gate(int gated, char **argv)
{
    if (gated)
        await_release();
    execv(argv[0], argv);
    fprintf(stderr, "farm-workload: exec %s: %s\n", argv[0], strerror(errno));
    return EXIT_NOEXEC;
}

int main(int argc, char **argv)
{
    const char *gate = getenv("FARM_GATE");
    if (argc >= 3 && strcmp(argv[1], "--exec") == 0)
        return exec_after_gate(gate && strcmp(gate, "1") == 0, argv + 2);
    if (argc != 3 && argc != 4) {
        fputs("usage: farm-workload PKG CONFIG [QUOTA_BYTES]\n", stderr);
        return EXIT_USAGE;
    }
    const workload *w = NULL;
    for (size_t i = 0; i < sizeof WORKLOADS / sizeof WORKLOADS[0]; i++)
        if (strcmp(WORKLOADS[i].name, argv[1]) == 0)
            w = &WORKLOADS[i];
    if (!w)
        die_usage("unknown built-in workload '%s'", argv[1]);
    double values[MAX_KEYS] = {0};
    load_config(w, argv[2], values);
    long long quota = 0;
    if (argc == 4) {
        double q;
        if (!parse_number(argv[3], strlen(argv[3]), 0, &q))
            die_usage("invalid quota '%s'", argv[3]);
        quota = q > 9e18 ? (long long)9e18 : (long long)q;
    }
    if (gate && strcmp(gate, "1") == 0)
        await_release();
    if (quota > 0)
        limit_memory(quota);
    int status = w->run(values);
    if (fflush(stdout) != 0 && errno == ENOMEM)
        die_quota();
    return status;
}
