/*
 * A random API-sequence fuzzer with a shadow model of every object.
 *
 * Valid and invalid calls are mixed at random: malloc (valid sizes and flags, and
 * not), free (live, mapped, freed, foreign, invented handles), writes and reads of
 * every length up to the object's slot and past it, mappings in every mode (nested,
 * ended out of order, left open for a thread's exit), reads begun and ended later
 * (and ended wrongly), compaction, migration, NULL pools, and the destruction of the
 * pool with mappings and reads open. Accesses meet the mappings and reads held on
 * this thread and on a leaving one: readers share an object, a writable mapping
 * holds it alone, and every refusal (EBUSY) follows from the holds the model knows
 * of. The model knows every object's bytes, so every read and every mapping is
 * compared with what was stored; it predicts every call's errno and the exact number
 * of misuse events, checked against zs_pool_info throughout, with zs_pool_check.
 *
 * Sessions: each layout, single-threaded, and with a second thread doing only misuse
 * (and its own objects) while the first works; then each layout with a pool of objects
 * up to 20000 bytes (max_object_size), with the misusing thread. Run under ASan and UBSan by the
 * Makefile: a bounded run in `make test`, `make fuzz SECONDS=N` for long runs.
 *
 *   fuzz_api [--seed S] [--seconds N | --ops N] [--session K]
 *
 * The seed is printed first; a failure prints the session and the operation at which
 * it happened, and `--seed S --session K --ops N` replays it (the single-threaded
 * sessions exactly; the two-thread ones with the same operations, though perhaps not
 * the same interleaving).
 */
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* ---- the model ------------------------------------------------------------------ */

enum { MAXLIVE = 300, RING = 64, MAXOPEN = 24 };

/* The largest object of the sessions with objects above a page, and the pool's limit in
 * the session running (ZS_MAX_ALLOC_SIZE in the others). */
#define BIG 20000
static size_t LIMIT = ZS_MAX_ALLOC_SIZE;
/* Bytes of the model's buffers: an object's usable bytes, up to its kernel class's place
 * (20480 bytes for 20000). */
#define ROOM 24576

struct obj {
    unsigned long h;
    size_t size;
    size_t usable;
    size_t known;              /* bytes [0, known) of the object are data[0, known) */
    unsigned char data[ROOM];
    int ro_maps;               /* open read-only mappings by the owner */
    int rw_map;                /* an open RW or WO mapping by the owner */
    int reads;                 /* open reads by the owner */
};

enum { M_RW = 0, M_RO = 1, M_WO = 2 };

struct open_map {
    int obj;                   /* index in the owner's objects, or -1: stale (pool gone) */
    unsigned long h;
    unsigned char *ptr;
    int mode;
};

struct open_read {
    int obj;
    unsigned long h;
    size_t len;
    void *ptr;
};

/* One thread's view: its objects, what it has open, what it freed, its misuse. */
struct actor {
    const char *name;
    uint64_t rng;
    struct obj *objs; /* MAXLIVE */
    int n;
    struct open_map maps[MAXOPEN];
    int nmaps;
    struct open_read reads[MAXOPEN];
    int nreads;
    unsigned long freed[RING];
    int nfreed;
    unsigned long misuse;   /* predicted misuse events counted in the current pool */
    unsigned long ops;
    unsigned long refused;  /* accesses refused (EBUSY, not misuse) for a hold */
    bool misuser;           /* the second thread: misuse and its own objects only */
    unsigned char local[MAXOPEN][ROOM];
};

/* The session. */
static struct zs_pool *POOL;
static unsigned long REFUSED; /* accesses refused for a hold in the last session */
static enum zs_layout LAYOUT;
static unsigned long DEAD[RING]; /* handles of destroyed pools */
static int NDEAD;
static atomic_int FAILED;
static atomic_bool RELEASED; /* zs_release_arena was called on the pool */
static unsigned long FAIL_OP;
static const char *FAIL_ACTOR;

/* FUZZ_TRACE=1 in the environment: every call is printed (for replays). */
static int TRACE;

#define TRACE_CALL(a, ...)                                                                                     \
    do {                                                                                                       \
        if (TRACE) {                                                                                           \
            fprintf(stderr, "%s %lu: ", (a)->name, (a)->ops);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                                      \
            fprintf(stderr, "\n");                                                                             \
        }                                                                                                      \
    } while (0)

static unsigned long rnd(struct actor *a, unsigned long n)
{
    return rand_below(&a->rng, n);
}

#define EXPECT(a, cond, ...)                                                                                   \
    do {                                                                                                       \
        if (!CHECK(cond)) {                                                                                    \
            fprintf(stderr, "  %s, op %lu: ", (a)->name, (a)->ops);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                      \
            fprintf(stderr, "\n");                                                                             \
            if (!atomic_exchange(&FAILED, 1))                                                                  \
                FAIL_OP = (a)->ops, FAIL_ACTOR = (a)->name;                                                    \
        }                                                                                                      \
    } while (0)

