/*
 * Every thread-safe entry point against every other, in both layouts, through the C
 * ABI (tests/torture.rs does the same from Rust).
 *
 * - Two workers malloc, write, read (zs_obj_read_begin/end), map (RO, RW, WO) and free
 *   their own objects, each checked against a shadow copy on every read; each keeps a
 *   hot object that a contender reads and maps read-only at the same time. The
 *   worker retries what the contender makes busy (EBUSY); the contender may be
 *   refused, but what it is shown is always one whole version of the object.
 * - A census thread (zs_frame_census), a checker (zs_pool_check, which must return 0
 *   every time), a maintenance thread (zs_compact, zs_defragment, zs_make_adjacent,
 *   zs_release_arena), the automatic compactor every millisecond, and a burst thread
 *   that grows the arena by a thousand frames and empties it, so that shrinking runs
 *   under the side-table walkers.
 *
 * Each layout runs for ZS_TORTURE_MS milliseconds (default 1500; under valgrind a
 * fixed, smaller number of rounds instead, see main).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "check.h"

enum { WORKERS = 2, OWN = 400, BURST = 1000, HEADER = VERSION_HEADER };

static struct zs_pool *pool;
static atomic_int stop;
/* Each worker's hot object, offered to the contender (0: none yet). */
static atomic_ulong hot[WORKERS];
static atomic_ulong checks, censuses, refusals, check_failures, torn;
/* Bounds on the work when time does not bound it (valgrind). */
static long worker_rounds, side_rounds;

/* Whether p holds a whole version (check.h) of at most `room` bytes. */
static int whole_version(const unsigned char *p, size_t room)
{
    return version_len(p, room) != 0;
}

struct obj {
    unsigned long h;
    size_t len;
    uint32_t seed;
};

struct worker {
    int id;
    struct obj own[OWN];
    unsigned long bad;
};

static int running(long round, long rounds)
{
    return !atomic_load_explicit(&stop, memory_order_relaxed) && (rounds == 0 || round < rounds);
}

/* The call's result, retried while the contender holds the object. */
#define RETRY(expr, busy)                                                                                              \
    for (;;) {                                                                                                         \
        errno = 0;                                                                                                     \
        expr;                                                                                                          \
        if (!(busy) || errno != EBUSY)                                                                                 \
            break;                                                                                                     \
        atomic_fetch_add(&refusals, 1);                                                                                \
        sched_yield();                                                                                                 \
    }

/* The largest object of the pool under test, and of any pool here. */
#define BIG 32768
static size_t limit = ZS_MAX_ALLOC_SIZE;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = 0x70A7u + (uint64_t)w->id * 104729;
    uint32_t seeds = (uint32_t)w->id << 28;
    unsigned char buf[BIG], local[BIG];
    for (long round = 0; running(round, worker_rounds); round++) {
        /* Slot 0 is the hot object: offered to the contender, never freed. */
        int i = rand_below(&rng, 4) == 0 ? 0 : (int)rand_below(&rng, OWN);
        struct obj *o = &w->own[i];
        unsigned long op = rand_below(&rng, 100);
        if (o->h == 0) {
            o->len = HEADER + rand_below(&rng, limit - HEADER + 1);
            if (rand_below(&rng, 2))
                o->len = HEADER + rand_below(&rng, 200);
            o->h = zs_malloc(pool, o->len, 0);
            if (ZS_IS_ERR(o->h)) {
                w->bad++;
                o->h = 0;
                continue;
            }
            o->seed = ++seeds;
            fill_version(buf, o->len, o->seed);
            zs_obj_write(pool, o->h, buf, o->len);
            if (i == 0)
                atomic_store(&hot[w->id], o->h);
            continue;
        }
        if (op < 20) {
            unsigned char *p = NULL;
            RETRY(p = zs_obj_read_begin(pool, o->h, o->len, local), p == NULL);
            if (!p) {
                w->bad++;
                continue;
            }
            unsigned char want[BIG];
            fill_version(want, o->len, o->seed);
            w->bad += memcmp(p, want, o->len) != 0;
            zs_obj_read_end(pool, o->h, o->len, p);
        } else if (op < 45) {
            int mode = op < 30 ? ZS_MM_RO : op < 40 ? ZS_MM_RW : ZS_MM_WO;
            unsigned char *p = NULL;
            RETRY(p = zs_map_object(pool, o->h, (enum zs_mapmode)mode), p == NULL);
            if (!p) {
                w->bad++;
                continue;
            }
            if (mode != ZS_MM_WO) {
                unsigned char want[BIG];
                fill_version(want, o->len, o->seed);
                w->bad += memcmp(p, want, o->len) != 0;
            }
            if (mode != ZS_MM_RO) {
                o->seed = ++seeds;
                fill_version(p, o->len, o->seed);
            }
            zs_unmap_object(pool, o->h);
        } else if (op < 70) {
            uint32_t seed = ++seeds;
            fill_version(buf, o->len, seed);
            RETRY(zs_obj_write(pool, o->h, buf, o->len), 1);
            if (errno != 0)
                w->bad++;
            else
                o->seed = seed;
        } else if (i != 0) {
            RETRY(zs_free(pool, o->h), 1);
            if (errno != 0)
                w->bad++;
            o->h = 0;
        }
    }
    return NULL;
}

