/*
 * PARADICE_INHERIT, what an image that execs tells the next about its forwarded descriptors (files.c):
 *   "PID TICKET TOKEN AHEAD_MEMORY" then " f:FD:HANDLE:FLAGS:MODE:RDEV:READ_UNIT:FORKED:AHEAD_BYTES" for each
 *   such descriptor and " d:HANDLE" for each file none of them names.
 * The parse alone, apart from what adopting the descriptors does, so that it can be fuzzed by itself.
 */
#ifndef PARADICE_INHERITANCE_H
#define PARADICE_INHERITANCE_H
#include <stddef.h>
#include <stdint.h>

#define PD_INHERIT_MAX_FD 65535   /* the preload's descriptor table has 65,536 slots */

struct pd_inherited_head {
    int pid;                  /* > 0 */
    uint32_t ticket, token;   /* both non-zero */
    int ahead_memory;         /* -1, or a descriptor number */
};

struct pd_inherited_entry {
    char kind;                /* 'f' (a descriptor), 'd' (a file no descriptor names), 0 (malformed) */
    int fd;                   /* 'f': 0...PD_INHERIT_MAX_FD */
    uint32_t handle;          /* non-zero when kind is not 0 */
    int flags;
    uint32_t mode;
    uint64_t rdev;
    uint32_t read_unit;
    int forked;               /* 0 or 1 */
    uint32_t ahead;           /* bytes read ahead, at most PD_MAX_READ_AHEAD; non-zero only with a read unit */
};

/* The head; returns where the entries begin, or NULL when the head is malformed. */
const char *pd_parse_inherited_head(const char *description, struct pd_inherited_head *head);
/* The entry after `cursor` (entries begin with a space); returns the cursor past it, or NULL at the end.
 * A malformed entry has kind 0 and is skipped up to the next space. */
const char *pd_parse_inherited_entry(const char *cursor, struct pd_inherited_entry *entry);

#endif