static size_t usable_of(size_t size)
{
    if (LAYOUT == ZS_LAYOUT_DENSE)
        return size;
    struct zs_class_info ci;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    zs_class_info(POOL, zs_lookup_class_index(POOL, (unsigned int)size), &ci);
    /* The kernel's header, in every class of more than one object a zspage. */
    return ci.class_size - (ci.objs_per_zspage == 1 ? 0 : 8);
}

static void random_bytes(struct actor *a, unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0)
            v = mix64(&a->rng);
        p[i] = (unsigned char)(v >> (8 * (i % 8)));
    }
}

/* The actors of the session, and whether there are two. */
static struct actor *ACTORS[2];
static int THREADS;

/* Handles the worker allocated lately, for the misuser to end (never to pin): ending
 * another thread's mapping is an unmatched end, whatever the handle's state. */
static atomic_ulong SHARED[16];

/* The library's rule for one object: readers (read-only mappings, reads) share it, a
 * writable mapping holds it alone. Whether a reader is refused (EBUSY) by the holds
 * the model knows of, and whether a writer is. */
static bool refuses_reader(const struct obj *o)
{
    return o->rw_map;
}

static bool refuses_writer(const struct obj *o)
{
    return o->rw_map || o->ro_maps || o->reads;
}

/* Whether h is one of this actor's live handles. */
static bool is_live(const struct actor *a, unsigned long h)
{
    for (int i = 0; i < a->n; i++)
        if (a->objs[i].h == h)
            return true;
    return false;
}

/* ---- calls with their predictions ------------------------------------------------ */

/* A call that must fail with `err` and count `misuse` events. */
static void expect_errno(struct actor *a, int err, const char *what)
{
    int e = errno;
    EXPECT(a, e == err, "%s: errno %d, expected %d", what, e, err);
}

static void do_malloc(struct actor *a)
{
    if (a->n == MAXLIVE)
        return;
    size_t size;
    switch (rnd(a, 8)) {
    case 0:
        size = 1 + rnd(a, 16);
        break;
    case 1:
        size = LIMIT - rnd(a, 8);
        break;
    case 2:
        size = 1 + rnd(a, LIMIT);
        break;
    default:
        size = 1 + rnd(a, 3000);
    }
    unsigned int flags = rnd(a, 8) == 0 ? ZS_ALLOC_NOGROW : 0;
    errno = 0;
    unsigned long h = zs_malloc(POOL, size, flags);
    TRACE_CALL(a, "malloc(%zu, %u) = %#lx", size, flags, h);
    if (ZS_IS_ERR(h)) {
        EXPECT(a, (flags || RELEASED) && ZS_ERR(h) == ENOMEM && errno == ENOMEM, "malloc(%zu, %u) failed: %d",
               size, flags, ZS_ERR(h));
        return;
    }
    EXPECT(a, errno == 0, "malloc set errno %d", errno);
    EXPECT(a, !is_live(a, h), "malloc returned a live handle %#lx", h);
    if (!a->misuser)
        atomic_store(&SHARED[rnd(a, 16)], h);
    struct obj *o = &a->objs[a->n++];
    o->h = h, o->size = size, o->usable = usable_of(size);
    o->ro_maps = o->rw_map = o->reads = 0;
    random_bytes(a, o->data, size);
    zs_obj_write(POOL, h, o->data, size);
    o->known = size;
}

static void do_bad_malloc(struct actor *a)
{
    const size_t sizes[] = {0, LIMIT + 1, 65537, (size_t)1 << 32, SIZE_MAX};
    size_t size = sizes[rnd(a, 5)];
    unsigned int flags = rnd(a, 2) ? 0 : (unsigned int)(2u << rnd(a, 31));
    if (size > 0 && size <= LIMIT)
        return;
    int want = size == 0 || flags ? EINVAL : ENOSPC;
    if (size > LIMIT)
        want = ENOSPC; /* the size is checked before the flags */
    errno = 0;
    unsigned long h = zs_malloc(POOL, size, flags);
    EXPECT(a, ZS_IS_ERR(h) && ZS_ERR(h) == want, "malloc(%zu, %#x) gave %#lx", size, flags, h);
    expect_errno(a, want, "bad malloc");
}

static void forget(struct actor *a, int i)
{
    if (a->nfreed < RING)
        a->freed[a->nfreed++] = a->objs[i].h;
    else
        a->freed[rnd(a, RING)] = a->objs[i].h;
    a->objs[i] = a->objs[--a->n];
    /* Open entries name objects by index: the moved one's entries follow it. */
    for (int k = 0; k < a->nmaps; k++)
        if (a->maps[k].obj == a->n)
            a->maps[k].obj = i;
    for (int k = 0; k < a->nreads; k++)
        if (a->reads[k].obj == a->n)
            a->reads[k].obj = i;
}

