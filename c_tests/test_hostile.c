/*
 * The misuse suite: every entry point of the C ABI with every kind of bad argument,
 * in both layouts, as a table of rows. A row is one call (one line below); after it
 * the suite checks the errno, that the misuse counters of the pool under test (P), of
 * a second live pool (Q, of the other layout), of the pool the row names if it is
 * neither (X), and of the process's first pool (E, alive throughout) moved by exactly
 * what the row says, the row's own check of what the call returned, that the
 * sentinel objects of P and Q and E's object still read back, and that
 * zs_pool_check returns 0 on every one of them.
 *
 * The rows taking a handle run once per kind of bad handle: 0, 1, ~0, error values,
 * values next to the error range, random values, a freed handle, one whose slot was
 * reused since, every single-bit flip of a live handle, a live handle of Q, handles of
 * destroyed pools. Then sizes, lengths and structs at and past each limit, bad flags
 * and modes, NULL pools, nested mappings, mappings across threads and pools, and the
 * lifetime rows: thousands of pools created and destroyed while older ones live,
 * pools destroyed with mappings and reads open, a new pool at a destroyed pool's
 * address, mappings and reads left open when their thread exits.
 *
 * The address-reuse rows need an allocator that hands a freed block out again soon:
 * ASan's quarantine and valgrind's free queue do not in a run this short. There the
 * rows still check every refusal; `make test-c-native` runs this program without
 * either and then also requires that the new pool got the destroyed pool's address.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#if defined(__SANITIZE_ADDRESS__)
#define ZS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZS_ASAN 1
#endif
#endif
#ifndef ZS_ASAN
#define ZS_ASAN 0
#endif

/* Whether freed memory comes back soon: no ASan, no valgrind. */
static int addresses_reused(void)
{
    return !ZS_ASAN && !under_valgrind();
}

/* ---- the pools, their sentinels ------------------------------------------------- */

enum { NSENT = 20 };

struct side {
    struct zs_pool *pool;
    unsigned long h[NSENT];
    size_t size[NSENT];
    uint64_t seed[NSENT];
};

static struct side SP, SQ;
/* The pool under test, the second pool, and the pool a row names besides them. */
#define P (SP.pool)
#define Q (SQ.pool)
static struct zs_pool *X;
/* The first pool this process created: it lives until the end. */
static struct zs_pool *ELDER;
static unsigned long ELDER_H;

static unsigned long new_object(struct zs_pool *pool, size_t size, uint64_t seed)
{
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    unsigned long h = zs_malloc(pool, size, 0);
    if (!CHECK(!ZS_IS_ERR(h)))
        exit(2);
    fill_pattern(buf, size, seed);
    zs_obj_write(pool, h, buf, size);
    return h;
}

static void sentinels_make(struct side *s, uint64_t base)
{
    static const size_t sizes[] = {1, 100, 3000, 500, 4096, 2500, 64, 1234, 3600, 33};
    for (int i = 0; i < NSENT; i++) {
        s->size[i] = sizes[i % 10];
        s->seed[i] = base + (uint64_t)i;
        s->h[i] = new_object(s->pool, s->size[i], s->seed[i]);
    }
}

static int sentinels_ok(const struct side *s)
{
    for (int i = 0; i < NSENT; i++)
        if (!object_ok(s->pool, s->h[i], s->size[i], s->seed[i]))
            return 0;
    return 1;
}

static void sentinels_free(struct side *s)
{
    for (int i = 0; i < NSENT; i++)
        zs_free(s->pool, s->h[i]);
}

/* Whether h is a live handle of P that the suite made (a bit flip may land on one). */
static unsigned long KNOWN[NSENT + 16];
static int NKNOWN;

static int known(unsigned long h)
{
    for (int i = 0; i < NKNOWN; i++)
        if (KNOWN[i] == h)
            return 1;
    return 0;
}

/* Bytes a caller may use in an object of `size` bytes in `pool`. */
static size_t usable_of(struct zs_pool *pool, size_t size)
{
    struct zs_class_info ci;
    if (pool_is_dense(pool))
        return size;
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, (unsigned int)size), &ci), 0);
    /* The kernel's 8-byte handle header, in every class but those of one object a
     * zspage (the huge class; above a page, those of one object over several frames). */
    return ci.class_size - (ci.objs_per_zspage == 1 ? 0 : 8);
}

/* ---- rows ----------------------------------------------------------------------- */

/* What rows name: a handle, buffers, and the values calls return. */
static unsigned long H;
static const char *HNAME = "";
static unsigned char L[2 * ZS_MAX_ALLOC_SIZE];
static unsigned char BUF[2 * ZS_MAX_ALLOC_SIZE];
static void *RP;
static unsigned long RH;
static int RC;
static long RL;
static size_t RS;
static unsigned int RU;
static unsigned long ROWS;

static unsigned long misuse_of(struct zs_pool *pool)
{
    return pool ? misuse_count(pool) : 0;
}

/* Whether every byte of buf[0, n) is v. */
static int all_bytes(const void *buf, size_t n, unsigned char v)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

/* Misuse counted in ELDER so far, by the rows. */
static unsigned long ELDER_MISUSE;

static void row_done(int line, const char *stmt, int err_seen, int err, const unsigned long moved[4],
                     const unsigned long want[4], int res_ok)
{
    static const char *names[4] = {"P", "Q", "X", "E"};
    unsigned long failed = atomic_load(&check_failed_);
    ROWS++;
    ELDER_MISUSE += moved[3];
    CHECK_EQ(err_seen, err);
    for (int i = 0; i < 4; i++)
        if (!CHECK_EQ(moved[i], want[i]))
            fprintf(stderr, "  misuse events of %s\n", names[i]);
    CHECK(res_ok);
    CHECK(sentinels_ok(&SP));
    CHECK(sentinels_ok(&SQ));
    CHECK(object_ok(ELDER, ELDER_H, 100, 1));
    CHECK_EQ(zs_pool_check(P), 0);
    CHECK_EQ(zs_pool_check(Q), 0);
    CHECK_EQ(zs_pool_check(ELDER), 0);
    if (X)
        CHECK_EQ(zs_pool_check(X), 0);
    if (atomic_load(&check_failed_) != failed)
        fprintf(stderr, "  row at line %d [%s, handle %s = %#lx]: %s\n", line, pool_is_dense(P) ? "dense" : "kernel",
                HNAME, H, stmt);
}

/*
 * ROW4(errno, misuse in P, in Q, in X, in E, statement, check of the result), and
 * shorthands: ROW for rows counting only in P and Q, XROW only in X, EROW only in E.
 */
