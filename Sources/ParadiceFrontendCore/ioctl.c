/* ioctl through the backend's memory plan: gather what PD_NEED names, translate descriptors in place,
 * scatter what the reply returns. Nothing here knows a device class; the guest's memory and descriptors
 * are reached through the target's interfaces. */
#define _GNU_SOURCE
#include "paradice_frontend.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct region {
    uint64_t address;
    uint32_t length;
    uint8_t *bytes;    /* NULL: an out region, named (PD_REGION_OUT) but not sent */
};

struct restore {
    uint64_t address;
    uint32_t width;
    int64_t value;   /* the program's descriptor number */
    int64_t sent;    /* the handle (or -1) the backend got in its place */
};

/* Per command (struct pd_shape, one table per connection): the regions the backend asked for last time,
 * sent ahead next time. A part is either at an offset from the argument, or behind a pointer the argument
 * holds (via = the pointer's offset; a user-memory frame, a transfer buffer, an array of controls): then it
 * goes ahead only while that pointer is readable, and the backend still asks for whatever else it needs. */

/* Gathers a region (out: only names it), unless one already held covers it. */
static int add_region(const struct pd_memory *memory, struct region **regions, int *count, uint64_t address, uint32_t length, int out) {
    for (int i = 0; i < *count; i++)
        if ((*regions)[i].address == address && (*regions)[i].length >= length && (out || (*regions)[i].bytes)) return 0;
    uint8_t *bytes = NULL;
    if (!out) {
        bytes = malloc(length ? length : 1);
        if (length && memory->read(memory->context, address, bytes, length) != 0) { free(bytes); errno = EFAULT; return -1; }
    }
    *regions = realloc(*regions, sizeof **regions * (*count + 1));
    (*regions)[(*count)++] = (struct region){ address, length, bytes };
    return 0;
}

/* The pointer at `address` in the bytes gathered so far, or 0. */
static uint64_t gathered_pointer(const struct region *regions, int count, uint64_t address) {
    for (int i = 0; i < count; i++) {
        if (!regions[i].bytes || address < regions[i].address || address + 8 > regions[i].address + regions[i].length) continue;
        uint64_t value;
        memcpy(&value, regions[i].bytes + (address - regions[i].address), 8);
        return value;
    }
    return 0;
}

/* Where the argument (as gathered) holds `address` as a pointer, or -1. */
static int pointer_in_argument(const struct region *regions, int count, uint64_t argument, uint64_t address) {
    for (int i = 0; i < count; i++) {
        if (regions[i].address != argument || !regions[i].bytes) continue;
        for (uint32_t at = 0; at + 8 <= regions[i].length && at < 4096; at += 8) {
            uint64_t value;
            memcpy(&value, regions[i].bytes + at, 8);
            if (value == address) return (int)at;
        }
    }
    return -1;
}

static void free_regions(struct region *regions, int count) {
    for (int i = 0; i < count; i++) free(regions[i].bytes);
    free(regions);
}