static void do_free(struct actor *a)
{
    if (a->n == 0)
        return;
    int i = (int)rnd(a, (unsigned long)a->n);
    struct obj *o = &a->objs[i];
    bool pinned = o->ro_maps || o->rw_map || o->reads;
    TRACE_CALL(a, "free(%#lx), pinned %d/%d/%d", o->h, o->ro_maps, o->rw_map, o->reads);
    errno = 0;
    zs_free(POOL, o->h);
    if (pinned) {
        expect_errno(a, EBUSY, "free of a pinned object");
        a->misuse++;
        return;
    }
    expect_errno(a, 0, "free");
    forget(a, i);
}

/* A value this actor may use as a bad handle: never a live one. */
static unsigned long bad_handle(struct actor *a)
{
    for (int tries = 0; tries < 8; tries++) {
        unsigned long h;
        switch (rnd(a, 8)) {
        case 0:
            h = a->nfreed ? a->freed[rnd(a, (unsigned long)a->nfreed)] : 1;
            break;
        case 1:
            h = NDEAD ? DEAD[rnd(a, (unsigned long)NDEAD)] : 2;
            break;
        case 2:
            /* One bit flipped. With two actors, only in the tag: a flip elsewhere may
             * give the other actor's live handle, which this one cannot know. */
            h = a->n ? a->objs[rnd(a, (unsigned long)a->n)].h ^ (1ul << (THREADS == 2 ? 48 + rnd(a, 16) : rnd(a, 64)))
                     : 3;
            break;
        case 3:
            h = (unsigned long)mix64(&a->rng);
            break;
        case 4: {
            static const unsigned long small[] = {1, 2, 0xFFFF, 1ul << 48, 1ul << 63, (unsigned long)-4096};
            h = small[rnd(a, 6)];
            break;
        }
        default:
            h = a->nfreed ? a->freed[rnd(a, (unsigned long)a->nfreed)] : (unsigned long)mix64(&a->rng);
        }
        if (h != 0 && !ZS_IS_ERR(h) && !is_live(a, h))
            return h;
    }
    return 1;
}

/* One of the calls that take a handle, on `pool` (NULL or the session's), with a
 * handle that `pool` must refuse: every one of them fails with EINVAL and touches
 * nothing. */
static void call_refused(struct actor *a, struct zs_pool *pool, unsigned long h)
{
    unsigned char buf[64] = {0};
    memset(a->local[0], 0x5A, 64);
    void *p = NULL;
    errno = 0;
    switch (rnd(a, 7)) {
    case 0:
        zs_free(pool, h);
        break;
    case 1:
        p = zs_obj_read_begin(pool, h, rnd(a, 65), a->local[0]);
        EXPECT(a, p == NULL && a->local[0][0] == 0x5A, "read_begin of a bad handle %#lx", h);
        break;
    case 2:
        zs_obj_read_end(pool, h, rnd(a, 65), a->local[0]);
        break;
    case 3:
        zs_obj_write(pool, h, buf, rnd(a, 65));
        break;
    case 4:
        p = zs_map_object(pool, h, (enum zs_mapmode)rnd(a, 3));
        EXPECT(a, p == NULL, "map of a bad handle %#lx", h);
        break;
    case 5:
        zs_unmap_object(pool, h);
        break;
    default:
        /* The worker's handles, live or not, may only be ended (never pinned) by the
         * misuser: ending another thread's mapping matches nothing. */
        if (a->misuser) {
            unsigned long theirs = atomic_load(&SHARED[rnd(a, 16)]);
            h = theirs ? theirs : h;
        }
        if (rnd(a, 2))
            zs_obj_read_end(pool, h, rnd(a, 100), a->local[0]);
        else
            zs_unmap_object(pool, h);
    }
    expect_errno(a, EINVAL, pool ? "a call with a bad handle" : "a call on a NULL pool");
}

static void do_bad_handle(struct actor *a)
{
    unsigned long h = bad_handle(a);
    TRACE_CALL(a, "a call with the bad handle %#lx", h);
    call_refused(a, POOL, h);
    a->misuse++;
}

/* A NULL pool is refused by every call but destroy, even with a good handle, and
 * counted nowhere. */
static void do_null_pool(struct actor *a)
{
    unsigned long h = a->n ? a->objs[rnd(a, (unsigned long)a->n)].h : 1;
    switch (rnd(a, 3)) {
    case 0:
        errno = 0;
        EXPECT(a, ZS_IS_ERR(zs_malloc(NULL, 10, 0)), "malloc on NULL");
        expect_errno(a, EINVAL, "malloc on a NULL pool");
        break;
    case 1:
        errno = 0;
        EXPECT(a, zs_pool_check(NULL) == -EINVAL, "check on NULL");
        expect_errno(a, EINVAL, "check on a NULL pool");
        break;
    default:
        call_refused(a, NULL, h);
    }
}

/* Bytes [0, n) of the object as the model knows them: n is at most `known`. */
static bool matches(const struct obj *o, const void *p, size_t n)
{
    return memcmp(o->data, p, n) == 0;
}

