/*
 * Four threads on one pool: each mallocs, writes, reads (read_begin/end), maps (RO, RW,
 * WO) and frees its own objects, reads a set of shared objects that every thread maps
 * and reads at the same time, and hands objects to the next thread, which verifies and
 * frees them. Every object's bytes are checked all along and once more at the end; the
 * pool's invariants and counters must hold. Run on both layouts: in the kernel's the
 * threads share size classes; in the dense one each allocates in its own lane (shared
 * only when threads outnumber the lanes) and the handed objects are freed into another
 * thread's lane.
 */
#include <pthread.h>

#include "check.h"

enum { THREADS = 4, SLOTS = 256, SHARED = 32, MAILBOX = 64 };

/* The sizes every thread draws from: the same classes (kernel layout), straddling
 * and one-frame objects among them. */
static const size_t sizes[] = {1, 24, 100, 333, 700, 1000, 1500, 2100, 2730, 3000, 3700, 4096};
#define NSIZES (sizeof sizes / sizeof sizes[0])

struct obj {
    unsigned long h;
    size_t size;
    uint64_t seed;
};

/* Objects handed from one thread to the next, under a lock. */
struct mailbox {
    pthread_mutex_t mu;
    struct obj o[MAILBOX];
    int n;
};

static struct zs_pool *pool;
static struct obj shared[SHARED];
static struct mailbox box[THREADS];
static long iterations;

struct worker {
    int id;
    struct obj own[SLOTS];
    unsigned long bad, ops, handed, received, errno_set;
};

/*
 * zs_free returns nothing: a refusal shows in errno and in the misuse counter. Both
 * judge here: misuse_events must stay 0, the live counts must be exact at the end,
 * and a successful free must leave errno alone (README, "API conventions") even when
 * it met a contended lock inside the library.
 */
static void freed(struct worker *w, unsigned long h)
{
    errno = 0;
    zs_free(pool, h);
    w->errno_set += errno != 0;
}

static int obj_ok(const struct obj *o)
{
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    void *p = zs_obj_read_begin(pool, o->h, o->size, local);
    if (!p)
        return 0;
    int ok = pattern_ok(p, o->size, o->seed);
    zs_obj_read_end(pool, o->h, o->size, p);
    return ok;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t rng = 0xC0FFEEull + (uint64_t)w->id * 7919;
    uint64_t next_seed = ((uint64_t)w->id + 1) << 40;
    unsigned char buf[ZS_MAX_ALLOC_SIZE], local[ZS_MAX_ALLOC_SIZE];

    for (long it = 0; it < iterations; it++) {
        struct obj *o = &w->own[rand_below(&rng, SLOTS)];
        unsigned long op = rand_below(&rng, 100);
        w->ops++;
        if (o->h == 0) {
            o->size = sizes[rand_below(&rng, NSIZES)];
            if (o->size == 1 && rand_below(&rng, 2))
                o->size = rand_below(&rng, ZS_MAX_ALLOC_SIZE) + 1;
            o->h = zs_malloc(pool, o->size, 0);
            if (ZS_IS_ERR(o->h)) {
                w->bad++;
                o->h = 0;
                continue;
            }
            o->seed = next_seed++;
            fill_pattern(buf, o->size, o->seed);
            zs_obj_write(pool, o->h, buf, o->size);
        } else if (op < 20) {
            if (!obj_ok(o))
                w->bad++;
        } else if (op < 35) {
            unsigned char *p = zs_map_object(pool, o->h, ZS_MM_RO);
            if (!p || !pattern_ok(p, o->size, o->seed))
                w->bad++;
            if (p)
                zs_unmap_object(pool, o->h);
        } else if (op < 45) {
            unsigned char *p = zs_map_object(pool, o->h, ZS_MM_RW);
            if (!p || !pattern_ok(p, o->size, o->seed))
                w->bad++;
            if (p) {
                o->seed = next_seed++;
                fill_pattern(p, o->size, o->seed);
                zs_unmap_object(pool, o->h);
            }
        } else if (op < 52) {
            unsigned char *p = zs_map_object(pool, o->h, ZS_MM_WO);
            if (!p) {
                w->bad++;
            } else {
                o->seed = next_seed++;
                fill_pattern(p, o->size, o->seed);
                zs_unmap_object(pool, o->h);
            }
        } else if (op < 60) {
            o->seed = next_seed++;
            fill_pattern(buf, o->size, o->seed);
            zs_obj_write(pool, o->h, buf, o->size);
        } else if (op < 72) {
            /* Shared objects: read and mapped read-only by every thread at once. */
            const struct obj *s = &shared[rand_below(&rng, SHARED)];
            if (rand_below(&rng, 2)) {
                if (!obj_ok(s))
                    w->bad++;
            } else {
                unsigned char *p = zs_map_object(pool, s->h, ZS_MM_RO);
                if (!p || !pattern_ok(p, s->size, s->seed))
                    w->bad++;
                if (p)
                    zs_unmap_object(pool, s->h);
            }
        } else if (op < 80) {
            /* Hand the object to the next thread. */
            struct mailbox *mb = &box[(w->id + 1) % THREADS];
            pthread_mutex_lock(&mb->mu);
            if (mb->n < MAILBOX) {
                mb->o[mb->n++] = *o;
                o->h = 0;
                w->handed++;
            }
            pthread_mutex_unlock(&mb->mu);
        } else if (op < 88) {
            /* Take what the previous thread handed over: verify, then free it. */
            struct mailbox *mb = &box[w->id];
            struct obj got[MAILBOX];
            int n;
            pthread_mutex_lock(&mb->mu);
            n = mb->n;
            memcpy(got, mb->o, (size_t)n * sizeof got[0]);
            mb->n = 0;
            pthread_mutex_unlock(&mb->mu);
            for (int i = 0; i < n; i++) {
                if (!obj_ok(&got[i]))
                    w->bad++;
                freed(w, got[i].h);
                w->received++;
            }
        } else {
            /* Verify, then free. */
            void *p = zs_obj_read_begin(pool, o->h, o->size, local);
            if (!p || !pattern_ok(p, o->size, o->seed))
                w->bad++;
            if (p)
                zs_obj_read_end(pool, o->h, o->size, p);
            freed(w, o->h);
            o->h = 0;
        }
    }
    /* Everything this thread still owns, once more. */
    for (int i = 0; i < SLOTS; i++)
        if (w->own[i].h && !obj_ok(&w->own[i]))
            w->bad++;
    return NULL;
}