static int64_t load(const uint8_t *p, uint32_t width) {
    if (width == 8) { int64_t v; memcpy(&v, p, 8); return v; }
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void store(uint8_t *p, uint32_t width, int64_t value) {
    if (width == 8) { memcpy(p, &value, 8); return; }
    int32_t v = (int32_t)value;
    memcpy(p, &v, 4);
}

/* Rewrites the program's descriptor number at `address` (in a gathered region) as its handle, or -1 when it
 * is not one of the backend's, noting the original for after the reply. 0: the slot lies in no gathered
 * region; 1: it is a handle now (or was one already, or holds no descriptor: a negative number stays). */
static int translate_slot(const struct pd_descriptors *descriptors, struct region *regions, int count, uint64_t address,
                          uint32_t width, struct restore **restores, int *restoreCount) {
    for (int k = 0; k < count; k++) {
        struct region *g = &regions[k];
        if (!g->bytes || address < g->address || address - g->address > g->length || g->length - (address - g->address) < width)
            continue;
        uint8_t *at = g->bytes + (address - g->address);
        int64_t local = load(at, width);
        /* Already a handle from an earlier round: the restore list knows the original. */
        for (int j = 0; j < *restoreCount; j++) if ((*restores)[j].address == address) return 1;
        if (local < 0) return 1;
        uint32_t handle;
        /* Not one of ours: the driver gets an invalid descriptor and answers as locally. */
        int64_t translated = descriptors->handle_for(descriptors->context, local, &handle) == 0 ? (int64_t)handle : -1;
        store(at, width, translated);
        *restores = realloc(*restores, sizeof **restores * (*restoreCount + 1));
        (*restores)[(*restoreCount)++] = (struct restore){ address, width, local, translated };
        return 1;
    }
    return 0;
}

/* The program's numbers back where translate_slot put handles: a guess the backend did not take. */
static void untranslate(struct region *regions, int count, struct restore *restores, int *restoreCount) {
    for (int j = 0; j < *restoreCount; j++)
        for (int k = 0; k < count; k++) {
            struct region *g = &regions[k];
            uint64_t address = restores[j].address;
            if (!g->bytes || address < g->address || address - g->address > g->length
                || g->length - (address - g->address) < restores[j].width) continue;
            store(g->bytes + (address - g->address), restores[j].width, restores[j].value);
            break;
        }
    *restoreCount = 0;
}

/* A reply that breaks the protocol: released unused, named in one line; the call fails with EPROTO. */
static int refuse_reply(struct pd_connection *c, struct pd_frame *reply, uint32_t command, const char *why) {
    pd_frame_release(c, reply);
    pd_conn_log(c, "paradice: ioctl 0x%x: %s", command, why);
    return EPROTO;
}

/* The bytes a checked ioctl reply writes at [address, address + width), or NULL when no region it
   writes holds all of them. */
static const uint8_t *written_bytes(const uint8_t *regions, uint32_t count, uint64_t address, uint32_t width) {
    const uint8_t *p = regions;
    for (uint32_t i = 0; i < count; i++) {
        struct pd_region r;
        const uint8_t *bytes;
        p = pd_region_entry(p, &r, &bytes);
        if (address >= r.address && address - r.address <= r.length && width <= r.length - (address - r.address))
            return bytes + (address - r.address);
    }
    return NULL;
}

/* What a reply to this call may write: the regions gathered for it, the memory the program lent the
 * file, the file's mirrors. */
struct bounds_storage {
    struct pd_bounds bounds;
    struct pd_span *spans;
    struct pd_mirror_span mirrors[PD_MAX_FILE_MIRRORS];
};

static void bounds_for(struct bounds_storage *s, const struct pd_target *t, const struct region *regions, int count) {
    s->spans = malloc(sizeof *s->spans * ((size_t)count + PD_LENT_SPANS));
    uint64_t bytes = 0;
    for (int i = 0; i < count; i++) {
        s->spans[i] = (struct pd_span){ regions[i].address, regions[i].length };
        if (regions[i].bytes) bytes += regions[i].length;   /* named out regions carry none */
    }
    size_t n = (size_t)count + (t->lent ? pd_lent_spans(t->lent, s->spans + count, PD_LENT_SPANS) : 0);
    s->bounds = (struct pd_bounds){ s->spans, n, s->mirrors,
                                    pd_mirror_spans(t->connection, t->handle, s->mirrors, PD_MAX_FILE_MIRRORS), bytes };
}

static void bounds_free(struct bounds_storage *s) { free(s->spans); }

static void lend(const struct pd_target *t, uint64_t address, uint64_t length) {
    if (t->lent) pd_lent_add(t->lent, address, length);
}

int64_t pd_file_ioctl(const struct pd_target *t, uint32_t command, uint64_t argument, int *broken) {
    struct pd_connection *c = t->connection;
    const struct pd_memory *memory = t->memory;
    const struct pd_descriptors *descriptors = t->descriptors;
    if (broken) *broken = 0;
    int protocol = 0;   /* the backend broke the protocol */
    struct region *regions = NULL;
    int count = 0;
    struct restore *restores = NULL;
    int restoreCount = 0;
    uint64_t sentArgument = argument;
    /* Mirror bytes the backend asked for, taken once (the shadow then holds them) and sent every round. */
    struct pd_buffer changes;
    pd_buffer_init(&changes, 0);
    uint32_t changeCount = 0;
    int pulled = 0;
    int translated = descriptors->numbers_are_handles;
    struct pd_shape asked = { command, 0 };
    /* Descriptors translated ahead (PD_IOCTL_SLOTS_AHEAD), as the shape of an earlier call says. */
    struct pd_slot ahead[PD_SHAPE_PARTS];
    struct pd_slot_count aheadCount = { 0, 0 };
    int guessed = 0;

    if (argument != 0) {
        pthread_mutex_lock(&c->shapes_lock);
        struct pd_shape known = c->shapes[command % PD_SHAPES];
        pthread_mutex_unlock(&c->shapes_lock);
        if (known.command == command) {
            for (int i = 0; i < known.parts; i++) {
                if (known.via[i] < 0) {
                    if (add_region(memory, &regions, &count, argument + known.offset[i], known.length[i], known.out[i]) != 0) break;
                    continue;
                }
                uint64_t target = gathered_pointer(regions, count, argument + (uint64_t)known.via[i]);
                if (target == 0) continue;
                lend(t, target, known.length[i]);
                (void)add_region(memory, &regions, &count, target, known.length[i], known.out[i]);   /* unreadable: the backend asks */
            }
            /* A sync point (a buffer handed to the device for display or output): every page of this file's mirrors that
               changed goes with the request, a superset of what the backend wants, so it need not ask. */
            if (known.mirrors) {
                changeCount += pd_mirror_file_changes(c, memory, &changes, t->handle);
                pulled = 1;
            }
            if ((known.slots > 0 || known.argument_fd) && !descriptors->numbers_are_handles
                && (c->capabilities & PD_CAP_SLOTS_AHEAD)) {
                for (int i = 0; i < known.slots; i++) {
                    uint64_t address = argument + known.slot_offset[i];
                    if (translate_slot(descriptors, regions, count, address, known.slot_width[i], &restores, &restoreCount))
                        ahead[aheadCount.count++] = (struct pd_slot){ address, known.slot_width[i], 1 };
                }
                if (known.argument_fd) {
                    uint32_t handle;
                    sentArgument = descriptors->handle_for(descriptors->context, (int64_t)argument, &handle) == 0 ? handle : (uint64_t)-1;
                    aheadCount.flags |= PD_NEED_ARGUMENT_FD;
                }
                guessed = 1;
            }
        }
    }

    int64_t result = -1;
    int error = EIO;
    for (int round = 0; round < PD_MAX_NEED_ROUNDS; round++) {
        struct pd_buffer b;
        size_t total = 0;
        for (int i = 0; i < count; i++) total += sizeof(struct pd_region) + (regions[i].bytes ? regions[i].length + 8 : 0);
        pd_buffer_init(&b, sizeof(struct pd_ioctl) + total);
        struct pd_ioctl request = { (uint32_t)command, (uint32_t)count, sentArgument };
        pd_buffer_append(&b, &request, sizeof request);
        for (int i = 0; i < count; i++) {
            struct pd_region r = { regions[i].address, regions[i].length, regions[i].bytes ? 0 : PD_REGION_OUT };
            pd_buffer_append(&b, &r, sizeof r);
            if (!regions[i].bytes) continue;
            pd_buffer_append(&b, regions[i].bytes, regions[i].length);
            pd_buffer_pad(&b);
        }
        if (pulled) {
            struct pd_mapping_count n = { changeCount, 0 };
            pd_buffer_append(&b, &n, sizeof n);
            pd_buffer_append(&b, changes.data + sizeof(struct pd_header), changes.length - sizeof(struct pd_header));
        }
        if (guessed) {
            pd_buffer_append(&b, &aheadCount, sizeof aheadCount);
            pd_buffer_append(&b, ahead, sizeof *ahead * aheadCount.count);
        }
        struct pd_frame reply = { .descriptor = -1 };
        uint16_t flags = (translated ? PD_IOCTL_TRANSLATED : 0) | (pulled ? PD_IOCTL_MAPPINGS : 0) | (guessed ? PD_IOCTL_SLOTS_AHEAD : 0);
        int r = pd_conn_call_interruptible(c, PD_IOCTL, flags, t->handle, &b, &reply, t->interruption);
        pd_buffer_free(&b);
        if (r != 0) { error = errno; break; }

        if (reply.header.op == PD_NEED) {
            if (round + 1 == PD_MAX_NEED_ROUNDS) {
                pd_frame_release(c, &reply);
                pd_conn_log(c, "paradice: ioctl 0x%x: the backend's PD_NEED rounds did not converge in %d rounds", command, PD_MAX_NEED_ROUNDS);
                error = EPROTO;
                protocol = 1;
                break;
            }
            struct pd_need_view view;
            const char *why = NULL;
            struct bounds_storage bs;
            bounds_for(&bs, t, regions, count);
            int bad = pd_parse_need(reply.body, reply.header.length, &bs.bounds, &view, &why);
            bounds_free(&bs);
            if (bad) {
                error = refuse_reply(c, &reply, command, why);
                protocol = 1;
                break;
            }
            struct pd_need need = view.need;
            int failed = 0;
            if (guessed) {
                /* The backend did not take the guess: it sees the program's numbers again, as without one. */
                untranslate(regions, count, restores, &restoreCount);
                sentArgument = argument;
                guessed = 0;
            }
            for (uint32_t i = 0; i < need.region_count && !failed; i++) {
                struct pd_region want;
                memcpy(&want, view.regions + (size_t)i * sizeof want, sizeof want);
                int out = (want.reserved & PD_REGION_OUT) != 0;
                if (want.address >= argument && want.address - argument < 65536) {
                    if (asked.parts < PD_SHAPE_PARTS) {
                        asked.offset[asked.parts] = want.address - argument;
                        asked.via[asked.parts] = -1;
                        asked.out[asked.parts] = out;
                        asked.length[asked.parts++] = want.length;
                    }
                } else {
                    /* Memory behind a pointer: the program hands it to the device, which may keep it
                       (a buffer in user memory) and fill it in a later call on this file. */
                    lend(t, want.address, want.length);
                    if (asked.parts < PD_SHAPE_PARTS) {
                        int via = pointer_in_argument(regions, count, argument, want.address);
                        if (via >= 0) {
                            asked.offset[asked.parts] = 0;
                            asked.via[asked.parts] = via;
                            asked.out[asked.parts] = out;
                            asked.length[asked.parts++] = want.length;
                        }
                    }
                }
                if (add_region(memory, &regions, &count, want.address, want.length, out) != 0) { failed = EFAULT; }
            }
            for (uint32_t i = 0; i < need.slot_count && !failed && !descriptors->numbers_are_handles; i++) {
                struct pd_slot slot;
                memcpy(&slot, view.slots + (size_t)i * sizeof slot, sizeof slot);
                if (translate_slot(descriptors, regions, count, slot.address, slot.width, &restores, &restoreCount)
                    && slot.address >= argument && slot.address - argument < 65536 && asked.slots < PD_SHAPE_PARTS
                    && (slot.width == 4 || slot.width == 8)) {
                    asked.slot_offset[asked.slots] = slot.address - argument;
                    asked.slot_width[asked.slots++] = slot.width;
                }
            }
            for (uint32_t i = 0; i < need.mapping_count && !failed; i++) {
                struct pd_mapping_range m;
                memcpy(&m, view.mappings + (size_t)i * sizeof m, sizeof m);
                /* Only the pages the program changed since the device last had them. */
                changeCount += pd_mirror_changes(c, memory, &changes, t->handle, m.mapping, m.offset, m.length);
                pulled = 1;
                asked.mirrors = 1;
            }
            if (!failed && (need.flags & PD_NEED_ARGUMENT_FD) && sentArgument == argument && !descriptors->numbers_are_handles) {
                uint32_t handle;
                sentArgument = descriptors->handle_for(descriptors->context, (int64_t)argument, &handle) == 0 ? handle : (uint64_t)-1;
                asked.argument_fd = 1;
            }
            pd_frame_release(c, &reply);
            if (failed) { error = failed; break; }
            /* Only a round that asked for descriptors has them translated; a round that asked only for
               memory leaves them as the program wrote them, and the backend must ask again. */
            if (need.slot_count > 0 || (need.flags & PD_NEED_ARGUMENT_FD)) translated = 1;
            continue;
        }

        /* The answer: scatter what came back (after a failure too: an error index, say), then the result. */
        const uint8_t *data;
        size_t length;
        int64_t value = pd_reply_result(&reply, &data, &length);
        int callError = value < 0 ? errno : 0;
        if (pd_reply_broken(&reply)) {
            error = refuse_reply(c, &reply, command, "the backend answered neither a result nor PD_NEED");
            protocol = 1;
            break;
        }
        if (length == 0 && value < 0) { pd_frame_release(c, &reply); error = callError; break; }
        struct pd_done_view view;
        const char *why = NULL;
        struct bounds_storage bs;
        bounds_for(&bs, t, regions, count);
        int bad = pd_parse_done(data, length, &bs.bounds, &view, &why);
        bounds_free(&bs);
        if (bad) {
            error = refuse_reply(c, &reply, command, why);
            protocol = 1;
            break;
        }
        struct pd_ioctl_done done = view.done;
        const uint8_t *p = view.regions;
        int faulted = 0;
        for (uint32_t i = 0; i < done.region_count; i++) {
            struct pd_region back;
            const uint8_t *bytes;
            p = pd_region_entry(p, &back, &bytes);
            if (back.length && memory->write(memory->context, back.address, bytes, back.length) != 0) faulted = 1;
        }
        for (int j = 0; j < restoreCount; j++) {
            /* The program sees its own descriptor number where the driver left the one it was given; a
               value the driver wrote instead (a descriptor field a driver clears) stays. */
            uint8_t bytes[8];
            if (memory->read(memory->context, restores[j].address, bytes, restores[j].width) == 0
                && load(bytes, restores[j].width) != restores[j].sent)
                continue;
            store(bytes, restores[j].width, restores[j].value);
            (void)memory->write(memory->context, restores[j].address, bytes, restores[j].width);
        }
        p = view.slots;
        for (uint32_t i = 0; i < done.slot_count; i++) {
            struct pd_slot slot;
            memcpy(&slot, p, sizeof slot);
            p += sizeof slot;
            if (descriptors->numbers_are_handles) continue;   /* the handle is the descriptor already */
            /* The handle is taken from the reply, never read back from the program's memory, where
               another thread (or another process, for a daemon) may have changed it since. */
            const uint8_t *handle = written_bytes(view.regions, done.region_count, slot.address, slot.width);
            if (!handle) {
                pd_conn_log(c, "paradice: ioctl 0x%x: a new handle in no region the reply writes", command);
                continue;
            }
            uint8_t bytes[8];
            int64_t fd = descriptors->adopt(descriptors->context, (uint32_t)load(handle, slot.width));
            store(bytes, slot.width, fd);
            if (memory->write(memory->context, slot.address, bytes, slot.width) != 0) faulted = 1;
        }
        pd_mirror_receive(c, memory, t->handle, view.mappings, done.mapping_count);
        int result_is_handle = value >= 0 && (done.flags & PD_DONE_RESULT_HANDLE);
        pd_frame_release(c, &reply);
        if (faulted && value >= 0) {
            /* As a kernel whose copy to user memory fails after it made a descriptor: the call fails and
               leaves none, so the backend's new file is closed rather than adopted. */
            if (result_is_handle && value <= UINT32_MAX) {
                int ignored;
                (void)pd_file_simple(c, (uint32_t)value, PD_CLOSE, NULL, 0, NULL, 0, &ignored);
            }
            error = EFAULT;
            break;
        }
        if (result_is_handle && !descriptors->numbers_are_handles)
            value = descriptors->adopt(descriptors->context, (uint32_t)value);
        result = value;
        error = callError;
        if (asked.parts > 0 || asked.mirrors || asked.slots > 0 || asked.argument_fd) {
            pthread_mutex_lock(&c->shapes_lock);
            c->shapes[command % PD_SHAPES] = asked;
            pthread_mutex_unlock(&c->shapes_lock);
        }
        break;
    }
    free_regions(regions, count);
    free(restores);
    pd_buffer_free(&changes);
    pd_interruption_end(t->interruption);
    if (broken) *broken = protocol;
    if (result < 0) errno = error;
    return result;
}