static void do_write(struct actor *a)
{
    if (a->n == 0)
        return;
    int i = (int)rnd(a, (unsigned long)a->n);
    struct obj *o = &a->objs[i];
    unsigned char *buf = a->local[MAXOPEN - 1];
    int kind = (int)rnd(a, 10);
    errno = 0;
    if (kind == 0) {
        size_t len = rnd(a, 2) ? o->usable + 1 + rnd(a, 100) : SIZE_MAX - rnd(a, 3);
        zs_obj_write(POOL, o->h, buf, len);
        if (refuses_reader(o)) {
            /* Mapped writable: refused before its slot, and so the length, is known. */
            expect_errno(a, EBUSY, "write past the slot of an object mapped writable");
            a->refused++;
            return;
        }
        expect_errno(a, EINVAL, "write past the slot");
        a->misuse++;
        return;
    }
    if (kind == 1) {
        zs_obj_write(POOL, o->h, NULL, 1 + rnd(a, o->usable));
        expect_errno(a, EINVAL, "write from NULL");
        a->misuse++;
        return;
    }
    /* Only from the start, and no further than what is known (or the slot's end). */
    size_t len = rnd(a, 4) == 0 ? o->usable : rnd(a, o->known + 1);
    random_bytes(a, buf, len);
    zs_obj_write(POOL, o->h, buf, len);
    TRACE_CALL(a, "write(%#lx, %zu), held %d/%d/%d", o->h, len, o->ro_maps, o->rw_map, o->reads);
    if (refuses_writer(o)) {
        /* Held by this thread: refused at once, not misuse, nothing written. */
        expect_errno(a, EBUSY, "write of an object mapped or being read");
        a->refused++;
        return;
    }
    expect_errno(a, 0, "write");
    memcpy(o->data, buf, len);
    if (len > o->known)
        o->known = len;
}

static void do_read(struct actor *a)
{
    if (a->n == 0)
        return;
    int i = (int)rnd(a, (unsigned long)a->n);
    struct obj *o = &a->objs[i];
    unsigned char *local = a->local[MAXOPEN - 1];
    int kind = (int)rnd(a, 8);
    errno = 0;
    if (kind == 0) {
        size_t len = rnd(a, 2) ? o->usable + 1 + rnd(a, 5000) : SIZE_MAX;
        memset(local, 0x77, 16);
        void *p = zs_obj_read_begin(POOL, o->h, len, local);
        EXPECT(a, p == NULL && local[0] == 0x77, "read past the slot returned %p", p);
        if (refuses_reader(o)) {
            expect_errno(a, EBUSY, "read past the slot of an object mapped writable");
            a->refused++;
            return;
        }
        expect_errno(a, EINVAL, "read past the slot");
        a->misuse++;
        return;
    }
    size_t len = rnd(a, o->usable + 1);
    memset(local, 0x77, 16);
    void *p = zs_obj_read_begin(POOL, o->h, len, kind == 1 ? NULL : local);
    TRACE_CALL(a, "read_begin(%#lx, %zu, %s) = %p", o->h, len, kind == 1 ? "NULL" : "local", p);
    if (refuses_reader(o)) {
        /* Mapped writable by this thread: refused at once, not misuse, nothing copied. */
        EXPECT(a, p == NULL && local[0] == 0x77, "read of an object mapped writable returned %p", p);
        expect_errno(a, EBUSY, "read of an object mapped writable");
        a->refused++;
        if (p)
            zs_obj_read_end(POOL, o->h, len, p);
        return;
    }
    if (p == NULL) {
        /* Only a read that must be copied may be refused, and only without a buffer. */
        EXPECT(a, kind == 1, "read_begin(%zu) failed: errno %d", len, errno);
        expect_errno(a, EINVAL, "read_begin without a local copy");
        a->misuse++;
        return;
    }
    size_t n = len < o->known ? len : o->known;
    EXPECT(a, matches(o, p, n), "read of %zu bytes differs from what was stored", n);
    if (a->nreads < MAXOPEN && rnd(a, 3) == 0) {
        /* Kept open, to be ended later, out of order. A copied read's pointer is the
         * shared buffer: ended with it, it matches only a read of its handle and
         * length, and any such read is as good. */
        a->reads[a->nreads++] = (struct open_read){i, o->h, len, p};
        o->reads++;
        return;
    }
    zs_obj_read_end(POOL, o->h, len, p);
    expect_errno(a, 0, "read_end");
}

