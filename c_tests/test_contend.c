/*
 * Every entry point against every other on the same handles: threads pick handles from
 * one small shared table and free, map (RO, RW, WO), read, write and size them at
 * once, while other threads compact, migrate, check and count the same pool. No call
 * is coordinated with another, so each meets every other on the same object.
 *
 * What must hold, whatever the interleaving:
 * - a handle is freed at most once: of two threads freeing it at once, one succeeds
 *   and the other is refused (EINVAL, or EBUSY while another thread holds it);
 * - what a read or a mapping shows is one whole version of the object (its length
 *   and seed, then that seed's pattern), never a mix of two or another object's bytes;
 * - a refused call fails with EBUSY (held by another access) or EINVAL (freed meanwhile),
 *   nothing else, and changes nothing;
 * - forged handles near the live ones (a bit flipped) are read meanwhile: refused, or a
 *   live object's bytes (a flip may land on another live handle), never a crash or a
 *   sanitizer's report;
 * - zs_pool_check returns 0 every time, and once every thread has stopped the pool
 *   holds exactly as many objects as the table names, each one whole version.
 *
 * Each layout runs for ZS_CONTEND_MS milliseconds (default 1000; 2000 under valgrind,
 * where the threads run one at a time).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "check.h"

enum { SLOTS = 24, WORKERS = 3, HEADER = VERSION_HEADER };

static struct zs_pool *pool;
static atomic_int stop;
/* The shared table: 0 (empty) or a live handle; only a successful free empties a
 * slot, only its malloc fills it. */
static atomic_ulong table[SLOTS];
static atomic_ulong frees_ok, busy, invalid, torn, other_errno, double_free, checks, check_fail;

/* Whether p holds one whole version of an object of `len` bytes. */
static int whole_version(const unsigned char *p, size_t len)
{
    return version_len(p, len) == len;
}

static void refused(int e)
{
    if (e == EBUSY)
        atomic_fetch_add(&busy, 1);
    else if (e == EINVAL)
        atomic_fetch_add(&invalid, 1);
    else
        atomic_fetch_add(&other_errno, 1);
}

static void *worker_main(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 7919 + 1;
    unsigned char buf[ZS_MAX_ALLOC_SIZE], local[ZS_MAX_ALLOC_SIZE];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        unsigned i = (unsigned)rand_below(&rng, SLOTS);
        unsigned long h = atomic_load(&table[i]);
        if (h == 0) {
            size_t len = HEADER + rand_below(&rng, ZS_MAX_ALLOC_SIZE - HEADER + 1);
            unsigned long nh = zs_malloc(pool, len, 0);
            if (ZS_IS_ERR(nh)) {
                refused(ZS_ERR(nh));
                continue;
            }
            fill_version(buf, len, (uint32_t)mix64(&rng));
            zs_obj_write(pool, nh, buf, len);
            unsigned long expect = 0;
            if (!atomic_compare_exchange_strong(&table[i], &expect, nh))
                zs_free(pool, nh);
            continue;
        }
        size_t len = zs_obj_size(pool, h);
        if (len == 0) {
            refused(errno);
            continue;
        }
        void *p;
        unsigned long k = rand_below(&rng, 9);
        switch (k) {
        case 0: /* free, racing the others' frees of the same handle */
            errno = 0;
            zs_free(pool, h);
            if (errno == 0) {
                atomic_fetch_add(&frees_ok, 1);
                unsigned long expect = h;
                /* Only the one successful free of h may empty its slot. */
                if (!atomic_compare_exchange_strong(&table[i], &expect, 0))
                    atomic_fetch_add(&double_free, 1);
            } else {
                refused(errno);
            }
            break;
        case 1:
        case 2:
        case 3:
        case 4: { /* a mapping: read-only (twice as often), read-write, write-only */
            enum zs_mapmode mode = k <= 2 ? ZS_MM_RO : k == 3 ? ZS_MM_RW : ZS_MM_WO;
            p = zs_map_object(pool, h, mode);
            if (!p) {
                refused(errno);
                break;
            }
            if (mode != ZS_MM_WO && !whole_version(p, len))
                atomic_fetch_add(&torn, 1);
            if (mode != ZS_MM_RO) /* a new version */
                fill_version(p, len, (uint32_t)mix64(&rng));
            zs_unmap_object(pool, h);
            break;
        }
        case 5:
        case 6: /* a read */
            p = zs_obj_read_begin(pool, h, len, local);
            if (!p) {
                refused(errno);
                break;
            }
            if (!whole_version(p, len))
                atomic_fetch_add(&torn, 1);
            zs_obj_read_end(pool, h, len, p);
            break;
        case 7: /* a write */
            fill_version(buf, len, (uint32_t)mix64(&rng));
            errno = 0;
            zs_obj_write(pool, h, buf, len);
            if (errno)
                refused(errno);
            break;
        case 8: { /* forged: a bit of a live handle flipped; read and size only */
            unsigned long f = h ^ (1ul << rand_below(&rng, 64));
            p = zs_obj_read_begin(pool, f, HEADER, local);
            if (p)
                zs_obj_read_end(pool, f, HEADER, p);
            (void)zs_obj_size(pool, f);
            break;
        }
        }
    }
    return NULL;
}