#define ROW4(err, dp, dq, dx, de, stmt, res)                                                                   \
    do {                                                                                                       \
        struct zs_pool *pools_[4] = {P, Q, X, ELDER};                                                          \
        unsigned long before_[4], moved_[4], want_[4] = {(dp), (dq), (dx), (de)};                             \
        for (int i_ = 0; i_ < 4; i_++)                                                                         \
            before_[i_] = misuse_of(pools_[i_]);                                                               \
        errno = 0;                                                                                             \
        stmt;                                                                                                  \
        int e_ = errno;                                                                                        \
        int r_ = !!(res);                                                                                      \
        for (int i_ = 0; i_ < 4; i_++)                                                                         \
            moved_[i_] = misuse_of(pools_[i_]) - before_[i_];                                                  \
        row_done(__LINE__, #stmt, e_, (err), moved_, want_, r_);                                               \
    } while (0)
#define ROW(err, dp, dq, stmt, res) ROW4(err, dp, dq, 0, 0, stmt, res)
#define XROW(err, dx, stmt, res) ROW4(err, 0, 0, dx, 0, stmt, res)
#define EROW(err, de, stmt, res) ROW4(err, 0, 0, 0, de, stmt, res)

/* ---- a thread that runs calls on request ---------------------------------------- */

enum wop { W_NONE, W_MAP, W_UNMAP, W_READ_BEGIN, W_READ_END, W_FREE, W_EXIT };

struct worker {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    enum wop op;
    int done;
    struct zs_pool *pool;
    unsigned long h;
    size_t len;
    int mode;
    void *ptr;
    void *ret;
    int err;
    unsigned char local[ZS_MAX_ALLOC_SIZE];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->op == W_NONE)
            pthread_cond_wait(&w->cv, &w->mu);
        enum wop op = w->op;
        pthread_mutex_unlock(&w->mu);
        errno = 0;
        void *ret = NULL;
        switch (op) {
        case W_MAP:
            ret = zs_map_object(w->pool, w->h, (enum zs_mapmode)w->mode);
            break;
        case W_UNMAP:
            zs_unmap_object(w->pool, w->h);
            break;
        case W_READ_BEGIN:
            ret = zs_obj_read_begin(w->pool, w->h, w->len, w->local);
            break;
        case W_READ_END:
            zs_obj_read_end(w->pool, w->h, w->len, w->ptr);
            break;
        case W_FREE:
            zs_free(w->pool, w->h);
            break;
        default:
            break;
        }
        int err = errno;
        pthread_mutex_lock(&w->mu);
        w->ret = ret;
        w->err = err;
        w->op = W_NONE;
        w->done = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        if (op == W_EXIT)
            return NULL;
    }
}

static void worker_start(struct worker *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->th, NULL, worker_main, w) != 0)
        exit(2);
}

/* Runs one call on the worker; sets errno to the worker's and returns its result. */
static void *worker_do(struct worker *w, enum wop op, struct zs_pool *pool, unsigned long h, size_t len, int mode,
                       void *ptr)
{
    pthread_mutex_lock(&w->mu);
    w->op = op, w->pool = pool, w->h = h, w->len = len, w->mode = mode, w->ptr = ptr, w->done = 0;
    pthread_cond_broadcast(&w->cv);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    void *ret = w->ret;
    int err = w->err;
    pthread_mutex_unlock(&w->mu);
    if (op == W_EXIT) {
        /* The thread's exit, with its thread-local destructors, is over once joined. */
        pthread_join(w->th, NULL);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
    }
    errno = err;
    return ret;
}

/* ---- NULL pools ----------------------------------------------------------------- */