static void do_read_end(struct actor *a)
{
    if (a->nreads == 0)
        return;
    int k = (int)rnd(a, (unsigned long)a->nreads);
    struct open_read r = a->reads[k];
    TRACE_CALL(a, "read_end(%#lx, %zu, %p)", r.h, r.len, r.ptr);
    errno = 0;
    if (rnd(a, 4) == 0) {
        /* Ended wrongly: another length, another pointer, or no pointer; unless that
         * names another read that is open. */
        size_t len = r.len;
        void *ptr = r.ptr;
        switch (rnd(a, 3)) {
        case 0:
            len++;
            break;
        case 1:
            ptr = (unsigned char *)ptr + 1;
            break;
        default:
            len += !len;
            ptr = NULL;
        }
        for (int j = 0; j < a->nreads; j++)
            if (a->reads[j].h == r.h && a->reads[j].len == len && a->reads[j].ptr == ptr)
                return;
        zs_obj_read_end(POOL, r.h, len, ptr);
        expect_errno(a, EINVAL, "read_end not as begun");
        a->misuse++;
        return;
    }
    zs_obj_read_end(POOL, r.h, r.len, r.ptr);
    if (r.obj < 0) {
        expect_errno(a, EINVAL, "read_end of a destroyed pool's read");
        a->misuse++;
    } else {
        expect_errno(a, 0, "read_end");
        a->objs[r.obj].reads--;
    }
    a->reads[k] = a->reads[--a->nreads];
}

static void do_map(struct actor *a)
{
    if (a->n == 0 || a->nmaps == MAXOPEN)
        return;
    int i = (int)rnd(a, (unsigned long)a->n);
    struct obj *o = &a->objs[i];
    int mode = (int)rnd(a, 3);
    if (rnd(a, 16) == 0) {
        errno = 0;
        void *p = zs_map_object(POOL, o->h, (enum zs_mapmode)(3 + rnd(a, 100)));
        EXPECT(a, p == NULL, "map with a bad mode");
        expect_errno(a, EINVAL, "map with a bad mode"); /* a bad argument: not counted */
        return;
    }
    errno = 0;
    unsigned char *p = zs_map_object(POOL, o->h, (enum zs_mapmode)mode);
    TRACE_CALL(a, "map(%#lx, %d) = %p, held %d/%d/%d", o->h, mode, (void *)p, o->ro_maps, o->rw_map, o->reads);
    if (mode == M_RO ? refuses_reader(o) : refuses_writer(o)) {
        /* Held by this thread: refused at once, not misuse. */
        EXPECT(a, p == NULL, "map(%d) of a held object returned %p", mode, (void *)p);
        expect_errno(a, EBUSY, "map of a held object");
        a->refused++;
        if (p)
            zs_unmap_object(POOL, o->h);
        return;
    }
    EXPECT(a, p != NULL, "map failed: errno %d", errno);
    if (!p)
        return;
    expect_errno(a, 0, "map");
    if (mode != M_WO)
        EXPECT(a, matches(o, p, o->known), "mapping differs from what was stored");
    if (mode == M_RO) {
        o->ro_maps++;
    } else {
        /* Change what will be stored: from the start up to what is known (RW), or the
         * whole slot (WO, whose bytes are undefined until written). */
        size_t len = mode == M_WO ? o->usable : rnd(a, o->known + 1);
        random_bytes(a, p, len);
        o->rw_map = 1;
    }
    a->maps[a->nmaps++] = (struct open_map){i, o->h, p, mode};
}

static void do_unmap(struct actor *a)
{
    if (a->nmaps == 0 || rnd(a, 8) == 0) {
        /* Nothing of that handle mapped here. */
        struct obj *o = a->n ? &a->objs[rnd(a, (unsigned long)a->n)] : NULL;
        if (!o || o->ro_maps || o->rw_map)
            return;
        errno = 0;
        zs_unmap_object(POOL, o->h);
        expect_errno(a, EINVAL, "unmatched unmap");
        a->misuse++;
        return;
    }
    int k = (int)rnd(a, (unsigned long)a->nmaps);
    /* zs_unmap_object ends the most recent mapping of the handle: find it. */
    for (int j = a->nmaps - 1; j >= 0; j--)
        if (a->maps[j].h == a->maps[k].h && a->maps[j].obj == a->maps[k].obj) {
            k = j;
            break;
        }
    struct open_map m = a->maps[k];
    TRACE_CALL(a, "unmap(%#lx) of %p", m.h, (void *)m.ptr);
    if (m.obj >= 0 && m.mode != M_RO) {
        struct obj *o = &a->objs[m.obj];
        memcpy(o->data, m.ptr, o->usable);
        o->known = m.mode == M_WO ? o->usable : o->known;
    }
    errno = 0;
    zs_unmap_object(POOL, m.h);
    if (m.obj < 0) {
        expect_errno(a, EINVAL, "unmap of a destroyed pool's mapping");
        a->misuse++;
    } else {
        expect_errno(a, 0, "unmap");
        struct obj *o = &a->objs[m.obj];
        if (m.mode == M_RO)
            o->ro_maps--;
        else
            o->rw_map = 0;
    }
    memmove(&a->maps[k], &a->maps[k + 1], (size_t)(a->nmaps - k - 1) * sizeof a->maps[0]);
    a->nmaps--;
}

