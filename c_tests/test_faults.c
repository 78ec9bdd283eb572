/*
 * Fault injection: the library's own mmap, mprotect and madvise calls fail, one at a
 * time at every point where an operation makes one, or every one from some point on.
 * The test-only hook zs_testonly_fail_os (exported by the library, not in the header)
 * makes them fail as if the OS had said ENOMEM.
 *
 * Every failure must become an error return where the call can fail (pool creation:
 * NULL and ENOMEM; zs_malloc: -ENOMEM), or cost nothing but memory where the call only
 * gives memory back (madvise in free, defragmentation); no stored object may be lost
 * or changed, zs_pool_check must stay at 0, and the same call must succeed once the OS
 * agrees again. Covered: pool creation, zspage birth (the arena's segments reserved
 * and committed, and the side table's), handle-table growth, the arena tail
 * given back by zs_release_arena and mapped again, madvise when frees give frames
 * back, defragmentation, compaction and zs_make_adjacent; and all of them at once,
 * failing in windows while threads store, read, map and free their objects and
 * another compacts, migrates, releases the arena and runs the checker.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "check.h"

void zs_testonly_fail_os(unsigned int calls, unsigned long skip, unsigned long fail);
unsigned long zs_testonly_os_failures(void);

enum { OS_MMAP = 1, OS_MPROTECT = 2, OS_MADVISE = 4, OS_ALL = 7 };

static void inject(unsigned int calls, unsigned long skip, unsigned long fail)
{
    zs_testonly_fail_os(calls, skip, fail);
}

static void inject_off(void)
{
    zs_testonly_fail_os(0, 0, 0);
}

/* ---- the objects a pool holds, and their contents ------------------------------- */

enum { MAXOBJ = 4096 };

struct store {
    struct zs_pool *pool;
    int n;
    unsigned long h[MAXOBJ];
    size_t size[MAXOBJ];
    uint64_t seed[MAXOBJ];
};

static struct store S;

/* The size of the i-th object of a fill: 40..2000 bytes, and every 16th a whole frame. */
static size_t fill_size(int i)
{
    return i % 16 == 15 ? ZS_MAX_ALLOC_SIZE : 40 + (size_t)((i * 7919) % 1961);
}

/* Objects a fill stores: about 3.2 MiB, past the arena's first 2 MiB commit step, with
 * handles past the first page of slots and, in the dense layout, of sizes. */
static int fill_count(void)
{
    return under_valgrind() ? 2300 : 3000;
}

static void keep(unsigned long h, size_t size, uint64_t seed)
{
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    if (S.n == MAXOBJ) {
        CHECK(!"more objects than the store holds");
        exit(2);
    }
    fill_pattern(buf, size, seed);
    zs_obj_write(S.pool, h, buf, size);
    S.h[S.n] = h, S.size[S.n] = size, S.seed[S.n] = seed;
    S.n++;
}

/* Every stored object reads back, the counters agree, and the checker is content. */
static int store_ok(void)
{
    int ok = 1;
    for (int i = 0; i < S.n; i++)
        ok &= object_ok(S.pool, S.h[i], S.size[i], S.seed[i]);
    size_t bytes = 0;
    for (int i = 0; i < S.n; i++)
        bytes += S.size[i];
    struct zs_pool_info info = pool_info(S.pool);
    ok &= CHECK_EQ(info.live_objects, (unsigned long)S.n);
    ok &= CHECK_EQ(info.requested_bytes, bytes);
    ok &= CHECK_EQ(info.misuse_events, 0);
    ok &= CHECK_EQ(zs_pool_check(S.pool), 0);
    return ok;
}

static void store_free_all(void)
{
    for (int i = 0; i < S.n; i++)
        zs_free(S.pool, S.h[i]);
    S.n = 0;
}

/* Frees the objects i with i % m == r, keeping the rest in order. */
static void store_free_some(int m, int r)
{
    int k = 0;
    for (int i = 0; i < S.n; i++) {
        if (i % m == r) {
            zs_free(S.pool, S.h[i]);
        } else {
            S.h[k] = S.h[i], S.size[k] = S.size[i], S.seed[k] = S.seed[i];
            k++;
        }
    }
    S.n = k;
}

