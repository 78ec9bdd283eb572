/*
 * zs_compact: frames freed, every remaining object intact under its old handle, the
 * counters (return value, zs_pool_stats, zs_pool_info) agreeing, mapped objects left
 * where they are, and compaction running without pause while three threads allocate,
 * write, read, map and free.
 *
 * Built only when include/zsmalloc.h declares zs_compact (see mk/c_tests.mk).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "check.h"

struct obj {
    unsigned long h;
    size_t size;
    uint64_t seed;
};

static int obj_ok(struct zs_pool *pool, const struct obj *o)
{
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    void *p = zs_obj_read_begin(pool, o->h, o->size, local);
    if (!p)
        return 0;
    int ok = pattern_ok(p, o->size, o->seed);
    zs_obj_read_end(pool, o->h, o->size, p);
    return ok;
}

static int obj_new(struct zs_pool *pool, struct obj *o, size_t size, uint64_t seed)
{
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    o->h = zs_malloc(pool, size, 0);
    if (ZS_IS_ERR(o->h)) {
        o->h = 0;
        return 0;
    }
    o->size = size;
    o->seed = seed;
    fill_pattern(buf, size, seed);
    zs_obj_write(pool, o->h, buf, size);
    return 1;
}

static unsigned long freeable_pages(struct zs_pool *pool)
{
    unsigned long sum = 0;
    for (unsigned int idx = 0; idx < 1024; idx++) {
        struct zs_class_info ci;
        if (class_info_of(pool, idx, &ci) == 0)
            sum += ci.pages_freeable;
    }
    return sum;
}

/* Frames a pool's objects need at best after compaction. The kernel's layout: every
 * class holds ceil(objects / objects per zspage) zspages, which its compaction reaches
 * exactly (nothing pinned). The dense layout: `requested` bytes (objects take exactly
 * their size) in zspages of a lane's chain; also returned in *slack, the frames of two
 * zspages that the dense compaction may stay above that (it leaves zspages less than
 * 1/16 free alone, and ends on a partly filled one). */
static unsigned long ideal_pages(struct zs_pool *pool, enum zs_layout layout, unsigned long requested,
                                 unsigned long *slack)
{
    unsigned long ideal = 0;
    *slack = 0;
    for (unsigned int idx = 0; idx < 1024; idx++) {
        struct zs_class_info ci;
        if (class_info_of(pool, idx, &ci) != 0)
            continue;
        if (layout == ZS_LAYOUT_DENSE) {
            /* Every lane has the same chain. */
            unsigned long cap = ci.pages_per_zspage * 4096ul;
            *slack = 2ul * ci.pages_per_zspage;
            return (requested + cap - 1) / cap * ci.pages_per_zspage;
        }
        ideal += (ci.objs_inuse + ci.objs_per_zspage - 1) / ci.objs_per_zspage * ci.pages_per_zspage;
    }
    return ideal;
}

static unsigned long stats_compacted(struct zs_pool *pool)
{
    struct zs_pool_stats st = {0};
    zs_pool_stats(pool, &st);
    return st.pages_compacted;
}

/* ---- fill, free a seeded half, compact, verify ---------------------------------- */