/* A thread that maps and reads some objects and exits without ending anything: the
 * library ends them at its exit, each one a misuse, storing RW and WO mappings. Its
 * objects may be held by the working thread, and one may come twice: each of its
 * calls is predicted to succeed or to be refused (EBUSY) by the holds before it. */
enum { LEAVER_READ = 3 };

struct leaver {
    struct actor *a;
    int obj[3];
    int mode[3]; /* M_RW, M_RO, M_WO or LEAVER_READ */
    bool want[3];
    bool got[3];
    int err[3];
    int n;
    unsigned char fill[3][ROOM];
};

static void *leaver_main(void *arg)
{
    struct leaver *l = arg;
    static _Thread_local unsigned char local[ROOM];
    for (int k = 0; k < l->n; k++) {
        struct obj *o = &l->a->objs[l->obj[k]];
        errno = 0;
        if (l->mode[k] == LEAVER_READ) {
            l->got[k] = zs_obj_read_begin(POOL, o->h, o->known, local) != NULL;
        } else {
            unsigned char *p = zs_map_object(POOL, o->h, (enum zs_mapmode)l->mode[k]);
            l->got[k] = p != NULL;
            if (p && l->mode[k] != M_RO)
                memcpy(p, l->fill[k], o->usable);
        }
        l->err[k] = errno;
    }
    return NULL;
}

static void do_thread_exit(struct actor *a)
{
    struct leaver *l = calloc(1, sizeof *l);
    if (!l)
        return;
    l->a = a;
    for (int k = 0; k < 3 && a->n; k++) {
        /* Now and then the object of the call before. */
        int i = k && rnd(a, 3) == 0 ? l->obj[k - 1] : (int)rnd(a, (unsigned long)a->n);
        const struct obj *o = &a->objs[i];
        /* The holds it meets: the working thread's, and the leaver's own before it. */
        bool writer = refuses_reader(o), held = refuses_writer(o);
        for (int j = 0; j < l->n; j++)
            if (l->obj[j] == i && l->want[j]) {
                writer |= l->mode[j] == M_RW || l->mode[j] == M_WO;
                held = true;
            }
        int mode = (int)rnd(a, 4);
        l->obj[l->n] = i;
        l->mode[l->n] = mode;
        l->want[l->n] = mode == M_RO || mode == LEAVER_READ ? !writer : !held;
        random_bytes(a, l->fill[l->n], o->usable);
        l->n++;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, leaver_main, l) != 0) {
        free(l);
        return;
    }
    pthread_join(th, NULL);
    for (int k = 0; k < l->n; k++) {
        struct obj *o = &a->objs[l->obj[k]];
        TRACE_CALL(a, "the leaving thread's %s of %#lx: %s (errno %d)", l->mode[k] == LEAVER_READ ? "read" : "map",
                   o->h, l->got[k] ? "held" : "refused", l->err[k]);
        EXPECT(a, l->got[k] == l->want[k], "the leaving thread's %s %d of %#lx (held %d/%d/%d): %s, errno %d",
               l->mode[k] == LEAVER_READ ? "read" : "map in mode", l->mode[k], o->h, o->ro_maps, o->rw_map, o->reads,
               l->got[k] ? "held" : "refused", l->err[k]);
        if (!l->got[k]) {
            EXPECT(a, l->err[k] == EBUSY, "the leaving thread's call refused with errno %d", l->err[k]);
            a->refused++;
            continue;
        }
        /* Ended at the thread's exit: a misuse, and a writable mapping stored. */
        a->misuse++;
        if (l->mode[k] == M_RW || l->mode[k] == M_WO) {
            memcpy(o->data, l->fill[k], o->usable);
            o->known = o->usable;
        }
    }
    /* Ended: the objects can be read as stored (unless this thread maps them writable). */
    for (int k = 0; k < l->n; k++) {
        struct obj *o = &a->objs[l->obj[k]];
        if (o->rw_map)
            continue;
        unsigned char *local = a->local[MAXOPEN - 1];
        void *p = zs_obj_read_begin(POOL, o->h, o->known, local);
        EXPECT(a, p && matches(o, p, o->known), "an object left mapped at a thread's exit reads wrong");
        if (p)
            zs_obj_read_end(POOL, o->h, o->known, p);
    }
    free(l);
}

static void do_maintenance(struct actor *a)
{
    switch (rnd(a, 4)) {
    case 0:
        zs_compact(POOL);
        break;
    case 1:
        EXPECT(a, zs_defragment(POOL) >= 0, "defragment");
        break;
    case 2:
        EXPECT(a, zs_make_adjacent(POOL) >= 0, "make_adjacent");
        break;
    default:
        /* The arena maps the range again to grow, but never over another mapping
         * made there meanwhile (another thread's stack, a malloc arena): from here
         * on, a malloc may fail with ENOMEM. */
        EXPECT(a, zs_release_arena(POOL) >= 0, "release_arena");
        RELEASED = true;
        TRACE_CALL(a, "release_arena");
    }
}