/*
 * Stores objects up to `count`, with OS failures as planned. A malloc that fails must
 * fail with ENOMEM exactly when a failure was injected during it, leave every stored
 * object intact and the checker at 0; it is then retried until the plan lets it
 * through (at most `retries` times). Returns the failed mallocs.
 */
static int fill_to(int count, int retries)
{
    int refused = 0;
    for (int i = S.n; i < count; i++) {
        size_t size = fill_size(i);
        for (int attempt = 0;; attempt++) {
            unsigned long before = zs_testonly_os_failures();
            errno = 0;
            unsigned long h = zs_malloc(S.pool, size, 0);
            int injected = zs_testonly_os_failures() != before;
            if (!ZS_IS_ERR(h)) {
                CHECK(!injected || !"an injected failure was swallowed by a malloc that succeeded");
                CHECK_EQ(errno, 0);
                keep(h, size, 1000 + (uint64_t)i);
                break;
            }
            refused++;
            if (!CHECK(injected))
                fprintf(stderr, "  malloc %d of %zu bytes failed without an injected failure\n", i, size);
            CHECK_EQ(ZS_ERR(h), ENOMEM);
            CHECK_EQ(errno, ENOMEM);
            if (attempt == 0)
                CHECK(store_ok());
            if (attempt >= retries)
                inject_off();
            if (!CHECK(attempt <= retries + 1))
                return refused;
        }
    }
    return refused;
}

static struct zs_pool *new_pool(enum zs_layout layout)
{
    inject_off();
    S.n = 0;
    S.pool = test_pool("faults", layout, 0);
    return S.pool;
}

static void end_pool(void)
{
    inject_off();
    CHECK(store_ok());
    store_free_all();
    check_emptied_and_destroy(S.pool, 0);
    S.pool = NULL;
}

/* ---- pool creation ----------------------------------------------------------------- */

static void faults_in_create(void)
{
    /* Creation asks the OS for nothing (the arena and the tables are taken as the pool
     * grows), so it succeeds even when every call would fail; the first zs_malloc,
     * which needs the arena's first segment, then fails with ENOMEM, and succeeds once
     * the OS agrees again. */
    for (int layout = 0; layout <= 1; layout++) {
        struct zs_pool_config cfg = test_config((enum zs_layout)layout, 0);
        inject(OS_ALL, 0, ULONG_MAX);
        struct zs_pool *p = zs_create_pool_with("faults-create", &cfg);
        unsigned long h = p ? zs_malloc(p, 100, 0) : 0;
        unsigned long failed = zs_testonly_os_failures();
        inject_off();
        if (!CHECK(p != NULL))
            continue;
        CHECK(ZS_IS_ERR(h) && ZS_ERR(h) == ENOMEM);
        CHECK(failed >= 1);
        h = zs_malloc(p, 100, 0);
        CHECK(!ZS_IS_ERR(h));
        zs_free(p, h);
        check_emptied_and_destroy(p, 0);
    }
}

/* ---- growth: zspage birth and handle-table growth ------------------------------ */

/* Every OS call of a fill fails in turn, once. */
static void faults_in_growth(enum zs_layout layout)
{
    unsigned long skip = 0;
    for (;; skip++) {
        new_pool(layout);
        inject(OS_MMAP | OS_MPROTECT, skip, 1);
        int refused = fill_to(fill_count(), 1);
        unsigned long failed = zs_testonly_os_failures();
        CHECK_EQ((unsigned long)refused, failed);
        end_pool();
        if (!failed)
            break;
    }
    /* The arena's segments (each reserved, then committed), and the side table's and
     * the handle table's segments past their first, which are on the heap. */
    CHECK(skip >= 8);
    unsigned long calls = skip; /* the fill's OS calls: the first skip that fails none */

    /* From some call on, every one fails: mallocs that need memory fail, the others
     * succeed; then the OS agrees again and the fill completes. Four starting points
     * spread over the fill's calls. */
    for (skip = 0; skip < calls; skip += calls / 4 ? calls / 4 : 1) {
        new_pool(layout);
        inject(OS_MMAP | OS_MPROTECT, skip, ULONG_MAX);
        for (int i = 0; i < fill_count(); i++) {
            size_t size = fill_size(i);
            unsigned long h = zs_malloc(S.pool, size, 0);
            if (ZS_IS_ERR(h))
                CHECK_EQ(ZS_ERR(h), ENOMEM);
            else
                keep(h, size, 3000 + (uint64_t)i);
        }
        CHECK(zs_testonly_os_failures() > 0);
        CHECK(store_ok());
        inject_off();
        fill_to(S.n + 500, 0);
        end_pool();
    }
}

