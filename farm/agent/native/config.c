/*
 * farm-workload's CONFIG: the compact "key=value,..." form of
 * workloads.encode_config() or a flat JSON object (nested values are skipped,
 * they can only belong to keys no workload reads), checked like
 * workloads._resolve() with the same messages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workloads.h"

void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("workload: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_USAGE);
}

enum kind { V_MISSING, V_NUMBER, V_OTHER };

typedef struct {
    enum kind kind;
    double value;
    char text[64]; /* how the value was written, for messages */
} given;

typedef struct {
    const workload *w;
    given vals[MAX_KEYS];
    given arg1;
} config;

static void set_given(config *cfg, const char *key, size_t klen, given g)
{
    if (klen == 4 && memcmp(key, "arg1", 4) == 0) {
        cfg->arg1 = g;
        return;
    }
    for (int i = 0; i < MAX_KEYS && cfg->w->params[i].key; i++)
        if (strlen(cfg->w->params[i].key) == klen && memcmp(cfg->w->params[i].key, key, klen) == 0)
            cfg->vals[i] = g;
}

static void copy_text(given *g, const char *s, size_t len)
{
    if (len >= sizeof g->text)
        len = sizeof g->text - 1;
    memcpy(g->text, s, len);
    g->text[len] = '\0';
}

int parse_number(const char *s, size_t len, int want_float, double *out)
{
    char buf[128], *end;
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (!len || len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    if (want_float) {
        *out = strtod(buf, &end);
    } else {
        long long v = strtoll(buf, &end, 10);
        if (errno == ERANGE)
            *out = v < 0 ? -HUGE_VAL : HUGE_VAL; /* out of any range: reported as such */
        else
            *out = (double)v;
    }
    return *end == '\0';
}

/* compact form: key=value,... (values: int, or float if written with . e E n) */
static void parse_compact(config *cfg, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ','), *eq;
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len) {
            eq = memchr(p, '=', len);
            if (!eq)
                die_usage("config item '%.*s' is not key=value", (int)len, p);
            const char *key = p, *val = eq + 1;
            size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
            while (klen && (*key == ' ' || *key == '\t'))
                key++, klen--;
            while (klen && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
                klen--;
            int is_float = 0;
            for (size_t i = 0; i < vlen; i++)
                is_float |= strchr(".eEn", val[i]) != NULL && val[i] != '\0';
            given g = {V_NUMBER, 0, ""};
            if (!parse_number(val, vlen, is_float, &g.value))
                die_usage("invalid literal '%.*s' for config item '%.*s'", (int)vlen, val,
                          (int)klen, key);
            copy_text(&g, val, vlen);
            set_given(cfg, key, klen, g);
        }
        if (!end)
            break;
        p = end + 1;
    }
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* p at the opening quote; returns past the closing one */
static const char *skip_string(const char *p)
{
    for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1])
            p++;
    if (*p != '"')
        die_usage("config is not valid JSON (unterminated string)");
    return p + 1;
}

/* past any JSON value, nested ones included */
static const char *skip_value(const char *p)
{
    p = skip_ws(p);
    if (*p == '"')
        return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; *p; p++) {
            if (*p == '"') {
                p = skip_string(p) - 1;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if ((*p == '}' || *p == ']') && --depth == 0) {
                return p + 1;
            }
        }
        die_usage("config is not valid JSON (unbalanced brackets)");
    }
    const char *start = p;
    while (*p && !strchr(",}] \t\r\n", *p))
        p++;
    if (p == start)
        die_usage("config is not valid JSON");
    return p;
}

/* a flat JSON object: numbers are kept, every other value is remembered as not a number */
static void parse_json(config *cfg, const char *text)
{
    const char *p = skip_ws(text);
    if (*p != '{')
        die_usage("config must be a JSON object");
    p = skip_ws(p + 1);
    if (*p == '}')
        p++;
    else
        for (;;) {
            if (*p != '"')
                die_usage("config is not valid JSON (a key must be a string)");
            const char *key = p + 1, *kend = skip_string(p);
            size_t klen = (size_t)(kend - 1 - key);
            p = skip_ws(kend);
            if (*p != ':')
                die_usage("config is not valid JSON (':' expected)");
            const char *val = skip_ws(p + 1), *vend = skip_value(val);
            given g = {V_OTHER, 0, ""};
            copy_text(&g, val, (size_t)(vend - val));
            if (*val == '-' || (*val >= '0' && *val <= '9')) {
                if (!parse_number(val, (size_t)(vend - val), 1, &g.value))
                    die_usage("config is not valid JSON (bad number %s)", g.text);
                g.kind = V_NUMBER;
            } else if (strcmp(g.text, "NaN") == 0 || strcmp(g.text, "Infinity") == 0) {
                g.kind = V_NUMBER; /* Python's json accepts them; the range check refuses */
                g.value = g.text[0] == 'N' ? NAN : INFINITY;
            }
            set_given(cfg, key, klen, g);
            p = skip_ws(vend);
            if (*p == ',') {
                p = skip_ws(p + 1);
                continue;
            }
            if (*p != '}')
                die_usage("config is not valid JSON (',' or '}' expected)");
            p++;
            break;
        }
    if (*skip_ws(p))
        die_usage("config is not valid JSON (extra data)");
}

/* defaults filled, arg1 resolved, types and ranges checked (workloads._resolve) */
static void resolve(config *cfg, double *out)
{
    const param *ps = cfg->w->params;
    if (ps[0].key && cfg->vals[0].kind == V_MISSING)
        cfg->vals[0] = cfg->arg1;
    for (int i = 0; i < MAX_KEYS && ps[i].key; i++) {
        const given *g = &cfg->vals[i];
        double v = g->kind == V_MISSING ? ps[i].def : g->value;
        if (g->kind == V_OTHER)
            die_usage("config.%s must be a number, got %s", ps[i].key, g->text);
        if (!isfinite(v))
            die_usage("config.%s must be finite", ps[i].key);
        if (ps[i].is_int && v != floor(v))
            die_usage("config.%s must be an integer, got %s", ps[i].key, g->text);
        if (!(ps[i].low <= v && v <= ps[i].high))
            die_usage("config.%s=%s is outside [%g, %g]", ps[i].key, g->text, ps[i].low,
                      ps[i].high);
        out[i] = v;
    }
}

void load_config(const workload *w, const char *text, double *out)
{
    config cfg = {w, {{0}}, {0}};
    if (*skip_ws(text) == '{')
        parse_json(&cfg, text);
    else
        parse_compact(&cfg, text);
    resolve(&cfg, out);
}