static struct zs_pool *make_pool(void)
{
    struct zs_pool_config cfg = test_config(LAYOUT, 0);
    cfg.max_object_size = (unsigned int)LIMIT;
    struct zs_pool *pool = zs_create_pool_with("fuzz", &cfg);
    if (!pool) {
        fprintf(stderr, "zs_create_pool_with(fuzz): %s\n", strerror(errno));
        exit(2);
    }
    return pool;
}

/* The pool destroyed with whatever is open, and a new one made. Open entries go stale:
 * ending them later is an unmatched end in the new pool. */
static void do_destroy(struct actor *a)
{
    for (int i = 0; i < a->n; i++) {
        DEAD[NDEAD < RING ? NDEAD++ : (int)rnd(a, RING)] = a->objs[i].h;
    }
    a->n = 0;
    a->nfreed = 0;
    for (int k = 0; k < a->nmaps; k++)
        a->maps[k].obj = -1;
    for (int k = 0; k < a->nreads; k++)
        a->reads[k].obj = -1;
    zs_destroy_pool(POOL);
    POOL = make_pool();
    RELEASED = false;
    a->misuse = 0;
}

/* The pool agrees with the model (only while no other thread works on it). */
static void verify(struct actor *a, unsigned long misuse)
{
    struct zs_pool_info info = pool_info(POOL);
    unsigned long live = 0, bytes = 0;
    for (int k = 0; k < 2; k++) {
        struct actor *x = ACTORS[k];
        if (!x)
            continue;
        live += (unsigned long)x->n;
        for (int i = 0; i < x->n; i++)
            bytes += x->objs[i].size;
    }
    EXPECT(a, info.live_objects == live, "live objects %lu, model %lu", info.live_objects, live);
    EXPECT(a, info.requested_bytes == bytes, "requested bytes %lu, model %lu", info.requested_bytes, bytes);
    EXPECT(a, info.misuse_events == misuse, "misuse events %lu, predicted %lu", info.misuse_events, misuse);
    EXPECT(a, zs_pool_check(POOL) == 0, "zs_pool_check");
}

static void do_destroy_alone(struct actor *a)
{
    if (THREADS == 1)
        do_destroy(a);
}

static void do_verify_alone(struct actor *a)
{
    if (THREADS == 1)
        verify(a, a->misuse);
}

/* What an actor does, with the weight of each: the operation of the n-th weight unit. */
struct op {
    unsigned int weight;
    void (*run)(struct actor *);
};

/* The working actor: everything, valid and not; alone, it also destroys the pool and
 * checks the model against it. */
static const struct op WORKER_OPS[] = {
    {170, do_malloc},      {130, do_free},        {120, do_write},        {140, do_read},
    {80, do_read_end},     {110, do_map},         {110, do_unmap},        {60, do_bad_handle},
    {20, do_bad_malloc},   {15, do_null_pool},    {20, do_maintenance},   {15, do_thread_exit},
    {3, do_destroy_alone}, {7, do_verify_alone},
};

/* The misusing actor: misuse, and its own objects to misuse. */
static const struct op MISUSER_OPS[] = {
    {10, do_malloc}, {10, do_free},        {10, do_map},        {10, do_unmap},       {5, do_read},
    {5, do_read_end}, {35, do_bad_handle}, {8, do_bad_malloc}, {7, do_null_pool},
};

static void step(struct actor *a, const struct op *ops, size_t n)
{
    unsigned int total = 0;
    for (size_t i = 0; i < n; i++)
        total += ops[i].weight;
    unsigned long r = rnd(a, total);
    for (size_t i = 0; i < n; i++) {
        if (r < ops[i].weight) {
            ops[i].run(a);
            return;
        }
        r -= ops[i].weight;
    }
}

#define STEP(a, ops) step((a), (ops), sizeof(ops) / sizeof((ops)[0]))

/* ---- sessions ------------------------------------------------------------------- */