static void test_fill_free_compact(enum zs_layout layout)
{
    /* Pinned to 4 KiB frames: its ideal is the kernel's class table at 4 KiB pages. */
    struct zs_pool *pool = test_pool_framed("compact-half", layout, 0, 4096);
    const int n = under_valgrind() ? 3000 : 8000;
    struct obj *o = calloc((size_t)n, sizeof *o);
    uint64_t rng = 4242 + (uint64_t)layout;
    for (int i = 0; i < n; i++)
        CHECK(obj_new(pool, &o[i], rand_below(&rng, 3500) + 1, 10000 + (uint64_t)i));
    /* Nothing to gain from a full pool. */
    unsigned long freed0 = zs_compact(pool);
    CHECK_EQ(stats_compacted(pool), freed0);

    unsigned long live = 0, requested = 0;
    for (int i = 0; i < n; i++) {
        if (rand_below(&rng, 2)) {
            zs_free(pool, o[i].h);
            o[i].h = 0;
        } else {
            live++;
            requested += o[i].size;
        }
    }
    unsigned long before = zs_get_total_pages(pool);
    unsigned long freeable = freeable_pages(pool);
    struct zs_pool_info info = pool_info(pool);
    CHECK(freeable > 0);

    unsigned long freed = zs_compact(pool);
    unsigned long after = zs_get_total_pages(pool);
    CHECK(freed > 0);
    CHECK(after < before);
    CHECK_EQ(after, before - freed);
    CHECK(freeable_pages(pool) < freeable);
    struct zs_pool_info now = pool_info(pool);
    CHECK_EQ(now.pages_compacted, freed0 + freed);
    CHECK_EQ(stats_compacted(pool), freed0 + freed);
    CHECK(now.objs_moved > info.objs_moved);
    CHECK_EQ(now.live_objects, live);
    CHECK_EQ(now.requested_bytes, requested);
    CHECK_EQ(now.total_pages, after);
    CHECK_EQ(now.misuse_events, 0);
    CHECK_EQ(zs_pool_check(pool), 0);
    /* Packed as well as the layout packs: the kernel's class table ideal exactly, the
     * dense layout near the live bytes over whole zspages (one thread: one lane). */
    unsigned long slack;
    unsigned long ideal = ideal_pages(pool, layout, requested, &slack);
    if (!CHECK(after >= ideal && after <= ideal + slack))
        fprintf(stderr, "  %s layout: %lu frames after compaction, ideal %lu (+%lu)\n",
                layout == ZS_LAYOUT_KERNEL ? "kernel" : "dense", after, ideal, slack);

    /* Every remaining object, under the handle it always had. */
    unsigned long bad = 0;
    for (int i = 0; i < n; i++)
        if (o[i].h && !obj_ok(pool, &o[i]))
            bad++;
    CHECK_EQ(bad, 0);

    /* Moved objects are fully usable: mapped, rewritten, freed. */
    unsigned long mapped_bad = 0;
    for (int i = 0; i < n; i++) {
        if (!o[i].h)
            continue;
        unsigned char *p = zs_map_object(pool, o[i].h, ZS_MM_RW);
        if (!p || !pattern_ok(p, o[i].size, o[i].seed)) {
            mapped_bad++;
        }
        if (p) {
            o[i].seed += 1u << 20;
            fill_pattern(p, o[i].size, o[i].seed);
            zs_unmap_object(pool, o[i].h);
        }
    }
    CHECK_EQ(mapped_bad, 0);
    bad = 0;
    for (int i = 0; i < n; i++)
        if (o[i].h && !obj_ok(pool, &o[i]))
            bad++;
    CHECK_EQ(bad, 0);

    /* A second pass keeps the books straight. */
    unsigned long again = zs_compact(pool);
    CHECK_EQ(zs_get_total_pages(pool), after - again);
    CHECK_EQ(pool_info(pool).pages_compacted, freed0 + freed + again);
    CHECK_EQ(zs_pool_check(pool), 0);

    for (int i = 0; i < n; i++)
        if (o[i].h)
            zs_free(pool, o[i].h);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    CHECK_EQ(zs_compact(pool), 0);
    free(o);
    zs_destroy_pool(pool);
}

/* ---- mapped and read objects are not moved ------------------------------------ */