static void run(enum zs_layout layout)
{
    pool = test_pool("threads", layout, 0);
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    for (int i = 0; i < SHARED; i++) {
        shared[i].size = sizes[i % NSIZES];
        shared[i].seed = 0xABCDEF00ull + (uint64_t)i;
        shared[i].h = zs_malloc(pool, shared[i].size, 0);
        CHECK(!ZS_IS_ERR(shared[i].h));
        fill_pattern(buf, shared[i].size, shared[i].seed);
        zs_obj_write(pool, shared[i].h, buf, shared[i].size);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_mutex_init(&box[t].mu, NULL);
        box[t].n = 0;
    }

    static struct worker w[THREADS];
    memset(w, 0, sizeof w);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t].id = t;
        CHECK_EQ(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    unsigned long ops = 0, handed = 0, received = 0, errno_set = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        if (!CHECK_EQ(w[t].bad, 0))
            fprintf(stderr, "  thread %d, %s layout\n", t, layout == ZS_LAYOUT_KERNEL ? "kernel" : "dense");
        ops += w[t].ops;
        errno_set += w[t].errno_set;
        handed += w[t].handed;
        received += w[t].received;
    }
    CHECK_EQ(errno_set, 0); /* successful frees left errno alone */
    CHECK_EQ(ops, (unsigned long)THREADS * (unsigned long)iterations);
    CHECK(handed > 0 && received > 0);

    /* Every object still alive: its bytes, and the pool's counts. */
    unsigned long live = SHARED, requested = 0, bad = 0;
    for (int i = 0; i < SHARED; i++) {
        requested += shared[i].size;
        bad += !obj_ok(&shared[i]);
    }
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < SLOTS; i++) {
            if (!w[t].own[i].h)
                continue;
            live++;
            requested += w[t].own[i].size;
            bad += !obj_ok(&w[t].own[i]);
        }
        for (int i = 0; i < box[t].n; i++) {
            live++;
            requested += box[t].o[i].size;
            bad += !obj_ok(&box[t].o[i]);
        }
    }
    CHECK_EQ(bad, 0);
    struct zs_pool_info info = pool_info(pool);
    CHECK_EQ(info.live_objects, live);
    CHECK_EQ(info.requested_bytes, requested);
    CHECK_EQ(info.misuse_events, 0);
    CHECK_EQ(info.total_pages, zs_get_total_pages(pool));
    CHECK_EQ(zs_pool_check(pool), 0);

    /* Free everything: nothing is pinned, every frame goes back. */
    for (int i = 0; i < SHARED; i++)
        zs_free(pool, shared[i].h);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < SLOTS; i++)
            if (w[t].own[i].h)
                zs_free(pool, w[t].own[i].h);
        for (int i = 0; i < box[t].n; i++)
            zs_free(pool, box[t].o[i].h);
        pthread_mutex_destroy(&box[t].mu);
    }
    check_emptied_and_destroy(pool, 0);
}

int main(void)
{
    iterations = under_valgrind() ? 4000 : 30000;
    run(ZS_LAYOUT_DENSE);
    run(ZS_LAYOUT_KERNEL);
    return check_summary();
}