struct run {
    struct actor *a;
    pthread_barrier_t *sync;
    atomic_int stop; /* set by the worker between the two barriers of a round */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct actor *actor_new(const char *name, uint64_t seed, bool misuser)
{
    struct actor *a = calloc(1, sizeof *a);
    struct obj *objs = calloc(MAXLIVE, sizeof *objs);
    if (!a || !objs)
        exit(2);
    a->name = name, a->rng = seed, a->objs = objs, a->misuser = misuser;
    return a;
}

/* Ends what an actor has open and frees its objects. */
static void actor_finish(struct actor *a)
{
    while (a->nmaps)
        do_unmap(a);
    while (a->nreads) {
        struct open_read r = a->reads[--a->nreads];
        zs_obj_read_end(POOL, r.h, r.len, r.ptr);
        if (r.obj < 0)
            a->misuse++;
        else
            a->objs[r.obj].reads--;
    }
    while (a->n) {
        unsigned long misuse = a->misuse;
        do_free(a);
        if (a->misuse != misuse)
            break;
    }
}

/* The second actor's thread: misuse until told to stop, pausing at the barrier. */
static void *misuser_main(void *arg)
{
    struct run *run = arg;
    struct actor *a = run->a;
    for (;;) {
        for (int i = 0; i < 256; i++) {
            a->ops++;
            STEP(a, MISUSER_OPS);
        }
        pthread_barrier_wait(run->sync); /* the worker verifies, then decides */
        pthread_barrier_wait(run->sync);
        if (atomic_load(&run->stop))
            break;
    }
    /* Ended here: what a thread leaves open at its exit is a misuse of its own. */
    actor_finish(a);
    return NULL;
}

/* Runs one session: layout, one or two threads; returns operations done. */
static unsigned long session(uint64_t seed, int threads, unsigned long ops, double seconds)
{
    memset(DEAD, 0, sizeof DEAD);
    NDEAD = 0;
    POOL = make_pool();
    RELEASED = false;
    struct actor *w = actor_new("worker", seed, false);
    struct actor *m = threads == 2 ? actor_new("misuser", seed ^ 0xA5A5A5A5A5A5A5A5ull, true) : NULL;
    ACTORS[0] = w, ACTORS[1] = m;
    THREADS = threads;
    for (int i = 0; i < 16; i++)
        atomic_store(&SHARED[i], 0);
    double deadline = now() + seconds;
    if (threads == 1) {
        while (!atomic_load(&FAILED) && (ops ? w->ops < ops : (w->ops % 256 != 0 || now() < deadline))) {
            w->ops++;
            STEP(w, WORKER_OPS);
        }
        verify(w, w->misuse);
    } else {
        pthread_barrier_t sync;
        pthread_barrier_init(&sync, NULL, 2);
        struct run run = {m, &sync, 0};
        pthread_t th;
        if (pthread_create(&th, NULL, misuser_main, &run) != 0)
            exit(2);
        for (;;) {
            for (int i = 0; i < 256; i++) {
                w->ops++;
                STEP(w, WORKER_OPS);
            }
            pthread_barrier_wait(&sync);
            verify(w, w->misuse + m->misuse);
            atomic_store(&run.stop, atomic_load(&FAILED) || (ops ? w->ops >= ops : now() >= deadline));
            pthread_barrier_wait(&sync);
            if (atomic_load(&run.stop))
                break;
        }
        pthread_join(th, NULL);
        pthread_barrier_destroy(&sync);
    }
    unsigned long done = w->ops + (m ? m->ops : 0);
    REFUSED = w->refused + (m ? m->refused : 0);
    actor_finish(w);
    unsigned long misuse = w->misuse + (m ? m->misuse : 0);
    struct zs_pool_info info = pool_info(POOL);
    CHECK_EQ(info.misuse_events, misuse);
    CHECK_EQ(zs_pool_check(POOL), 0);
    zs_destroy_pool(POOL);
    POOL = NULL;
    ACTORS[0] = ACTORS[1] = NULL;
    free(w->objs), free(w);
    if (m)
        free(m->objs), free(m);
    return done;
}

int main(int argc, char **argv)
{
    uint64_t seed = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    double seconds = 2;
    unsigned long ops = 0;
    int only = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
            ops = strtoul(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--session") == 0 && i + 1 < argc)
            only = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--seed S] [--seconds N | --ops N] [--session 0..5]\n", argv[0]);
            return 2;
        }
    }
    TRACE = getenv("FUZZ_TRACE") && strcmp(getenv("FUZZ_TRACE"), "1") == 0;
    printf("fuzz_api: seed %llu\n", (unsigned long long)seed);
    fflush(stdout);
    static const char *names[6] = {"dense, one thread", "kernel, one thread", "dense, a misusing second thread",
                                   "kernel, a misusing second thread",
                                   "dense, objects up to 20000 bytes, a misusing second thread",
                                   "kernel, objects up to 20000 bytes, a misusing second thread"};
    int sessions = only >= 0 ? 1 : 6;
    for (int s = 0; s < 6 && !atomic_load(&FAILED); s++) {
        if (only >= 0 && s != only)
            continue;
        LAYOUT = (enum zs_layout)(s % 2);
        LIMIT = s >= 4 ? BIG : ZS_MAX_ALLOC_SIZE;
        int threads = s < 2 ? 1 : 2;
        double t0 = now();
        unsigned long done = session(seed + (uint64_t)s, threads, ops, seconds / sessions);
        printf("session %d (%s): %lu operations (%lu refused for a hold) in %.1f s\n", s, names[s], done, REFUSED,
               now() - t0);
        /* A run of any length meets holds: the rule was exercised, not only modelled. */
        if (!ops)
            CHECK(REFUSED > 0);
        if (atomic_load(&FAILED))
            printf("FAILED in session %d at operation %lu of the %s: replay with --seed %llu --session %d "
                   "--ops %lu\n",
                   s, FAIL_OP, FAIL_ACTOR, (unsigned long long)seed, s, FAIL_OP);
        fflush(stdout);
    }
    return check_summary();
}