static void test_pinned_not_moved(enum zs_layout layout)
{
    /* Pinned to 4 KiB frames: the zspages it fills and pins are 4 KiB frames' worth. */
    struct zs_pool *pool = test_pool_framed("compact-pinned", layout, 0, 4096);
    const size_t size = 700;
    struct zs_class_info ci;
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, size), &ci), 0);
    /* Objects to a zspage: the class's, in the kernel's layout; in a dense lane, whose
     * zspages take every size and report none, as many as its chain holds end to end. */
    unsigned int per = ci.objs_per_zspage;
    if (layout == ZS_LAYOUT_DENSE) {
        CHECK_EQ(per, 0);
        per = ci.pages_per_zspage * 4096u / (unsigned int)size;
    }
    const unsigned long chain = ci.pages_per_zspage;
    CHECK(per >= 4);
    /* Eight zspages' worth, then two objects kept per zspage's worth: 16 objects,
     * sparse, which compaction would pack into fewer zspages. */
    enum { KEEP = 16 };
    size_t n = (size_t)per * 8;
    struct obj *o = calloc(n, sizeof *o);
    struct obj kept[KEEP];
    int nk = 0;
    for (size_t i = 0; i < n; i++)
        CHECK(obj_new(pool, &o[i], size, 20000 + i));
    for (size_t i = 0; i < n; i++) {
        if (i % per < 2 && nk < KEEP)
            kept[nk++] = o[i];
        else
            zs_free(pool, o[i].h);
    }
    free(o);
    CHECK_EQ(nk, KEEP);
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, size), &ci), 0);
    CHECK(ci.pages_freeable > 0);

    /* All 16 pinned: 8 mapped, 8 being read. Nothing may move or be freed. */
    unsigned char *p[KEEP];
    static unsigned char local[KEEP][ZS_MAX_ALLOC_SIZE];
    for (int i = 0; i < KEEP; i++) {
        p[i] = i % 2 ? zs_map_object(pool, kept[i].h, ZS_MM_RW)
                     : zs_obj_read_begin(pool, kept[i].h, kept[i].size, local[i]);
        CHECK(p[i] != NULL);
    }
    struct zs_pool_info before = pool_info(pool);
    unsigned long pages = zs_get_total_pages(pool);
    unsigned long freed = zs_compact(pool);
    struct zs_pool_info after = pool_info(pool);
    CHECK_EQ(freed, 0);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    CHECK_EQ(after.objs_moved, before.objs_moved);
    CHECK(after.compact_skipped_mapped > before.compact_skipped_mapped);
    /* The pinned bytes stayed where they were and are still the objects'. */
    for (int i = 0; i < KEEP; i++) {
        if (!p[i])
            continue;
        CHECK(pattern_ok(p[i], kept[i].size, kept[i].seed));
        if (i % 2) {
            kept[i].seed += 7;
            fill_pattern(p[i], kept[i].size, kept[i].seed);
            zs_unmap_object(pool, kept[i].h);
        } else {
            zs_obj_read_end(pool, kept[i].h, kept[i].size, p[i]);
        }
    }
    for (int i = 0; i < KEEP; i++)
        CHECK(obj_ok(pool, &kept[i]));

    /* Unpinned, they can be packed: 16 objects of 700 bytes fit one zspage in either
     * layout. */
    freed = zs_compact(pool);
    CHECK(freed > 0);
    CHECK_EQ(zs_get_total_pages(pool), pages - freed);
    CHECK_EQ(zs_get_total_pages(pool), chain);
    CHECK(pool_info(pool).objs_moved > after.objs_moved);
    for (int i = 0; i < KEEP; i++)
        CHECK(obj_ok(pool, &kept[i]));
    CHECK_EQ(zs_pool_check(pool), 0);
    CHECK_EQ(misuse_count(pool), 0);

    /* NULL pool: refused like every other call. */
    errno = 0;
    CHECK_EQ(zs_compact(NULL), 0);
    CHECK_EQ(errno, EINVAL);
    zs_destroy_pool(pool);
}

/* ---- compaction without pause while three threads work -------------------------- */

enum { WORKERS = 3, SLOTS = 400 };
static const size_t sizes[] = {1, 40, 100, 300, 700, 1000, 1500, 2100, 3000, 3300, 3700, 4096};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static struct zs_pool *spool;
static atomic_int stop;

struct worker {
    int id;
    struct obj own[SLOTS];
    unsigned long bad, ops, errno_set;
};

/* Counts a failure of worker w; the first few are described on stderr. */
static void worker_fail(struct worker *w, const char *what, const struct obj *o, int err)
{
    if (w->bad++ < 5)
        fprintf(stderr, "worker %d, operation %lu: %s (handle %#lx, size %zu, errno %d)\n", w->id, w->ops, what,
                o ? o->h : 0ul, o ? o->size : (size_t)0, err);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = 777 + (uint64_t)w->id;
    uint64_t seed = ((uint64_t)w->id + 1) << 40;
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    while (!atomic_load(&stop)) {
        w->ops++;
        /* Now and then drop most objects: sparse zspages for the compactor. */
        if (w->ops % 5000 == 0) {
            for (int i = 0; i < SLOTS; i++) {
                if (w->own[i].h && rand_below(&rng, 4)) {
                    if (!obj_ok(spool, &w->own[i]))
                        worker_fail(w, "bytes before a bulk free", &w->own[i], errno);
                    zs_free(spool, w->own[i].h);
                    w->own[i].h = 0;
                }
            }
            continue;
        }
        struct obj *o = &w->own[rand_below(&rng, SLOTS)];
        unsigned long op = rand_below(&rng, 100);
        if (!o->h) {
            if (!obj_new(spool, o, sizes[rand_below(&rng, NSIZES)], seed++))
                worker_fail(w, "zs_malloc", o, errno);
        } else if (op < 25) {
            if (!obj_ok(spool, o))
                worker_fail(w, "read_begin bytes", o, errno);
        } else if (op < 40) {
            /* Hold a mapping for a moment while compaction runs. */
            unsigned char *p = zs_map_object(spool, o->h, ZS_MM_RO);
            if (!p || !pattern_ok(p, o->size, o->seed))
                worker_fail(w, "RO mapping", o, errno);
            sched_yield();
            if (p && !pattern_ok(p, o->size, o->seed))
                worker_fail(w, "RO mapping, after a pause", o, errno);
            if (p)
                zs_unmap_object(spool, o->h);
        } else if (op < 50) {
            unsigned char *p = zs_map_object(spool, o->h, ZS_MM_RW);
            if (!p || !pattern_ok(p, o->size, o->seed))
                worker_fail(w, "RW mapping", o, errno);
            if (p) {
                o->seed = seed++;
                fill_pattern(p, o->size, o->seed);
                zs_unmap_object(spool, o->h);
            }
        } else if (op < 55) {
            unsigned char *p = zs_map_object(spool, o->h, ZS_MM_WO);
            if (!p) {
                worker_fail(w, "WO mapping", o, errno);
            } else {
                o->seed = seed++;
                fill_pattern(p, o->size, o->seed);
                zs_unmap_object(spool, o->h);
            }
        } else if (op < 62) {
            o->seed = seed++;
            fill_pattern(buf, o->size, o->seed);
            zs_obj_write(spool, o->h, buf, o->size);
        } else {
            if (!obj_ok(spool, o))
                worker_fail(w, "bytes before free", o, errno);
            /* Refusals are told by the misuse counter (checked at the end), not by
             * errno: see the note in test_threads.c. */
            errno = 0;
            zs_free(spool, o->h);
            w->errno_set += errno != 0;
            o->h = 0;
        }
    }
    return NULL;
}