/* ---- giving memory back: madvise in free, defragmentation, the arena tail ------- */

static void faults_in_giving_back(enum zs_layout layout)
{
    /* madvise fails for every frame freed past the resident cache: the frees succeed,
     * the frames are reused later with whatever they hold. */
    new_pool(layout);
    fill_to(fill_count(), 0);
    inject(OS_MADVISE, 0, ULONG_MAX);
    for (int r = 0; r < 4; r++) {
        unsigned long misuse = misuse_count(S.pool);
        errno = 0;
        store_free_some(4 - r, 0);
        CHECK_EQ(errno, 0);
        CHECK_EQ(misuse_count(S.pool), misuse);
        CHECK(store_ok());
    }
    CHECK_EQ(S.n, 0);
    CHECK(zs_testonly_os_failures() > 0);
    CHECK_EQ(zs_get_total_pages(S.pool), 0);
    inject_off();
    fill_to(fill_count(), 0);
    CHECK(store_ok());

    /* Defragmentation and the release of the arena tail, with every madvise and
     * mprotect failing in turn: they give back less, and nothing is lost. */
    store_free_some(3, 1);
    store_free_some(2, 1);
    zs_compact(S.pool);
    for (unsigned long skip = 0;; skip++) {
        inject(OS_MADVISE | OS_MPROTECT, skip, 1);
        long moved = zs_defragment(S.pool);
        long released = zs_release_arena(S.pool);
        unsigned long failed = zs_testonly_os_failures();
        inject_off();
        CHECK(moved >= 0 && released >= 0);
        CHECK(store_ok());
        if (!failed)
            break;
    }

    /* The arena grows back over the released tail: mapping it again (the arena's and
     * the side table's) and committing it fail in turn. */
    int base = S.n;
    unsigned long skip = 0;
    for (;; skip++) {
        inject(OS_MMAP | OS_MPROTECT, skip, 1);
        int refused = fill_to(base + fill_count(), 1);
        unsigned long failed = zs_testonly_os_failures();
        inject_off();
        CHECK_EQ((unsigned long)refused, failed);
        CHECK(store_ok());
        if (!failed)
            break;
        /* Back to the released state for the next point. */
        while (S.n > base)
            zs_free(S.pool, S.h[--S.n]);
        zs_compact(S.pool);
        CHECK(zs_defragment(S.pool) >= 0);
        CHECK(zs_release_arena(S.pool) >= 0);
    }
    CHECK(skip >= 2);
    end_pool();
}

/* ---- compaction and adjacency ---------------------------------------------------- */

static void faults_in_moving(enum zs_layout layout)
{
    for (unsigned long skip = 0;; skip++) {
        new_pool(layout);
        fill_to(fill_count(), 0);
        store_free_some(2, 0);
        store_free_some(3, 2);
        inject(OS_ALL, skip, ULONG_MAX);
        unsigned long freed = zs_compact(S.pool);
        long joined = zs_make_adjacent(S.pool);
        long moved = zs_defragment(S.pool);
        unsigned long failed = zs_testonly_os_failures();
        inject_off();
        (void)freed;
        CHECK(joined >= 0 && moved >= 0);
        CHECK(store_ok());
        /* Growing again after all that works. */
        fill_to(S.n + 300, 0);
        end_pool();
        if (!failed)
            break;
    }
}

/* ---- failures while other threads work ------------------------------------------- */

/*
 * Three threads keep objects of their own (malloc, write, read, map in each mode,
 * free), a fourth compacts, defragments, makes objects adjacent, releases the arena
 * tail and runs the checker, while the main thread turns failures of every OS call on
 * and off (1 to 64 calls, or every one, failing after 0 to 8 let through), for as
 * long as the workers take to do 600 operations each time. A call may fail
 * only with ENOMEM (malloc) or give back less (the movers); every object a thread
 * keeps reads back as written after every step, the checker never complains, and once
 * the failures stop the pool grows again.
 */
enum { TW_THREADS = 3, TW_KEEP = 600 };