/* Reads and maps the workers' hot objects read-only while they write them. */
static void *contender_main(void *arg)
{
    (void)arg;
    uint64_t rng = 0xC047E5Du;
    unsigned char local[BIG];
    for (long round = 0; running(round, side_rounds * 20); round++) {
        unsigned long h = atomic_load(&hot[rand_below(&rng, WORKERS)]);
        if (h == 0) {
            sched_yield();
            continue;
        }
        errno = 0;
        if (rand_below(&rng, 2)) {
            unsigned char *p = zs_map_object(pool, h, ZS_MM_RO);
            if (p) {
                size_t room = limit;
                if (!whole_version(p, room))
                    atomic_fetch_add(&torn, 1);
                zs_unmap_object(pool, h);
            }
        } else {
            unsigned char *p = zs_obj_read_begin(pool, h, HEADER, local);
            if (p) {
                uint32_t len;
                memcpy(&len, p, 4);
                zs_obj_read_end(pool, h, HEADER, p);
                /* The length never changes: a whole read of it, in a second read. */
                if (len >= HEADER && len <= limit) {
                    p = zs_obj_read_begin(pool, h, len, local);
                    if (p) {
                        if (!whole_version(p, len))
                            atomic_fetch_add(&torn, 1);
                        zs_obj_read_end(pool, h, len, p);
                    }
                } else {
                    atomic_fetch_add(&torn, 1);
                }
            }
        }
        if (errno == EBUSY)
            atomic_fetch_add(&refusals, 1);
        else if (errno != 0)
            atomic_fetch_add(&torn, 1); /* nothing else may refuse it */
    }
    return NULL;
}

static void *census_main(void *arg)
{
    (void)arg;
    for (long round = 0; running(round, side_rounds); round++) {
        struct zs_frame_census c;
        memset(&c, 0, sizeof c);
        c.size = sizeof c;
        if (zs_frame_census(pool, &c) != 0 ||
            c.top != c.free_frames + c.zspage_frames + c.huge_frames + c.transit_frames)
            atomic_fetch_add(&check_failures, 1);
        atomic_fetch_add(&censuses, 1);
    }
    return NULL;
}

static void *checker_main(void *arg)
{
    (void)arg;
    for (long round = 0; running(round, side_rounds); round++) {
        if (zs_pool_check(pool) != 0)
            atomic_fetch_add(&check_failures, 1);
        atomic_fetch_add(&checks, 1);
    }
    return NULL;
}

static void *maintenance_main(void *arg)
{
    (void)arg;
    for (long round = 0; running(round, side_rounds); round++) {
        zs_compact(pool);
        if (zs_defragment(pool) < 0 || zs_make_adjacent(pool) < 0 || zs_release_arena(pool) < 0)
            atomic_fetch_add(&check_failures, 1);
    }
    return NULL;
}