struct compactor {
    unsigned long runs, freed;
};

static void *compactor_main(void *arg)
{
    struct compactor *c = arg;
    while (!atomic_load(&stop)) {
        c->freed += zs_compact(spool);
        c->runs++;
    }
    return NULL;
}

static void test_concurrent(void)
{
    spool = test_pool("compact-stress", ZS_LAYOUT_DENSE, 0);
    static struct worker w[WORKERS];
    struct compactor c = {0, 0};
    pthread_t th[WORKERS], ct;
    atomic_store(&stop, 0);
    for (int t = 0; t < WORKERS; t++) {
        w[t].id = t;
        CHECK_EQ(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    CHECK_EQ(pthread_create(&ct, NULL, compactor_main, &c), 0);
    /* A bounded run: about three seconds. */
    struct timespec d = {3, 0};
    while (nanosleep(&d, &d) != 0 && errno == EINTR)
        ;
    atomic_store(&stop, 1);
    for (int t = 0; t < WORKERS; t++)
        pthread_join(th[t], NULL);
    pthread_join(ct, NULL);

    unsigned long bad = 0, ops = 0, live = 0, requested = 0, errno_set = 0;
    for (int t = 0; t < WORKERS; t++) {
        if (!CHECK_EQ(w[t].bad, 0))
            fprintf(stderr, "  worker %d\n", t);
        ops += w[t].ops;
        errno_set += w[t].errno_set;
        for (int i = 0; i < SLOTS; i++) {
            if (!w[t].own[i].h)
                continue;
            live++;
            requested += w[t].own[i].size;
            bad += !obj_ok(spool, &w[t].own[i]);
        }
    }
    fprintf(stderr, "compaction stress: %lu operations, %lu compactions freed %lu frames\n", ops, c.runs, c.freed);
    CHECK_EQ(errno_set, 0); /* successful frees left errno alone */
    /* Every refused free would have counted a misuse and left an object live. */
    CHECK_EQ(bad, 0);
    CHECK(ops > 1000);
    CHECK(c.runs > 10);
    CHECK(c.freed > 0);
    struct zs_pool_info info = pool_info(spool);
    CHECK_EQ(info.pages_compacted, c.freed);
    CHECK_EQ(stats_compacted(spool), c.freed);
    CHECK_EQ(info.live_objects, live);
    CHECK_EQ(info.requested_bytes, requested);
    CHECK_EQ(info.misuse_events, 0);
    CHECK_EQ(zs_pool_check(spool), 0);

    /* Compacted once more at rest, still everything intact. */
    zs_compact(spool);
    bad = 0;
    for (int t = 0; t < WORKERS; t++)
        for (int i = 0; i < SLOTS; i++)
            if (w[t].own[i].h && !obj_ok(spool, &w[t].own[i]))
                bad++;
    CHECK_EQ(bad, 0);
    CHECK_EQ(zs_pool_check(spool), 0);
    for (int t = 0; t < WORKERS; t++)
        for (int i = 0; i < SLOTS; i++)
            if (w[t].own[i].h)
                zs_free(spool, w[t].own[i].h);
    CHECK_EQ(zs_get_total_pages(spool), 0);
    CHECK_EQ(zs_pool_check(spool), 0);
    zs_destroy_pool(spool);
}

int main(void)
{
    test_fill_free_compact(ZS_LAYOUT_DENSE);
    test_fill_free_compact(ZS_LAYOUT_KERNEL);
    test_pinned_not_moved(ZS_LAYOUT_KERNEL);
    test_pinned_not_moved(ZS_LAYOUT_DENSE);
    test_concurrent();
    return check_summary();
}