static struct zs_pool *tw_pool;
static atomic_int tw_stop;
static atomic_ulong tw_bad, tw_enomem, tw_ops;

struct tw_obj {
    unsigned long h;
    size_t len;
    uint64_t seed;
};

static void tw_bad_at(const char *what, unsigned long h, int e)
{
    if (atomic_fetch_add(&tw_bad, 1) < 10)
        fprintf(stderr, "  %s of %#lx: errno %d\n", what, h, e);
}

static void *tw_worker(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 104729 + 17;
    struct tw_obj objs[TW_KEEP] = {{0, 0, 0}};
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    while (!atomic_load(&tw_stop)) {
        unsigned i = (unsigned)rand_below(&rng, TW_KEEP);
        struct tw_obj *o = &objs[i];
        atomic_fetch_add_explicit(&tw_ops, 1, memory_order_relaxed);
        if (!o->h) {
            size_t len = 1 + rand_below(&rng, ZS_MAX_ALLOC_SIZE);
            errno = 0;
            unsigned long h = zs_malloc(tw_pool, len, 0);
            if (ZS_IS_ERR(h)) {
                if (ZS_ERR(h) == ENOMEM && errno == ENOMEM)
                    atomic_fetch_add_explicit(&tw_enomem, 1, memory_order_relaxed);
                else
                    tw_bad_at("zs_malloc", h, errno);
                continue;
            }
            o->h = h, o->len = len, o->seed = mix64(&rng);
            fill_pattern(buf, len, o->seed);
            if ((errno = 0, zs_obj_write(tw_pool, h, buf, len), errno != 0))
                tw_bad_at("zs_obj_write", h, errno);
            continue;
        }
        unsigned op = (unsigned)rand_below(&rng, 5);
        switch (op) {
        case 0: /* free, and now and then most of the rest, so frames go back */
            if (rand_below(&rng, 300) == 0)
                for (int k = 0; k < TW_KEEP; k++)
                    if (objs[k].h && k != (int)i && k % 8) {
                        errno = 0;
                        zs_free(tw_pool, objs[k].h);
                        if (errno)
                            tw_bad_at("zs_free", objs[k].h, errno);
                        objs[k].h = 0;
                    }
            if ((errno = 0, zs_free(tw_pool, o->h), errno != 0))
                tw_bad_at("zs_free", o->h, errno);
            o->h = 0;
            break;
        case 1: /* read */
            if (!object_ok(tw_pool, o->h, o->len, o->seed))
                tw_bad_at("zs_obj_read_begin", o->h, errno);
            break;
        case 2:
        case 3: { /* rewrite through a read-write (checked first) or write-only mapping */
            int rw = op == 2;
            const char *what = rw ? "zs_map_object(RW)" : "zs_map_object(WO)";
            unsigned char *p = zs_map_object(tw_pool, o->h, rw ? ZS_MM_RW : ZS_MM_WO);
            if (!p || (rw && !pattern_ok(p, o->len, o->seed))) {
                tw_bad_at(what, o->h, errno);
                if (p)
                    zs_unmap_object(tw_pool, o->h);
                break;
            }
            o->seed = mix64(&rng);
            fill_pattern(p, o->len, o->seed);
            if ((errno = 0, zs_unmap_object(tw_pool, o->h), errno != 0))
                tw_bad_at("zs_unmap_object", o->h, errno);
            break;
        }
        default: { /* rewrite with zs_obj_write, then read through a read-only mapping */
            o->seed = mix64(&rng);
            fill_pattern(buf, o->len, o->seed);
            if ((errno = 0, zs_obj_write(tw_pool, o->h, buf, o->len), errno != 0))
                tw_bad_at("zs_obj_write", o->h, errno);
            const unsigned char *p = zs_map_object(tw_pool, o->h, ZS_MM_RO);
            if (!p || !pattern_ok(p, o->len, o->seed))
                tw_bad_at("zs_map_object(RO)", o->h, errno);
            if (p)
                zs_unmap_object(tw_pool, o->h);
            break;
        }
        }
    }
    /* The failures are off now: every object is whole, then freed. */
    for (int i = 0; i < TW_KEEP; i++) {
        if (!objs[i].h)
            continue;
        if (!object_ok(tw_pool, objs[i].h, objs[i].len, objs[i].seed))
            tw_bad_at("final read", objs[i].h, errno);
        if ((errno = 0, zs_free(tw_pool, objs[i].h), errno != 0))
            tw_bad_at("final zs_free", objs[i].h, errno);
    }
    return NULL;
}

