/* PARADICE_INHERIT's parse (inheritance.h). Each number is read digit by digit against its range, so that
 * no value wraps or saturates as sscanf's conversions may. */
#include "inheritance.h"
#include <string.h>
#include "paradice_wire.h"

/* A decimal number of at most `max`, then the separator `end` (or the string's end or a space when `end`
 * is ' '). Returns the cursor past the separator, or NULL. */
static const char *number(const char *p, uint64_t max, char end, uint64_t *value) {
    uint64_t v = 0;
    const char *start = p;
    while (*p >= '0' && *p <= '9') {
        unsigned digit = (unsigned)(*p++ - '0');
        if (digit > max || v > (max - digit) / 10) return NULL;
        v = v * 10 + digit;
    }
    if (p == start) return NULL;
    if (end == ' ' ? (*p != ' ' && *p != 0) : *p != end) return NULL;
    *value = v;
    return end == ' ' || *p == 0 ? p : p + 1;
}

const char *pd_parse_inherited_head(const char *description, struct pd_inherited_head *head) {
    uint64_t pid, ticket, token, memory;
    const char *p = description;
    int no_memory = 0;
    if (!(p = number(p, INT32_MAX, ' ', &pid)) || *p++ != ' ' || !(p = number(p, UINT32_MAX, ' ', &ticket)) || *p++ != ' '
        || !(p = number(p, UINT32_MAX, ' ', &token)) || *p++ != ' ')
        return NULL;
    if (strncmp(p, "-1", 2) == 0 && (p[2] == ' ' || p[2] == 0)) {
        no_memory = 1;
        p += 2;
    } else if (!(p = number(p, INT32_MAX, ' ', &memory))) {
        return NULL;
    }
    if (pid == 0 || ticket == 0 || token == 0) return NULL;
    head->pid = (int)pid;
    head->ticket = (uint32_t)ticket;
    head->token = (uint32_t)token;
    head->ahead_memory = no_memory ? -1 : (int)memory;
    return p;
}

const char *pd_parse_inherited_entry(const char *cursor, struct pd_inherited_entry *e) {
    const char *p = strchr(cursor, ' ');
    if (!p) return NULL;
    p++;
    memset(e, 0, sizeof *e);
    const char *next = strchr(p, ' ');
    if (!next) next = p + strlen(p);
    uint64_t v[8];
    const char *q;
    if (p[0] == 'd' && p[1] == ':') {
        if ((q = number(p + 2, UINT32_MAX, ' ', &v[1])) == next && v[1] != 0) {
            e->kind = 'd';
            e->handle = (uint32_t)v[1];
        }
        return next;
    }
    if (p[0] != 'f' || p[1] != ':') return next;
    static const uint64_t maxima[8] = { PD_INHERIT_MAX_FD, UINT32_MAX, INT32_MAX, UINT32_MAX, UINT64_MAX, UINT32_MAX, 1,
                                        PD_MAX_READ_AHEAD };
    q = p + 2;
    for (int i = 0; i < 8 && q; i++) q = number(q, maxima[i], i < 7 ? ':' : ' ', &v[i]);
    if (q != next || v[1] == 0 || (v[7] > 0 && v[5] == 0)) return next;
    e->kind = 'f';
    e->fd = (int)v[0];
    e->handle = (uint32_t)v[1];
    e->flags = (int)v[2];
    e->mode = (uint32_t)v[3];
    e->rdev = v[4];
    e->read_unit = (uint32_t)v[5];
    e->forked = (int)v[6];
    e->ahead = (uint32_t)v[7];
    return next;
}
