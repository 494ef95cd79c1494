/*
 * farm-workload's shared declarations: the workload table's types, exit
 * statuses and the helpers config.c and workloads.c both use.
 */
#ifndef FARM_WORKLOAD_H
#define FARM_WORKLOAD_H

#include <stddef.h>

#define EXIT_QUOTA 86
#define EXIT_USAGE 2
#define EXIT_CANCELLED 75 /* pre-spawned, never released */
#define EXIT_NOEXEC 126 /* --exec: the program could not be exec'd (as a shell says) */
#define MAX_KEYS 4

/* one config key: SCHEMAS of workloads.py */
typedef struct {
    const char *key;
    int is_int;
    double def, low, high;
} param;

typedef struct {
    const char *name;
    param params[MAX_KEYS];
    int (*run)(const double *cfg);
} workload;

/* "workload: <message>" on stderr, exit EXIT_USAGE */
void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* "workload: out of memory quota" on stderr, exit EXIT_QUOTA */
void die_quota(void) __attribute__((noreturn));
/* malloc, or die_quota() */
void *xmalloc(size_t size);
/* a number filling s[0..len) (surrounding blanks allowed); 0 if it is not one */
int parse_number(const char *s, size_t len, int want_float, double *out);
/* CONFIG (JSON object or key=value,...) resolved for w into out[]: defaults, arg1,
 * types and ranges as workloads._resolve; dies with EXIT_USAGE if unusable */
void load_config(const workload *w, const char *text, double *out);

#endif