static void *maint_main(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        zs_compact(pool);
        zs_make_adjacent(pool);
        zs_defragment(pool);
        zs_release_arena(pool);
    }
    return NULL;
}

static void *checker_main(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        atomic_fetch_add(&checks, 1);
        if (zs_pool_check(pool) != 0)
            atomic_fetch_add(&check_fail, 1);
        struct zs_frame_census c;
        SIZED(c);
        if (zs_frame_census(pool, &c) != 0)
            atomic_fetch_add(&check_fail, 1);
        struct zs_pool_stats st;
        zs_pool_stats(pool, &st);
        (void)pool_info(pool);
    }
    return NULL;
}

static void run(enum zs_layout layout, long ms)
{
    pool = test_pool("contend", layout, 0);
    atomic_store(&stop, 0);
    atomic_ulong *counters[] = {&frees_ok, &busy, &invalid, &torn, &other_errno, &double_free, &checks, &check_fail};
    for (unsigned k = 0; k < sizeof counters / sizeof counters[0]; k++)
        atomic_store(counters[k], 0);
    for (unsigned k = 0; k < SLOTS; k++)
        atomic_store(&table[k], 0);
    pthread_t w[WORKERS], m, c;
    for (uintptr_t k = 0; k < WORKERS; k++)
        pthread_create(&w[k], NULL, worker_main, (void *)(k + 1 + 100 * (uintptr_t)layout));
    pthread_create(&m, NULL, maint_main, NULL);
    pthread_create(&c, NULL, checker_main, NULL);
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
    atomic_store(&stop, 1);
    for (unsigned k = 0; k < WORKERS; k++)
        pthread_join(w[k], NULL);
    pthread_join(m, NULL);
    pthread_join(c, NULL);

    printf("layout %d: %lu frees, %lu busy, %lu invalid, %lu checks\n", (int)layout, atomic_load(&frees_ok),
           atomic_load(&busy), atomic_load(&invalid), atomic_load(&checks));
    CHECK_EQ(atomic_load(&double_free), 0);
    CHECK_EQ(atomic_load(&torn), 0);
    CHECK_EQ(atomic_load(&other_errno), 0);
    CHECK_EQ(atomic_load(&check_fail), 0);
    CHECK(atomic_load(&frees_ok) > 0);
    CHECK(atomic_load(&checks) > 0);

    /* Quiet now: the pool holds exactly the table's objects, each one whole. */
    unsigned long n = 0;
    for (unsigned k = 0; k < SLOTS; k++) {
        unsigned long h = atomic_load(&table[k]);
        if (!h)
            continue;
        n++;
        size_t len = zs_obj_size(pool, h);
        unsigned char local[ZS_MAX_ALLOC_SIZE];
        void *p = zs_obj_read_begin(pool, h, len, local);
        if (CHECK(p != NULL)) {
            CHECK(whole_version(p, len));
            zs_obj_read_end(pool, h, len, p);
        }
    }
    struct zs_pool_info info = pool_info(pool);
    CHECK_EQ(info.live_objects, n);
    CHECK_EQ(zs_pool_check(pool), 0);
    for (unsigned k = 0; k < SLOTS; k++)
        zs_free(pool, atomic_load(&table[k]));
    zs_destroy_pool(pool);
}

int main(void)
{
    const char *v = getenv("ZS_CONTEND_MS");
    long ms = v ? strtol(v, NULL, 10) : getenv("ZS_TEST_VALGRIND") ? 2000 : 1000;
    run(ZS_LAYOUT_DENSE, ms);
    run(ZS_LAYOUT_KERNEL, ms);
    return check_summary();
}