static void *burst_main(void *arg)
{
    (void)arg;
    static unsigned long held[BURST];
    int n = under_valgrind() ? BURST / 4 : BURST;
    for (long round = 0; running(round, side_rounds ? side_rounds / 4 + 1 : 0); round++) {
        int k;
        for (k = 0; k < n; k++) {
            held[k] = zs_malloc(pool, ZS_MAX_ALLOC_SIZE, 0);
            if (ZS_IS_ERR(held[k]))
                break;
            uint32_t tag = (uint32_t)k;
            zs_obj_write(pool, held[k], &tag, sizeof tag);
        }
        for (int j = 0; j < k; j++) {
            uint32_t tag = ~0u;
            unsigned char local[4];
            void *p = zs_obj_read_begin(pool, held[j], sizeof tag, local);
            if (p) {
                memcpy(&tag, p, sizeof tag);
                zs_obj_read_end(pool, held[j], sizeof tag, p);
            }
            if (tag != (uint32_t)j)
                atomic_fetch_add(&torn, 1);
            zs_free(pool, held[j]);
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void run(enum zs_layout layout, long ms, unsigned int max_object_size)
{
    struct zs_pool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.max_object_size = max_object_size;
    limit = max_object_size ? max_object_size : ZS_MAX_ALLOC_SIZE;
    cfg.max_pages = TEST_MAX_PAGES;
    cfg.layout = layout;
    cfg.auto_compact_pages = 1;
    cfg.auto_compact_interval_ms = 1;
    pool = zs_create_pool_with("torture", &cfg);
    if (!pool) {
        perror("zs_create_pool_with");
        exit(2);
    }
    atomic_store(&stop, 0);
    atomic_store(&checks, 0);
    atomic_store(&censuses, 0);
    atomic_store(&refusals, 0);
    atomic_store(&check_failures, 0);
    atomic_store(&torn, 0);
    for (int t = 0; t < WORKERS; t++)
        atomic_store(&hot[t], 0);

    static struct worker w[WORKERS];
    memset(w, 0, sizeof w);
    pthread_t wt[WORKERS], side[5];
    void *(*sides[5])(void *) = {contender_main, census_main, checker_main, maintenance_main, burst_main};
    for (int t = 0; t < WORKERS; t++) {
        w[t].id = t;
        CHECK_EQ(pthread_create(&wt[t], NULL, worker_main, &w[t]), 0);
    }
    for (int s = 0; s < 5; s++)
        CHECK_EQ(pthread_create(&side[s], NULL, sides[s], NULL), 0);
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        atomic_store(&stop, 1);
    }
    for (int t = 0; t < WORKERS; t++)
        pthread_join(wt[t], NULL);
    atomic_store(&stop, 1);
    for (int s = 0; s < 5; s++)
        pthread_join(side[s], NULL);

    const char *name = layout == ZS_LAYOUT_KERNEL ? "kernel" : "dense";
    fprintf(stderr, "  %s, objects up to %zu bytes: %lu checks, %lu censuses, %lu refusals\n", name, limit, atomic_load(&checks),
            atomic_load(&censuses), atomic_load(&refusals));
    CHECK_EQ(atomic_load(&check_failures), 0);
    CHECK_EQ(atomic_load(&torn), 0);
    CHECK(atomic_load(&checks) > 0 && atomic_load(&censuses) > 0);
    /* At rest: every object intact, then freed; the pool sound and empty. */
    for (int t = 0; t < WORKERS; t++) {
        CHECK_EQ(w[t].bad, 0);
        for (int i = 0; i < OWN; i++) {
            struct obj *o = &w[t].own[i];
            if (!o->h)
                continue;
            static unsigned char local[BIG], want[BIG];
            unsigned char *p = zs_obj_read_begin(pool, o->h, o->len, local);
            fill_version(want, o->len, o->seed);
            if (CHECK(p != NULL)) {
                CHECK(memcmp(p, want, o->len) == 0);
                zs_obj_read_end(pool, o->h, o->len, p);
            }
            zs_free(pool, o->h);
        }
    }
    CHECK_EQ(zs_pool_check(pool), 0);
    CHECK_EQ(pool_info(pool).live_objects, 0);
    zs_compact(pool);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    zs_destroy_pool(pool);
}

int main(void)
{
    long ms = 1500;
    const char *env = getenv("ZS_TORTURE_MS");
    if (env)
        ms = atol(env);
    if (under_valgrind()) {
        /* valgrind runs one thread at a time, some 50 times slower: bounded rounds,
         * not wall time, so every thread does its share. */
        ms = 0;
        worker_rounds = 5000;
        side_rounds = 60;
    }
    run(ZS_LAYOUT_DENSE, ms, 0);
    run(ZS_LAYOUT_KERNEL, ms, 0);
    /* Objects up to 32 KiB: compacted, migrated and made adjacent under the load. */
    run(ZS_LAYOUT_DENSE, ms, BIG);
    run(ZS_LAYOUT_KERNEL, ms, BIG);
    return check_summary();
}