static void *tw_mover(void *arg)
{
    (void)arg;
    while (!atomic_load(&tw_stop)) {
        zs_compact(tw_pool);
        if (zs_make_adjacent(tw_pool) < 0)
            tw_bad_at("zs_make_adjacent", 0, errno);
        if (zs_defragment(tw_pool) < 0)
            tw_bad_at("zs_defragment", 0, errno);
        if (zs_release_arena(tw_pool) < 0)
            tw_bad_at("zs_release_arena", 0, errno);
        if (zs_pool_check(tw_pool) != 0)
            tw_bad_at("zs_pool_check", 0, errno);
    }
    return NULL;
}

/* Waits until the workers have done `n` more operations. */
static void tw_wait_ops(unsigned long n)
{
    unsigned long start = atomic_load(&tw_ops);
    struct timespec ts = {0, 100000};
    while (atomic_load(&tw_ops) - start < n)
        nanosleep(&ts, NULL);
}

static void faults_under_threads(enum zs_layout layout)
{
    inject_off();
    tw_pool = test_pool("faults-threads", layout, 0);
    atomic_store(&tw_stop, 0);
    atomic_store(&tw_bad, 0);
    atomic_store(&tw_enomem, 0);
    atomic_store(&tw_ops, 0);
    pthread_t t[TW_THREADS + 1];
    for (int i = 0; i < TW_THREADS; i++)
        pthread_create(&t[i], NULL, tw_worker, (void *)(uintptr_t)(i + 1));
    pthread_create(&t[TW_THREADS], NULL, tw_mover, NULL);
    uint64_t rng = 99 + (uint64_t)layout;
    /* Windows of failures and of none, each as long as a number of the workers'
     * operations (not of time, which valgrind stretches). */
    int rounds = 40;
    unsigned long failures = 0;
    for (int r = 0; r < rounds; r++) {
        inject(OS_ALL, rand_below(&rng, 9), r % 2 ? ULONG_MAX : 1 + rand_below(&rng, 64));
        tw_wait_ops(600);
        /* A window of every call failing fails one at least, whatever the workers
         * needed: pools of the main thread's own, whose first malloc reserves an
         * arena (at large frames the workers may need no OS call for long). */
        for (int k = 0; r % 2 && k < 16 && zs_testonly_os_failures() == 0; k++) {
            struct zs_pool_config cfg = test_config(layout, 0);
            struct zs_pool *own = zs_create_pool_with("faults-own", &cfg);
            if (!own)
                continue;
            unsigned long x = zs_malloc(own, 100, 0);
            if (!ZS_IS_ERR(x))
                zs_free(own, x);
            zs_destroy_pool(own);
        }
        failures += zs_testonly_os_failures();
        inject_off();
        tw_wait_ops(200);
    }
    atomic_store(&tw_stop, 1);
    for (int i = 0; i <= TW_THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&tw_bad), 0);
    CHECK(failures > 0);
    CHECK_EQ(zs_pool_check(tw_pool), 0);
    fprintf(stderr, "  %s layout: %lu OS calls failed, %lu mallocs refused, %lu operations\n",
            layout == ZS_LAYOUT_DENSE ? "dense" : "kernel", failures, atomic_load(&tw_enomem),
            atomic_load(&tw_ops));
    /* Growing again works: every frame back and more. */
    S.pool = tw_pool;
    S.n = 0;
    fill_to(fill_count(), 0);
    end_pool();
    tw_pool = NULL;
}

int main(void)
{
    faults_in_create();
    for (int layout = 0; layout <= 1; layout++) {
        faults_in_growth((enum zs_layout)layout);
        faults_in_giving_back((enum zs_layout)layout);
        faults_in_moving((enum zs_layout)layout);
        /* Not under valgrind, which runs one thread at a time (ASan's run has the
         * threads), nor at 64 KiB frames, where it takes 18 s more for calls that
         * differ from those at 16 KiB only in their sizes. */
        if (!under_valgrind() && test_frame_size() <= 16384)
            faults_under_threads((enum zs_layout)layout);
    }
    inject_off();
    return check_summary();
}