static void rows_null_pool(void)
{
    struct zs_pool_stats st = {7};
    struct zs_pool_info info;
    struct zs_class_info ci;
    struct zs_frame_census census;
    SIZED(info), SIZED(ci), SIZED(census);
    H = SP.h[0], HNAME = "a sentinel of P";

    ROW(EINVAL, 0, 0, RH = zs_malloc(NULL, 100, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    ROW(EINVAL, 0, 0, zs_free(NULL, H), 1);
    ROW(EINVAL, 0, 0, zs_free(NULL, 0), 1);
    ROW(EINVAL, 0, 0, RP = zs_obj_read_begin(NULL, H, 10, L), RP == NULL);
    ROW(EINVAL, 0, 0, zs_obj_read_end(NULL, H, 10, L), 1);
    ROW(EINVAL, 0, 0, zs_obj_write(NULL, H, BUF, 10), 1);
    ROW(EINVAL, 0, 0, RP = zs_map_object(NULL, H, ZS_MM_RW), RP == NULL);
    ROW(EINVAL, 0, 0, zs_unmap_object(NULL, H), 1);
    ROW(EINVAL, 0, 0, RH = zs_compact(NULL), RH == 0);
    ROW(EINVAL, 0, 0, RL = zs_defragment(NULL), RL == -EINVAL);
    ROW(EINVAL, 0, 0, RL = zs_release_arena(NULL), RL == -EINVAL);
    ROW(EINVAL, 0, 0, RL = zs_make_adjacent(NULL), RL == -EINVAL);
    ROW(EINVAL, 0, 0, RC = zs_frame_census(NULL, &census), RC == -EINVAL && census.top == 0);
    ROW(EINVAL, 0, 0, RH = zs_get_total_pages(NULL), RH == 0);
    ROW(EINVAL, 0, 0, RS = zs_huge_class_size(NULL), RS == 0);
    ROW(EINVAL, 0, 0, RU = zs_lookup_class_index(NULL, 100), RU == UINT_MAX);
    ROW(EINVAL, 0, 0, zs_pool_stats(NULL, &st), st.pages_compacted == 7);
    ROW(EINVAL, 0, 0, RC = zs_pool_info(NULL, &info), RC == -EINVAL && info.live_objects == 0);
    ROW(EINVAL, 0, 0, RC = zs_class_info(NULL, 0, &ci), RC == -EINVAL && ci.class_size == 0);
    ROW(EINVAL, 0, 0, RC = zs_pool_check(NULL), RC == -EINVAL);
    ROW(0, 0, 0, zs_destroy_pool(NULL), 1);
}

/* ---- every call that takes a handle, with one bad handle ------------------------ */

static void rows_bad_handle(unsigned long h, const char *name)
{
    H = h, HNAME = name;
    /* 0 and error handles are no-ops for zs_free, as in the kernel; nothing else is. */
    int noop = h == 0 || ZS_IS_ERR(h);
    memset(L, 0x5A, sizeof L);
    memset(BUF, 0xA5, sizeof BUF);

    ROW(noop ? 0 : EINVAL, noop ? 0 : 1, 0, zs_free(P, H), 1);
    ROW(EINVAL, 1, 0, RP = zs_obj_read_begin(P, H, 16, L), RP == NULL && all_bytes(L, sizeof L, 0x5A));
    ROW(EINVAL, 1, 0, RP = zs_obj_read_begin(P, H, 1, NULL), RP == NULL);
    ROW(EINVAL, 1, 0, RP = zs_obj_read_begin(P, H, 0, L), RP == NULL);
    ROW(EINVAL, 1, 0, zs_obj_read_end(P, H, 16, L), 1);
    ROW(EINVAL, 1, 0, zs_obj_read_end(P, H, 0, NULL), 1);
    ROW(EINVAL, 1, 0, zs_obj_write(P, H, BUF, 16), 1);
    ROW(EINVAL, 1, 0, zs_obj_write(P, H, BUF, ZS_MAX_ALLOC_SIZE), 1);
    ROW(EINVAL, 1, 0, zs_obj_write(P, H, NULL, 0), 1);
    ROW(EINVAL, 1, 0, RP = zs_map_object(P, H, ZS_MM_RW), RP == NULL);
    ROW(EINVAL, 1, 0, RP = zs_map_object(P, H, ZS_MM_RO), RP == NULL);
    ROW(EINVAL, 1, 0, RP = zs_map_object(P, H, ZS_MM_WO), RP == NULL);
    /* A bad mode is refused before the handle is looked at: a bad argument, no misuse. */
    ROW(EINVAL, 0, 0, RP = zs_map_object(P, H, (enum zs_mapmode)3), RP == NULL);
    ROW(EINVAL, 1, 0, zs_unmap_object(P, H), 1);
}

static void rows_bad_handles(void)
{
    uint64_t rng = 0x5EED0000u + (uint64_t)pool_is_dense(P);
    unsigned long live = new_object(P, 200, 11);
    unsigned long freed = new_object(P, 200, 12);
    zs_free(P, freed);
    unsigned long stale = new_object(P, 300, 13);
    zs_free(P, stale);
    unsigned long reuser = new_object(P, 300, 14); /* most likely in stale's slot */
    NKNOWN = 0;
    for (int i = 0; i < NSENT; i++)
        KNOWN[NKNOWN++] = SP.h[i];
    KNOWN[NKNOWN++] = live;
    KNOWN[NKNOWN++] = reuser;

    struct zs_pool *gone = test_pool("hostile-gone", pool_is_dense(P) ? ZS_LAYOUT_DENSE : ZS_LAYOUT_KERNEL, 0);
    unsigned long dead = new_object(gone, 200, 15);
    unsigned long dead_mapped = new_object(gone, 200, 16);
    CHECK(zs_map_object(gone, dead_mapped, ZS_MM_RW) != NULL);
    zs_destroy_pool(gone);

    struct {
        const char *name;
        unsigned long h;
    } kinds[] = {
        {"0", 0},
        {"1", 1},
        {"2", 2},
        {"~0", ~0ul},
        {"-ENOMEM", (unsigned long)-ENOMEM},
        {"-4095", (unsigned long)-4095},
        {"-4096 (below the error range)", (unsigned long)-4096},
        {"2^48", 1ul << 48},
        {"2^63", 1ul << 63},
        {"P's tag, index 0", live & ~0xFFFFFFFFul},
        {"P's tag, past the table", live | 0xFFFFFFFFul},
        {"P's tag, the next generation", live + (1ul << 32)},
        {"P's tag, the previous generation", live - (1ul << 32)},
        {"freed", freed},
        {"freed, slot reused", stale},
        {"a live handle of Q", SQ.h[1]},
        {"a handle of a destroyed pool", dead},
        {"a handle mapped when its pool was destroyed", dead_mapped},
        {"the elder pool's live handle", ELDER_H},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        rows_bad_handle(kinds[k].h, kinds[k].name);

    char name[64];
    int tried = 0;
    for (int i = 0; i < 12; i++) {
        unsigned long v = (unsigned long)mix64(&rng);
        if (known(v))
            continue;
        snprintf(name, sizeof name, "random %d", i);
        rows_bad_handle(v, name);
        tried++;
    }
    for (int bit = 0; bit < 64; bit++) {
        unsigned long v = live ^ (1ul << bit);
        if (known(v))
            continue;
        snprintf(name, sizeof name, "live handle, bit %d flipped", bit);
        rows_bad_handle(v, name);
        tried++;
    }
    CHECK(tried >= 70);
    CHECK(object_ok(P, live, 200, 11));
    CHECK(object_ok(P, reuser, 300, 14));
    zs_free(P, live);
    zs_free(P, reuser);
    /* The pool's misuse of dead_mapped: ending it on P is an unmatched end (above). */
}

/* ---- sizes, lengths, flags, modes, structs -------------------------------------- */

static void rows_malloc_limits(void)
{
    H = 0, HNAME = "none";
    ROW(EINVAL, 0, 0, RH = zs_malloc(P, 0, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    ROW(ENOSPC, 0, 0, RH = zs_malloc(P, ZS_MAX_ALLOC_SIZE + 1, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(ENOSPC, 0, 0, RH = zs_malloc(P, (size_t)1 << 32, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(ENOSPC, 0, 0, RH = zs_malloc(P, ((size_t)1 << 32) + 100, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(ENOSPC, 0, 0, RH = zs_malloc(P, (size_t)1 << 63, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(ENOSPC, 0, 0, RH = zs_malloc(P, SIZE_MAX, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(EINVAL, 0, 0, RH = zs_malloc(P, 100, 2), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    ROW(EINVAL, 0, 0, RH = zs_malloc(P, 100, ZS_ALLOC_NOGROW | 0x100), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    ROW(EINVAL, 0, 0, RH = zs_malloc(P, 100, 0x80000000u), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    ROW(EINVAL, 0, 0, RH = zs_malloc(P, 100, UINT_MAX), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    ROW(EINVAL, 0, 0, RH = zs_malloc(P, 0, 2), ZS_IS_ERR(RH) && ZS_ERR(RH) == EINVAL);
    /* At the limits: accepted. */
    ROW(0, 0, 0, RH = zs_malloc(P, ZS_MAX_ALLOC_SIZE, 0), !ZS_IS_ERR(RH));
    ROW(0, 0, 0, zs_free(P, RH), 1);
    ROW(0, 0, 0, RH = zs_malloc(P, 1, 0), !ZS_IS_ERR(RH));
    ROW(0, 0, 0, zs_free(P, RH), 1);
    ROW(0, 0, 0, RH = zs_malloc(P, 1, ZS_ALLOC_NOGROW), !ZS_IS_ERR(RH) || ZS_ERR(RH) == ENOMEM);
    if (!ZS_IS_ERR(RH))
        ROW(0, 0, 0, zs_free(P, RH), 1);

    ROW(EINVAL, 0, 0, RU = zs_lookup_class_index(P, 0), RU == UINT_MAX);
    ROW(EINVAL, 0, 0, RU = zs_lookup_class_index(P, ZS_MAX_ALLOC_SIZE + 1), RU == UINT_MAX);
    ROW(EINVAL, 0, 0, RU = zs_lookup_class_index(P, UINT_MAX), RU == UINT_MAX);
    ROW(0, 0, 0, RU = zs_lookup_class_index(P, ZS_MAX_ALLOC_SIZE), RU != UINT_MAX);
    ROW(0, 0, 0, RU = zs_lookup_class_index(P, 1), RU != UINT_MAX);
}

static void rows_lengths(void)
{
    static const size_t sizes[] = {1, 100, 500, 3000, 4096};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t size = sizes[k];
        size_t u = usable_of(P, size);
        uint64_t seed = 700 + k;
        unsigned long h = new_object(P, size, seed);
        H = h, HNAME = "a live object";
        fill_pattern(BUF, sizeof BUF, seed + 1);

        /* write: at the limit, then past it (refused, nothing copied). */
        ROW(0, 0, 0, zs_obj_write(P, h, BUF, u), object_ok(P, h, u, seed + 1));
        ROW(EINVAL, 1, 0, zs_obj_write(P, h, L, u + 1), object_ok(P, h, u, seed + 1));
        ROW(EINVAL, 1, 0, zs_obj_write(P, h, L, ZS_MAX_ALLOC_SIZE + 1), object_ok(P, h, u, seed + 1));
        ROW(EINVAL, 1, 0, zs_obj_write(P, h, L, SIZE_MAX), object_ok(P, h, u, seed + 1));
        ROW(EINVAL, 1, 0, zs_obj_write(P, h, NULL, 1), object_ok(P, h, u, seed + 1));
        ROW(0, 0, 0, zs_obj_write(P, h, NULL, 0), object_ok(P, h, u, seed + 1));
        ROW(0, 0, 0, zs_obj_write(P, h, L, 0), object_ok(P, h, u, seed + 1));

        /* read_begin past the limit: NULL, nothing copied, nothing begun. */
        memset(L, 0x11, sizeof L);
        ROW(EINVAL, 1, 0, RP = zs_obj_read_begin(P, h, u + 1, L), RP == NULL && all_bytes(L, sizeof L, 0x11));
        ROW(EINVAL, 1, 0, RP = zs_obj_read_begin(P, h, SIZE_MAX, L), RP == NULL && all_bytes(L, sizeof L, 0x11));
        ROW(EINVAL, 1, 0, RP = zs_obj_read_begin(P, h, (size_t)1 << 32, L), RP == NULL);
        ROW(0, 0, 0, zs_free(P, new_object(P, size, 1)), 1);

        /* read_end must name the read as begun: the same length and pointer. */
        ROW(0, 0, 0, RP = zs_obj_read_begin(P, h, u, L), RP != NULL && pattern_ok(RP, u, seed + 1));
        void *r = RP;
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, u + 1, r), 1);
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, u - 1, r), 1);
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, SIZE_MAX, r), 1);
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, u, NULL), 1);
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, u, (unsigned char *)r + 1), 1);
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, SP.h[0], u, r), 1);
        ROW(EBUSY, 1, 0, zs_free(P, h), 1);
        ROW(0, 0, 0, zs_obj_read_end(P, h, u, r), 1);
        ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, u, r), 1);
        ROW(0, 0, 0, zs_free(P, h), 1);
    }
}

static void rows_structs(void)
{
    H = 0, HNAME = "none";
    /* Extension structs: NULL and a size below sizeof(size_t) are refused and leave the
     * struct alone; a short size is filled only that far; a longer one only as far as
     * this library's struct. */
    union {
        struct zs_pool_info info;
        unsigned char raw[sizeof(struct zs_pool_info) + 64];
    } u;
    memset(&u, 0xC3, sizeof u);
    u.info.size = 0;
    ROW(EINVAL, 0, 0, RC = zs_pool_info(P, NULL), RC == -EINVAL);
    ROW(EINVAL, 0, 0, RC = zs_pool_info(P, &u.info), RC == -EINVAL && all_bytes(u.raw + 8, sizeof u - 8, 0xC3));
    u.info.size = 7;
    ROW(EINVAL, 0, 0, RC = zs_pool_info(P, &u.info), RC == -EINVAL && all_bytes(u.raw + 8, sizeof u - 8, 0xC3));
    u.info.size = 8;
    ROW(0, 0, 0, RC = zs_pool_info(P, &u.info), RC == 0 && all_bytes(u.raw + 8, sizeof u - 8, 0xC3));
    u.info.size = 16;
    ROW(0, 0, 0, RC = zs_pool_info(P, &u.info),
        RC == 0 && u.info.live_objects == NSENT && all_bytes(u.raw + 16, sizeof u - 16, 0xC3));
    u.info.size = sizeof u;
    ROW(0, 0, 0, RC = zs_pool_info(P, &u.info),
        RC == 0 && all_bytes(u.raw + sizeof u.info, sizeof u - sizeof u.info, 0xC3));
    u.info.size = SIZE_MAX; /* claims more than there is: still only this library's struct */
    ROW(0, 0, 0, RC = zs_pool_info(P, &u.info), RC == 0 && u.raw[sizeof u - 1] == 0xC3);

    struct zs_class_info ci;
    SIZED(ci);
    ROW(EINVAL, 0, 0, RC = zs_class_info(P, 0, NULL), RC == -EINVAL);
    ROW(EINVAL, 0, 0, RC = zs_class_info(P, UINT_MAX, &ci), RC == -EINVAL && ci.class_size == 0);
    ROW(EINVAL, 0, 0, RC = zs_class_info(P, 256, &ci), RC == -EINVAL && ci.class_size == 0);
    ROW(EINVAL, 0, 0, RC = zs_class_info(P, 4096, &ci), RC == -EINVAL && ci.class_size == 0);
    ci.size = 3;
    ROW(EINVAL, 0, 0, RC = zs_class_info(P, zs_lookup_class_index(P, 100), &ci), RC == -EINVAL && ci.class_size == 0);
    ci.size = sizeof ci;
    ROW(0, 0, 0, RC = zs_class_info(P, zs_lookup_class_index(P, 100), &ci), RC == 0 && ci.class_size >= 100);

    struct zs_frame_census census;
    memset(&census, 0, sizeof census);
    ROW(EINVAL, 0, 0, RC = zs_frame_census(P, NULL), RC == -EINVAL);
    ROW(EINVAL, 0, 0, RC = zs_frame_census(P, &census), RC == -EINVAL && census.top == 0);
    census.size = sizeof census;
    ROW(0, 0, 0, RC = zs_frame_census(P, &census), RC == 0 && census.top > 0);
    ROW(EINVAL, 0, 0, zs_pool_stats(P, NULL), 1);

    /* Configurations: every field past its limit. */
    struct zs_pool_config cfg;
    struct zs_pool *made = NULL;
#define CFG(field, value) (cfg = test_config(ZS_LAYOUT_DENSE, 0), cfg.max_pages = 256, cfg.field = (value), &cfg)
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(size, 0)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(size, 7)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(chain_size, 1)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(chain_size, 3)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(chain_size, 17)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(chain_size, UINT_MAX)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(layout, (enum zs_layout)2)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(layout, (enum zs_layout)-1)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(max_pages, (1ul << 28) + 1)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(max_pages, ULONG_MAX)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(auto_compact_interval_ms, 3600001)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(prefault, 2)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(prefault, UINT_MAX)), made == NULL);
    /* At the limits: accepted. */
    ROW(0, 0, 0, made = zs_create_pool_with(NULL, CFG(chain_size, 16)), made != NULL);
    ROW(0, 0, 0, zs_destroy_pool(made), 1);
    ROW(0, 0, 0, made = zs_create_pool_with("", CFG(chain_size, 4)), made != NULL);
    ROW(0, 0, 0, zs_destroy_pool(made), 1);
    ROW(0, 0, 0, made = zs_create_pool_with("ok", CFG(max_pages, 1)), made != NULL);
    ROW(0, 0, 0, zs_destroy_pool(made), 1);
#undef CFG
    /* A pool destroyed twice: the second is refused, nothing else touched. */
    ROW(0, 0, 0, made = test_pool("twice", ZS_LAYOUT_DENSE, 0), made != NULL);
    ROW(0, 0, 0, zs_destroy_pool(made), 1);
    ROW(EINVAL, 0, 0, zs_destroy_pool(made), 1);
}

/* ---- objects larger than a page: the pool's limit -------------------------------- */

/* Whether large object h of pool X holds the first len bytes of seed's pattern. */
static int large_ok(unsigned long h, size_t len, uint64_t seed)
{
    static unsigned char want[65536], local[65536];
    fill_pattern(want, len, seed);
    void *p = zs_obj_read_begin(X, h, len, local);
    if (!p)
        return 0;
    int ok = memcmp(p, want, len) == 0;
    zs_obj_read_end(X, h, len, p);
    return ok;
}

static void rows_large(enum zs_layout layout)
{
    static unsigned char big[65537], local[65537];
    struct zs_pool_config cfg;
    struct zs_pool *made = NULL;
#define CFG(value) (cfg = test_config(layout, 0), cfg.max_object_size = (value), &cfg)
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(65537)), made == NULL);
    ROW(EINVAL, 0, 0, made = zs_create_pool_with("bad", CFG(UINT_MAX)), made == NULL);
    ROW(0, 0, 0, made = zs_create_pool_with("ok", CFG(65536)), made != NULL);
    ROW(0, 0, 0, RH = zs_malloc(made, 65536, 0), !ZS_IS_ERR(RH));
    ROW(ENOSPC, 0, 0, RH = zs_malloc(made, 65537, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(0, 0, 0, zs_destroy_pool(made), 1);
    ROW(0, 0, 0, X = zs_create_pool_with("large", CFG(20000)), X != NULL);
#undef CFG
    struct zs_pool_info info;
    SIZED(info);
    ROW(0, 0, 0, RC = zs_pool_info(X, &info), RC == 0 && info.max_object_size == 20000);
    ROW(ENOSPC, 0, 0, RH = zs_malloc(X, 20001, 0), ZS_IS_ERR(RH) && ZS_ERR(RH) == ENOSPC);
    ROW(EINVAL, 0, 0, RU = zs_lookup_class_index(X, 20001), RU == UINT_MAX);
    ROW(0, 0, 0, RU = zs_lookup_class_index(X, 20000), RU != UINT_MAX);
    ROW(0, 0, 0, RH = zs_malloc(X, 20000, 0), !ZS_IS_ERR(RH));
    unsigned long h = RH;
    size_t u = usable_of(X, 20000);
    H = h, HNAME = "a large object";
    fill_pattern(big, u, 900);
    ROW(0, 0, 0, zs_obj_write(X, h, big, u), large_ok(h, u, 900));
    /* A length beyond the object: refused, counted, nothing copied either way. */
    XROW(EINVAL, 1, zs_obj_write(X, h, big, u + 1), large_ok(h, u, 900));
    XROW(EINVAL, 1, zs_obj_write(X, h, big, 65537), large_ok(h, u, 900));
    memset(local, 0x11, sizeof local);
    XROW(EINVAL, 1, RP = zs_obj_read_begin(X, h, u + 1, local), RP == NULL && all_bytes(local, sizeof local, 0x11));
    ROW(0, 0, 0, RP = zs_obj_read_begin(X, h, u, local), RP != NULL);
    XROW(EINVAL, 1, zs_obj_read_end(X, h, u + 1, RP), 1);
    ROW(0, 0, 0, zs_obj_read_end(X, h, u, RP), large_ok(h, u, 900));
    /* A whole-object mapping, written through and stored back. */
    ROW(0, 0, 0, RP = zs_map_object(X, h, ZS_MM_RW), RP != NULL && memcmp(RP, big, u) == 0);
    ((unsigned char *)RP)[u - 1] ^= 0xff;
    ROW(0, 0, 0, zs_unmap_object(X, h), 1);
    big[u - 1] ^= 0xff;
    ROW(0, 0, 0, RP = zs_obj_read_begin(X, h, u, local), RP != NULL && memcmp(RP, big, u) == 0);
    ROW(0, 0, 0, zs_obj_read_end(X, h, u, RP), 1);
    ROW(0, 0, 0, RC = zs_pool_check(X), RC == 0);
    ROW(0, 0, 0, zs_free(X, h), 1);
    made = X, X = NULL; /* the rows count X's misuse: not once it is gone */
    ROW(0, 0, 0, zs_destroy_pool(made), 1);
}

/* ---- nested mappings, other threads, other pools ------------------------------- */

static void rows_nesting(void)
{
    enum { N = 40 };
    unsigned long h = new_object(P, 1000, 800);
    size_t u = usable_of(P, 1000);
    H = h, HNAME = "a live object";
    void *a, *b, *RP2;

    /* The same object mapped twice on one thread, and read meanwhile: readers share it. */
    ROW(0, 0, 0, a = zs_map_object(P, h, ZS_MM_RO), a != NULL && pattern_ok(a, 1000, 800));
    ROW(0, 0, 0, b = zs_map_object(P, h, ZS_MM_RO), b != NULL && pattern_ok(b, 1000, 800));
    ROW(0, 0, 0, RP = zs_obj_read_begin(P, h, 1000, L), RP != NULL && pattern_ok(RP, 1000, 800));
    /* Beside readers a writer is refused at once, this thread's own too: not misuse,
     * and nothing is written. */
    fill_pattern(BUF, 1000, 801);
    ROW(EBUSY, 0, 0, RP2 = zs_map_object(P, h, ZS_MM_RW), RP2 == NULL);
    ROW(EBUSY, 0, 0, RP2 = zs_map_object(P, h, ZS_MM_WO), RP2 == NULL);
    ROW(EBUSY, 0, 0, zs_obj_write(P, h, BUF, 1000), pattern_ok(a, 1000, 800) && object_ok(P, h, 1000, 800));
    ROW(EBUSY, 1, 0, zs_free(P, h), 1);
    ROW(0, 0, 0, zs_obj_read_end(P, h, 1000, RP), 1);
    ROW(0, 0, 0, zs_unmap_object(P, h), 1);
    ROW(0, 0, 0, zs_unmap_object(P, h), object_ok(P, h, 1000, 800));
    ROW(EINVAL, 1, 0, zs_unmap_object(P, h), 1);

    /* A writable mapping holds its object alone: a second mapping of any mode, a read
     * and a write are refused, this thread's own too, not counted as misuse, and
     * nothing changes; what the mapping holds is stored at its unmap. */
    ROW(0, 0, 0, b = zs_map_object(P, h, ZS_MM_RW), b != NULL && pattern_ok(b, 1000, 800));
    ROW(EBUSY, 0, 0, RP2 = zs_map_object(P, h, ZS_MM_RW), RP2 == NULL);
    ROW(EBUSY, 0, 0, RP2 = zs_map_object(P, h, ZS_MM_WO), RP2 == NULL);
    ROW(EBUSY, 0, 0, RP2 = zs_map_object(P, h, ZS_MM_RO), RP2 == NULL);
    memset(L, 0x5A, 1000);
    ROW(EBUSY, 0, 0, RP2 = zs_obj_read_begin(P, h, 1000, L), RP2 == NULL && all_bytes(L, 1000, 0x5A));
    ROW(EBUSY, 0, 0, zs_obj_write(P, h, BUF, 1000), pattern_ok(b, 1000, 800));
    ROW(EBUSY, 1, 0, zs_free(P, h), pattern_ok(b, 1000, 800));
    fill_pattern(b, 1000, 801);
    ROW(0, 0, 0, zs_unmap_object(P, h), object_ok(P, h, 1000, 801));
    ROW(EINVAL, 1, 0, zs_unmap_object(P, h), 1);
    fill_pattern(BUF, 1000, 800);
    ROW(0, 0, 0, zs_obj_write(P, h, BUF, 1000), object_ok(P, h, 1000, 800));

    /* Many objects mapped at once, ended in another order. */
    unsigned long hs[N];
    void *ms[N];
    for (int i = 0; i < N; i++) {
        hs[i] = new_object(P, 64 + 97 * (size_t)i, 900 + (uint64_t)i);
        ROW(0, 0, 0, ms[i] = zs_map_object(P, hs[i], i % 2 ? ZS_MM_RW : ZS_MM_RO), ms[i] != NULL);
    }
    for (int i = 0; i < N; i++) {
        int j = (i * 7) % N;
        CHECK(pattern_ok(ms[j], 64 + 97 * (size_t)j, 900 + (uint64_t)j));
        ROW(0, 0, 0, zs_unmap_object(P, hs[j]), 1);
        ROW(EINVAL, 1, 0, zs_unmap_object(P, hs[j]), 1);
    }
    for (int i = 0; i < N; i++)
        ROW(0, 0, 0, zs_free(P, hs[i]), object_ok(P, h, 1000, 800));

    /* Mapped in P: ending it on Q is an unmatched end counted in Q, and leaves P's. */
    ROW(0, 0, 0, a = zs_map_object(P, h, ZS_MM_RW), a != NULL);
    ROW(EINVAL, 0, 1, zs_unmap_object(Q, h), 1);
    ROW(EINVAL, 0, 1, zs_obj_read_end(Q, h, u, a), 1);
    ROW(EBUSY, 1, 0, zs_free(P, h), 1);
    ROW(0, 0, 0, zs_unmap_object(P, h), 1);
    ROW(0, 0, 0, RP = zs_obj_read_begin(P, h, u, L), RP != NULL);
    ROW(EINVAL, 0, 1, zs_obj_read_end(Q, h, u, RP), 1);
    ROW(EINVAL, 0, 1, zs_unmap_object(Q, h), 1);
    ROW(0, 0, 0, zs_obj_read_end(P, h, u, RP), 1);

    /* Another thread: its mappings and reads are its own. */
    struct worker w;
    worker_start(&w);
    ROW(0, 0, 0, a = worker_do(&w, W_MAP, P, h, 0, ZS_MM_RO, NULL), a != NULL);
    ROW(EINVAL, 1, 0, zs_unmap_object(P, h), 1);
    ROW(EBUSY, 1, 0, zs_free(P, h), 1);
    ROW(EBUSY, 1, 0, worker_do(&w, W_FREE, P, h, 0, 0, NULL), 1);
    ROW(EINVAL, 0, 1, worker_do(&w, W_UNMAP, Q, h, 0, 0, NULL), 1);
    ROW(0, 0, 0, worker_do(&w, W_UNMAP, P, h, 0, 0, NULL), 1);
    ROW(EINVAL, 1, 0, worker_do(&w, W_UNMAP, P, h, 0, 0, NULL), 1);
    ROW(0, 0, 0, a = zs_map_object(P, h, ZS_MM_RO), a != NULL);
    ROW(EINVAL, 1, 0, worker_do(&w, W_UNMAP, P, h, 0, 0, NULL), 1);
    ROW(EBUSY, 1, 0, worker_do(&w, W_FREE, P, h, 0, 0, NULL), 1);
    ROW(0, 0, 0, zs_unmap_object(P, h), 1);
    ROW(0, 0, 0, RP = worker_do(&w, W_READ_BEGIN, P, h, u, 0, NULL), RP != NULL);
    ROW(EINVAL, 1, 0, zs_obj_read_end(P, h, u, RP), 1);
    ROW(EBUSY, 1, 0, zs_free(P, h), 1);
    ROW(0, 0, 0, worker_do(&w, W_READ_END, P, h, u, 0, RP), 1);
    ROW(0, 0, 0, RP = zs_obj_read_begin(P, h, u, L), RP != NULL);
    ROW(EINVAL, 1, 0, worker_do(&w, W_READ_END, P, h, u, 0, RP), 1);
    ROW(0, 0, 0, zs_obj_read_end(P, h, u, RP), 1);
    /* Readers and writers of another thread: its writable mapping refuses this
     * thread; this thread's read-only mapping refuses its writer and shares with its
     * reader. */
    ROW(0, 0, 0, a = worker_do(&w, W_MAP, P, h, 0, ZS_MM_RW, NULL), a != NULL);
    ROW(EBUSY, 0, 0, RP2 = zs_map_object(P, h, ZS_MM_RO), RP2 == NULL);
    ROW(EBUSY, 0, 0, RP2 = zs_obj_read_begin(P, h, u, L), RP2 == NULL);
    ROW(EBUSY, 0, 0, zs_obj_write(P, h, BUF, 10), 1);
    ROW(0, 0, 0, worker_do(&w, W_UNMAP, P, h, 0, 0, NULL), object_ok(P, h, 1000, 800));
    ROW(0, 0, 0, a = zs_map_object(P, h, ZS_MM_RO), a != NULL);
    ROW(EBUSY, 0, 0, RP2 = worker_do(&w, W_MAP, P, h, 0, ZS_MM_WO, NULL), RP2 == NULL);
    ROW(0, 0, 0, RP = worker_do(&w, W_READ_BEGIN, P, h, u, 0, NULL), RP != NULL && pattern_ok(RP, 1000, 800));
    ROW(0, 0, 0, worker_do(&w, W_READ_END, P, h, u, 0, RP), 1);
    ROW(0, 0, 0, zs_unmap_object(P, h), object_ok(P, h, 1000, 800));
    ROW(0, 0, 0, worker_do(&w, W_EXIT, NULL, 0, 0, 0, NULL), 1);
    ROW(0, 0, 0, zs_free(P, h), 1);
}

/* ---- mappings and reads left open when their thread exits ---------------------- */

static void rows_thread_exit(void)
{
    enum { N = 16, SPREAD = 8 };
    const size_t size = 3000;
    size_t u = usable_of(P, size);
    unsigned long h[N], keep[SPREAD];
    /* Objects on scattered frames: some straddle two frames that are not adjacent, so
     * their mappings are copies, stored back when they end. */
    alloc_on_scattered_frames(P, h, N, size, keep, SPREAD);
    for (int i = 0; i < N; i++) {
        fill_pattern(L, size, 1000 + (uint64_t)i);
        zs_obj_write(P, h[i], L, size);
    }
    int copied = 0;
    for (int i = 0; i < N; i++) {
        H = h[i], HNAME = "a live object";
        struct worker w;
        worker_start(&w);
        int mode = i % 3 == 0 ? ZS_MM_RO : i % 3 == 1 ? ZS_MM_RW : ZS_MM_WO;
        unsigned char *m;
        ROW(0, 0, 0, m = worker_do(&w, W_MAP, P, h[i], 0, mode, NULL), m != NULL);
        ROW(0, 0, 0, RP = worker_do(&w, W_READ_BEGIN, P, h[(i + 1) % N], size, 0, NULL), RP != NULL);
        copied += RP == w.local;
        /* What the mapping holds when its thread exits is stored, unless read-only. */
        if (m && mode != ZS_MM_RO)
            fill_pattern(m, u, 2000 + (uint64_t)i);
        ROW(EBUSY, 1, 0, zs_free(P, h[i]), 1);
        /* The mapping and the read are ended at the thread's exit, as two misuses. */
        ROW(0, 2, 0, worker_do(&w, W_EXIT, NULL, 0, 0, 0, NULL), 1);
        uint64_t now = mode == ZS_MM_RO ? 1000 + (uint64_t)i : 2000 + (uint64_t)i;
        CHECK(object_ok(P, h[i], mode == ZS_MM_RO ? size : u, now));
        ROW(EINVAL, 1, 0, zs_unmap_object(P, h[i]), 1);
        fill_pattern(L, size, 1000 + (uint64_t)i);
        zs_obj_write(P, h[i], L, size);
    }
    CHECK(copied > 0);
    for (int i = 0; i < N; i++)
        ROW(0, 0, 0, zs_free(P, h[i]), 1);
    for (int i = 0; i < SPREAD; i++)
        zs_free(P, keep[i]);

    /* The pool is destroyed before the thread exits: nothing is touched at exit. */
    struct zs_pool *d = test_pool("hostile-exit", pool_is_dense(P) ? ZS_LAYOUT_DENSE : ZS_LAYOUT_KERNEL, 0);
    unsigned long dh = new_object(d, 500, 3), dh2 = new_object(d, 500, 4);
    struct worker w;
    worker_start(&w);
    H = dh, HNAME = "an object of a pool destroyed while mapped";
    /* Open at the destruction: a writable mapping of one object (which refuses a read
     * of it), a read-only mapping and a read of another. */
    X = d;
    XROW(0, 0, RP = worker_do(&w, W_MAP, d, dh, 0, ZS_MM_RW, NULL), RP != NULL);
    XROW(EBUSY, 0, RP = worker_do(&w, W_READ_BEGIN, d, dh, 500, 0, NULL), RP == NULL);
    XROW(0, 0, RP = worker_do(&w, W_MAP, d, dh2, 0, ZS_MM_RO, NULL), RP != NULL && pattern_ok(RP, 500, 4));
    XROW(0, 0, RP = worker_do(&w, W_READ_BEGIN, d, dh2, 500, 0, NULL), RP != NULL && pattern_ok(RP, 500, 4));
    X = NULL;
    ROW(0, 0, 0, zs_destroy_pool(d), 1);
    ROW(EINVAL, 1, 0, worker_do(&w, W_UNMAP, P, dh, 0, 0, NULL), 1);
    ROW(EINVAL, 1, 0, worker_do(&w, W_READ_END, P, dh2, 500, 0, RP), 1);
    ROW(0, 0, 0, worker_do(&w, W_EXIT, NULL, 0, 0, 0, NULL), 1);

    /* A thread's exit racing the destruction of the pool it left mappings in. */
    int rounds = under_valgrind() ? 20 : 300;
    for (int r = 0; r < rounds; r++) {
        struct zs_pool *rp = test_pool("hostile-race", pool_is_dense(P) ? ZS_LAYOUT_DENSE : ZS_LAYOUT_KERNEL, 0);
        unsigned long rh = new_object(rp, 100 + (size_t)r, 4);
        worker_start(&w);
        CHECK(worker_do(&w, W_MAP, rp, rh, 0, ZS_MM_RW, NULL) != NULL);
        pthread_mutex_lock(&w.mu);
        w.op = W_EXIT; /* exits without waiting for us */
        pthread_cond_broadcast(&w.cv);
        pthread_mutex_unlock(&w.mu);
        if (r % 2)
            sched_yield();
        zs_destroy_pool(rp);
        pthread_join(w.th, NULL);
        pthread_mutex_destroy(&w.mu);
        pthread_cond_destroy(&w.cv);
    }
    H = 0, HNAME = "none";
    ROW(0, 0, 0, (void)0, 1);
}

/* ---- pools destroyed with mappings open; a new pool at the same address --------- */

static enum zs_layout layout_of_p(void)
{
    return pool_is_dense(P) ? ZS_LAYOUT_DENSE : ZS_LAYOUT_KERNEL;
}

static void rows_destroyed_open(void)
{
    enum { K = 8 };
    /* Pools A[k], each with a mapping and a read open on this thread and a mapping open
     * on another, destroyed. */
    struct {
        uintptr_t at;
        unsigned long h[3];
        void *r;
    } a[K];
    struct worker w;
    worker_start(&w);
    for (int k = 0; k < K; k++) {
        struct zs_pool *pool = test_pool("hostile-a", layout_of_p(), 0);
        a[k].at = (uintptr_t)pool;
        for (int i = 0; i < 3; i++)
            a[k].h[i] = new_object(pool, 700, 20 + (uint64_t)i);
        CHECK(zs_map_object(pool, a[k].h[0], ZS_MM_RW) != NULL);
        CHECK((a[k].r = zs_obj_read_begin(pool, a[k].h[1], 700, L)) != NULL);
        CHECK(worker_do(&w, W_MAP, pool, a[k].h[2], 0, ZS_MM_RO, NULL) != NULL);
    }
    /* A heap like glibc's keeps the last few freed blocks of each small size per
     * thread (seven) and hands them out again last in, first out; it puts more on
     * other lists, which it merges into larger free blocks when a large block is
     * freed or asked for, as a pool's destruction and creation do. So the small blocks
     * are taken out of the heap's hands before the last pool is destroyed (and given
     * back once the new pools are made): that pool's blocks are then the ones kept,
     * its own last, and the next pool made, which takes its own block first
     * (zs_create_pool_with), takes its place. */
    enum { NDRAIN = 64 };
    void *drain[NDRAIN * 4];
    for (int k = 0; k < K - 1; k++)
        zs_destroy_pool((struct zs_pool *)a[k].at);
    for (int i = 0; i < NDRAIN * 4; i++)
        drain[i] = malloc((size_t)(16 * (i % 4) + 24));
    zs_destroy_pool((struct zs_pool *)a[K - 1].at);

    /* New pools B[j]: where the allocator hands a destroyed pool's block out again,
     * some of them sit at an A's address. */
    struct zs_pool *b[K];
    int match[K], found = 0;
    for (int j = 0; j < K; j++) {
        b[j] = test_pool("hostile-b", layout_of_p(), 0);
        match[j] = -1;
        for (int k = 0; k < K; k++)
            if ((uintptr_t)b[j] == a[k].at)
                match[j] = k;
        found += match[j] >= 0;
    }
    /* Whether one of the first K takes a destroyed pool's block depends on what the
     * heap went through before (a pool's creation allocates blocks of its own size
     * class first): more pools are made, up to 256, until one does, and it takes b[0]'s
     * place. */
    struct zs_pool *extra[256];
    int nextra = 0;
    while (addresses_reused() && found == 0 && nextra < 256) {
        struct zs_pool *e = test_pool("hostile-b", layout_of_p(), 0);
        extra[nextra++] = e;
        for (int k = 0; k < K; k++)
            if ((uintptr_t)e == a[k].at) {
                extra[nextra - 1] = b[0];
                b[0] = e;
                match[0] = k;
                found = 1;
            }
    }
    for (int i = 0; i < NDRAIN * 4; i++)
        free(drain[i]);
    if (addresses_reused())
        CHECK(found > 0);

    for (int j = 0; j < K; j++) {
        X = b[j];
        int k = match[j] >= 0 ? match[j] : j;
        unsigned long *ah = a[k].h;
        H = ah[0], HNAME = match[j] >= 0 ? "A's handle, B at A's address" : "A's handle, B elsewhere";
        /* B empty: A's open mappings and reads are unmatched ends here, on this thread
         * and on the other, and A's handles are B's to refuse. */
        XROW(EINVAL, 1, zs_unmap_object(X, ah[0]), 1);
        XROW(EINVAL, 1, zs_obj_read_end(X, ah[1], 700, a[k].r), 1);
        XROW(EINVAL, 1, zs_unmap_object(X, ah[2]), 1);
        XROW(EINVAL, 1, worker_do(&w, W_UNMAP, X, ah[2], 0, 0, NULL), 1);
        XROW(EINVAL, 1, zs_free(X, ah[0]), 1);
        XROW(EINVAL, 1, RP = zs_map_object(X, ah[1], ZS_MM_RW), RP == NULL);

        /* B holds objects, likely in the slots and frames A's had, one of them mapped. */
        unsigned long bh[3];
        for (int i = 0; i < 3; i++)
            bh[i] = new_object(X, 700, 30 + (uint64_t)i);
        XROW(0, 0, RP = zs_map_object(X, bh[0], ZS_MM_RO), RP != NULL);
        XROW(EINVAL, 1, zs_unmap_object(X, ah[0]), object_ok(X, bh[0], 700, 30));
        XROW(EINVAL, 1, zs_obj_read_end(X, ah[1], 700, a[k].r), object_ok(X, bh[1], 700, 31));
        XROW(EINVAL, 1, worker_do(&w, W_UNMAP, X, ah[2], 0, 0, NULL), object_ok(X, bh[2], 700, 32));
        XROW(EBUSY, 1, zs_free(X, bh[0]), 1);
        XROW(0, 0, zs_unmap_object(X, bh[0]), 1);
        XROW(EINVAL, 1, zs_unmap_object(X, bh[0]), 1);
        for (int i = 0; i < 3; i++) {
            XROW(EINVAL, 1, zs_obj_write(X, ah[i], BUF, 10), object_ok(X, bh[i], 700, 30 + (uint64_t)i));
            XROW(0, 0, zs_free(X, bh[i]), 1);
        }
        CHECK_EQ(pool_info(X).live_objects, 0);
    }
    /* The worker exits with the stale entries of every A: nothing is touched. */
    X = b[0];
    XROW(0, 0, worker_do(&w, W_EXIT, NULL, 0, 0, 0, NULL), 1);
    X = NULL;
    for (int j = 0; j < K; j++)
        zs_destroy_pool(b[j]);
    for (int i = 0; i < nextra; i++)
        zs_destroy_pool(extra[i]);
}

/* Thousands of pools created and destroyed while older ones live, of both layouts:
 * every newer pool refuses the older pools' handles and theirs refuse its own, and no
 * newer pool takes a handle of one destroyed before it. (The process's first pool and
 * its 4,339th once shared a tag.) */
static void rows_many_pools(void)
{
    enum { DEAD = 64 };
    int n = under_valgrind() ? 300 : 5000;
    unsigned long dead[DEAD];
    for (int i = 0; i < n; i++) {
        X = test_pool("hostile-newer", (enum zs_layout)(i % 2), 0);
        unsigned long y = new_object(X, 100, 40);
        H = y, HNAME = "the newest pool's handle";
        EROW(EINVAL, 1, zs_obj_write(ELDER, y, BUF, 8), 1);
        ROW(EINVAL, 1, 0, zs_obj_write(P, y, BUF, 8), 1);
        H = ELDER_H, HNAME = "the elder pool's handle";
        XROW(EINVAL, 1, zs_obj_write(X, ELDER_H, BUF, 8), object_ok(X, y, 100, 40));
        H = SP.h[i % NSENT], HNAME = "a sentinel of P";
        XROW(EINVAL, 1, RP = zs_map_object(X, H, ZS_MM_RO), RP == NULL);
        if (i > 0) {
            H = dead[(i * 13) % (i < DEAD ? i : DEAD)], HNAME = "a handle of a pool destroyed before";
            XROW(EINVAL, 1, zs_free(X, H), object_ok(X, y, 100, 40));
        }
        dead[i % DEAD] = y;
        zs_destroy_pool(X);
        X = NULL;
    }
    for (int k = 0; k < DEAD && k < n; k++) {
        H = dead[k], HNAME = "a handle of a destroyed pool";
        ROW(EINVAL, 1, 0, zs_free(P, dead[k]), 1);
        ROW(EINVAL, 0, 1, zs_free(Q, dead[k]), 1);
        EROW(EINVAL, 1, zs_free(ELDER, dead[k]), 1);
    }
}

/*
 * fork() with a mapping and a read open on the forking thread, no other thread in the
 * library: the child has a copy of the pool, ends the forking thread's mapping and read
 * (its thread-local record came with it), reads every object, writes one, checks,
 * frees, makes a pool of its own; the parent's pool sees none of the child's changes,
 * and ends its own mapping and read as if nothing happened.
 */
static void lifetimes_fork(enum zs_layout layout)
{
    struct zs_pool *pool = test_pool("hostile-fork", layout, 0);
    enum { N = 64 };
    unsigned long h[N];
    for (int i = 0; i < N; i++)
        h[i] = new_object(pool, 50 + 61 * (size_t)i, 500 + (uint64_t)i);
    unsigned char *m = zs_map_object(pool, h[0], ZS_MM_RW);
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    void *r = zs_obj_read_begin(pool, h[1], 111, local);
    if (!CHECK(m && r))
        return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = 1;
        memset(m, 0xee, 50);
        errno = 0;
        zs_unmap_object(pool, h[0]);
        ok &= errno == 0;
        zs_obj_read_end(pool, h[1], 111, r);
        ok &= errno == 0;
        unsigned char expect[50];
        memset(expect, 0xee, sizeof expect);
        void *p = zs_obj_read_begin(pool, h[0], 50, local);
        ok &= p && memcmp(p, expect, 50) == 0;
        if (p)
            zs_obj_read_end(pool, h[0], 50, p);
        for (int i = 1; i < N; i++)
            ok &= object_ok(pool, h[i], 50 + 61 * (size_t)i, 500 + (uint64_t)i);
        fill_pattern(local, 111, 9);
        zs_obj_write(pool, h[1], local, 111);
        ok &= object_ok(pool, h[1], 111, 9);
        ok &= zs_pool_check(pool) == 0 && misuse_count(pool) == 0;
        for (int i = 0; i < N; i += 2)
            zs_free(pool, h[i]);
        ok &= errno == 0;
        zs_compact(pool);
        ok &= zs_pool_check(pool) == 0;
        struct zs_pool *own = test_pool("hostile-fork-child", layout, 0);
        unsigned long oh = own ? new_object(own, 300, 7) : 0;
        ok &= own && object_ok(own, oh, 300, 7);
        if (own) {
            zs_free(own, oh);
            zs_destroy_pool(own);
        }
        zs_destroy_pool(pool);
        _exit(ok ? 0 : 1);
    }
    if (!CHECK(pid > 0))
        return;
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The parent's copy: the mapping still shows the object as it was, then the rest. */
    CHECK(pattern_ok(m, 50, 500));
    errno = 0;
    zs_unmap_object(pool, h[0]);
    zs_obj_read_end(pool, h[1], 111, r);
    CHECK_EQ(errno, 0);
    for (int i = 0; i < N; i++) {
        CHECK(object_ok(pool, h[i], 50 + 61 * (size_t)i, 500 + (uint64_t)i));
        zs_free(pool, h[i]);
    }
    check_emptied_and_destroy(pool, 0);
}

int main(void)
{
    ELDER = test_pool("hostile-elder", ZS_LAYOUT_DENSE, 0);
    ELDER_H = new_object(ELDER, 100, 1);
    for (int layout = 0; layout <= 1; layout++) {
        /* Pinned to 4 KiB frames: the rows' sizes and class indices are 4 KiB geometry. */
        P = test_pool_framed("hostile-p", (enum zs_layout)layout, 0, 4096);
        Q = test_pool_framed("hostile-q", (enum zs_layout)!layout, 0, 4096);
        sentinels_make(&SP, 100);
        sentinels_make(&SQ, 200);
        unsigned long rows0 = ROWS;
        rows_null_pool();
        rows_bad_handles();
        rows_malloc_limits();
        rows_lengths();
        rows_structs();
        rows_large((enum zs_layout)layout);
        rows_nesting();
        rows_thread_exit();
        rows_destroyed_open();
        lifetimes_fork((enum zs_layout)layout);
        if (layout == ZS_LAYOUT_DENSE)
            rows_many_pools();
        printf("%s layout: %lu rows\n", layout ? "kernel" : "dense", ROWS - rows0);
        CHECK(sentinels_ok(&SP));
        CHECK(sentinels_ok(&SQ));
        unsigned long mp = misuse_count(P), mq = misuse_count(Q);
        sentinels_free(&SP);
        sentinels_free(&SQ);
        check_emptied_and_destroy(P, mp);
        check_emptied_and_destroy(Q, mq);
    }
    CHECK(object_ok(ELDER, ELDER_H, 100, 1));
    zs_free(ELDER, ELDER_H);
    check_emptied_and_destroy(ELDER, ELDER_MISUSE);
    return check_summary();
}
