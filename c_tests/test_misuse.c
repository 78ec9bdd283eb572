/*
 * Every row of the misuse table (API.md, "Misuse: detected, refused, reported"): each
 * misuse must set errno as given, return NULL or an error handle where the call
 * returns something, count exactly one misuse event in zs_pool_info, and leave the
 * pool and every other object intact. Then ZSMALLOC_ABORT_ON_MISUSE=1: a misuse
 * prints one line naming the call and the handle on stderr and aborts (checked in a
 * child process started from this program with that environment).
 */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* ---- bystanders: objects that every misuse must leave alone ---------------------- */

enum { NB = 48 };
static unsigned long by_h[NB];
static size_t by_size[NB];

static void bystanders_make(struct zs_pool *pool)
{
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    for (int i = 0; i < NB; i++) {
        /* Several classes, including those the misused objects live in. */
        static const size_t sizes[] = {100, 3000, 1, 500, 4096, 2500, 64, 1234};
        by_size[i] = sizes[i % 8];
        by_h[i] = zs_malloc(pool, by_size[i], 0);
        CHECK(!ZS_IS_ERR(by_h[i]));
        fill_pattern(buf, by_size[i], 5000 + (uint64_t)i);
        zs_obj_write(pool, by_h[i], buf, by_size[i]);
    }
}

static int bystanders_ok(struct zs_pool *pool)
{
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    for (int i = 0; i < NB; i++) {
        void *p = zs_obj_read_begin(pool, by_h[i], by_size[i], local);
        if (!p)
            return 0;
        int ok = pattern_ok(p, by_size[i], 5000 + (uint64_t)i);
        zs_obj_read_end(pool, by_h[i], by_size[i], p);
        if (!ok)
            return 0;
    }
    return zs_pool_check(pool) == 0;
}

static unsigned long new_object(struct zs_pool *pool, size_t size, uint64_t seed)
{
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    unsigned long h = zs_malloc(pool, size, 0);
    CHECK(!ZS_IS_ERR(h));
    fill_pattern(buf, size, seed);
    zs_obj_write(pool, h, buf, size);
    return h;
}

/*
 * One misuse: runs STMT with errno cleared, then checks errno, one more misuse event,
 * and the bystanders. RESULT_OK is evaluated after STMT (the return value's check).
 */
#define MISUSE(pool, err, stmt, result_ok)                                                  \
    do {                                                                                    \
        unsigned long before_ = misuse_count(pool);                                        \
        errno = 0;                                                                          \
        stmt;                                                                               \
        int errno_ = errno;                                                                 \
        if (!CHECK_EQ(errno_, err))                                                         \
            fprintf(stderr, "  misuse: %s\n", #stmt);                                       \
        if (!CHECK(result_ok))                                                              \
            fprintf(stderr, "  misuse: %s\n", #stmt);                                       \
        if (!CHECK_EQ(misuse_count(pool), before_ + 1))                                     \
            fprintf(stderr, "  misuse: %s\n", #stmt);                                       \
        if (!CHECK(bystanders_ok(pool)))                                                    \
            fprintf(stderr, "  misuse: %s\n", #stmt);                                       \
    } while (0)

/* A call that is not a misuse: no event counted. */
#define NOT_MISUSE(pool, stmt)                                                              \
    do {                                                                                    \
        unsigned long before_ = misuse_count(pool);                                        \
        stmt;                                                                               \
        if (!CHECK_EQ(misuse_count(pool), before_))                                         \
            fprintf(stderr, "  counted as misuse: %s\n", #stmt);                           \
    } while (0)

/* ---- row: NULL pool to any call but destroy ------------------------------------- */

static void row_null_pool(struct zs_pool *pool)
{
    /* There is no pool to count the event in; the calls must refuse, set errno and
     * touch no other pool. */
    unsigned char buf[64] = {0};
    unsigned long h = by_h[0];
    unsigned long before = misuse_count(pool);
    struct zs_pool_stats st = {7};
    struct zs_pool_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    struct zs_class_info ci;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;

#define NULLPOOL(stmt, result_ok)                                                           \
    do {                                                                                    \
        errno = 0;                                                                          \
        stmt;                                                                               \
        int errno_ = errno;                                                                 \
        if (!CHECK_EQ(errno_, EINVAL))                                                      \
            fprintf(stderr, "  NULL pool: %s\n", #stmt);                                    \
        if (!CHECK(result_ok))                                                              \
            fprintf(stderr, "  NULL pool: %s\n", #stmt);                                    \
    } while (0)

    unsigned long r = 0;
    void *p = buf;
    int rc = 0;
    unsigned int idx = 0;
    size_t sz = 1;
    NULLPOOL(r = zs_malloc(NULL, 100, 0), ZS_IS_ERR(r) && ZS_ERR(r) == EINVAL);
    NULLPOOL(zs_free(NULL, h), 1);
    NULLPOOL(p = zs_obj_read_begin(NULL, h, 10, buf), p == NULL);
    NULLPOOL(zs_obj_read_end(NULL, h, 10, buf), 1);
    NULLPOOL(zs_obj_write(NULL, h, buf, 10), 1);
    NULLPOOL(p = zs_map_object(NULL, h, ZS_MM_RW), p == NULL);
    NULLPOOL(zs_unmap_object(NULL, h), 1);
    NULLPOOL(r = zs_get_total_pages(NULL), r == 0);
    NULLPOOL(sz = zs_huge_class_size(NULL), sz == 0);
    NULLPOOL(idx = zs_lookup_class_index(NULL, 100), idx == UINT_MAX);
    NULLPOOL(zs_pool_stats(NULL, &st), st.pages_compacted == 7);
    NULLPOOL(rc = zs_pool_info(NULL, &info), rc == -EINVAL && info.live_objects == 0);
    NULLPOOL(rc = zs_class_info(NULL, 0, &ci), rc == -EINVAL && ci.class_size == 0);
    NULLPOOL(rc = zs_pool_check(NULL), rc == -EINVAL);
#undef NULLPOOL
    /* Destroy accepts NULL as a no-op. */
    errno = 0;
    zs_destroy_pool(NULL);
    CHECK_EQ(errno, 0);
    CHECK_EQ(misuse_count(pool), before);
    CHECK(bystanders_ok(pool));
}

/* ---- row: a handle this pool never issued, or from another pool ----------------- */

static void refuse_everywhere(struct zs_pool *pool, unsigned long bad, const char *what)
{
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    unsigned char buf[16];
    memset(buf, 0x33, sizeof buf);
    memset(local, 0x44, sizeof local);
    void *p = local;
    unsigned long failed = atomic_load(&check_failed_);
    MISUSE(pool, EINVAL, zs_free(pool, bad), 1);
    MISUSE(pool, EINVAL, p = zs_obj_read_begin(pool, bad, 16, local), p == NULL && local[0] == 0x44);
    MISUSE(pool, EINVAL, zs_obj_write(pool, bad, buf, sizeof buf), 1);
    MISUSE(pool, EINVAL, p = zs_map_object(pool, bad, ZS_MM_RW), p == NULL);
    MISUSE(pool, EINVAL, p = zs_map_object(pool, bad, ZS_MM_RO), p == NULL);
    MISUSE(pool, EINVAL, zs_unmap_object(pool, bad), 1);
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, bad, 16, local), 1);
    if (atomic_load(&check_failed_) != failed)
        fprintf(stderr, "  (with %s: %#lx)\n", what, bad);
}

static void row_foreign(struct zs_pool *pool)
{
    /* A live object of another pool: refused here, and left alone there. */
    struct zs_pool *other = test_pool("misuse-other", ZS_LAYOUT_DENSE, 0);
    unsigned long theirs = new_object(other, 100, 77);
    refuse_everywhere(pool, theirs, "another pool's handle");
    CHECK(object_ok(other, theirs, 100, 77));
    CHECK_EQ(misuse_count(other), 0);
    CHECK_EQ(pool_info(other).live_objects, 1);

    /* A handle of a pool that is gone. */
    struct zs_pool *gone = test_pool("misuse-gone", ZS_LAYOUT_DENSE, 0);
    unsigned long dead = new_object(gone, 100, 78);
    zs_destroy_pool(gone);
    refuse_everywhere(pool, dead, "handle of a destroyed pool");

    /* Values this pool never returned: neighbours of issued handles in every bit, and
     * small numbers. The test knows every handle the pool issued (by_h, and those
     * below), so it can tell that a value was never issued. */
    unsigned long mine = new_object(pool, 100, 79);
    unsigned long issued[NB + 1];
    memcpy(issued, by_h, sizeof by_h);
    issued[NB] = mine;
    unsigned long candidates[80];
    int nc = 0;
    candidates[nc++] = 1;
    candidates[nc++] = 2;
    candidates[nc++] = 0x12345;
    candidates[nc++] = ULONG_MAX / 2;
    for (int bit = 0; bit < 64 && nc < 80; bit += 1)
        candidates[nc++] = mine ^ (1ul << bit);
    int tried = 0;
    for (int c = 0; c < nc; c++) {
        unsigned long v = candidates[c];
        int known = ZS_IS_ERR(v) || v == 0;
        for (int i = 0; i <= NB; i++)
            known |= issued[i] == v;
        if (known)
            continue;
        tried++;
        refuse_everywhere(pool, v, "never issued");
    }
    CHECK(tried >= 60);
    CHECK(object_ok(pool, mine, 100, 79));
    zs_free(pool, mine);
    zs_free(other, theirs);
    CHECK_EQ(zs_pool_check(other), 0);
    zs_destroy_pool(other);
}

/* ---- row: a handle already freed -------------------------------------------------- */

static void row_stale(struct zs_pool *pool)
{
    unsigned long h = new_object(pool, 500, 90);
    NOT_MISUSE(pool, zs_free(pool, h));
    refuse_everywhere(pool, h, "freed handle");

    /* The slot is reused by new objects: the old handle still names nothing, and
     * using it must not reach the new objects. */
    unsigned long fresh[8];
    for (int i = 0; i < 8; i++)
        fresh[i] = new_object(pool, 500, 100 + (uint64_t)i);
    for (int i = 0; i < 8; i++)
        CHECK(fresh[i] != h);
    unsigned char junk[500];
    memset(junk, 0xEE, sizeof junk);
    MISUSE(pool, EINVAL, zs_obj_write(pool, h, junk, sizeof junk), 1);
    MISUSE(pool, EINVAL, zs_free(pool, h), 1);
    for (int i = 0; i < 8; i++)
        CHECK(object_ok(pool, fresh[i], 500, 100 + (uint64_t)i));
    CHECK_EQ(pool_info(pool).live_objects, NB + 8);

    /* Double free of each of those, and use after free. */
    for (int i = 0; i < 8; i++) {
        NOT_MISUSE(pool, zs_free(pool, fresh[i]));
        MISUSE(pool, EINVAL, zs_free(pool, fresh[i]), 1);
    }
    unsigned char local[500];
    void *p = NULL;
    MISUSE(pool, EINVAL, p = zs_obj_read_begin(pool, fresh[3], 10, local), p == NULL);
    MISUSE(pool, EINVAL, p = zs_map_object(pool, fresh[4], ZS_MM_WO), p == NULL);
    CHECK_EQ(pool_info(pool).live_objects, NB);
}

/* ---- row: zs_free of a handle that is mapped or being read, by any thread -------- */

struct holder {
    struct zs_pool *pool;
    unsigned long h;
    size_t size;
    int use_read; /* read_begin instead of map */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0 start, 1 holding, 2 release, 3 done */
    int ok;
};

static void holder_set(struct holder *t, int state)
{
    pthread_mutex_lock(&t->mu);
    t->state = state;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void holder_wait(struct holder *t, int state)
{
    pthread_mutex_lock(&t->mu);
    while (t->state < state)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

/* Maps (or begins a read of) the object, waits to be told, ends it on this thread. */
static void *holder_main(void *arg)
{
    struct holder *t = arg;
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    void *p = t->use_read ? zs_obj_read_begin(t->pool, t->h, t->size, local) : zs_map_object(t->pool, t->h, ZS_MM_RO);
    t->ok = p != NULL;
    holder_set(t, 1);
    holder_wait(t, 2);
    if (p) {
        t->ok &= pattern_ok(p, t->size, 200);
        if (t->use_read)
            zs_obj_read_end(t->pool, t->h, t->size, p);
        else
            zs_unmap_object(t->pool, t->h);
    }
    holder_set(t, 3);
    return NULL;
}

/* Frees a handle on a thread of its own; returns errno. */
struct freer {
    struct zs_pool *pool;
    unsigned long h;
    int err;
};

static void *freer_main(void *arg)
{
    struct freer *f = arg;
    errno = 0;
    zs_free(f->pool, f->h);
    f->err = errno;
    return NULL;
}

static void row_busy(struct zs_pool *pool)
{
    const size_t size = 3000;
    unsigned long h = new_object(pool, size, 200);
    unsigned char local[ZS_MAX_ALLOC_SIZE];

    /* Mapped on this thread, in every mode; then being read. */
    enum zs_mapmode modes[] = {ZS_MM_RO, ZS_MM_RW, ZS_MM_WO};
    for (int m = 0; m < 3; m++) {
        unsigned char *p = zs_map_object(pool, h, modes[m]);
        CHECK(p != NULL);
        if (modes[m] != ZS_MM_RO && p)
            fill_pattern(p, size, 200);
        MISUSE(pool, EBUSY, zs_free(pool, h), 1);
        CHECK_EQ(pool_info(pool).live_objects, NB + 1);
        zs_unmap_object(pool, h);
        CHECK(object_ok(pool, h, size, 200));
    }
    void *r = zs_obj_read_begin(pool, h, size, local);
    CHECK(r != NULL);
    MISUSE(pool, EBUSY, zs_free(pool, h), 1);
    CHECK(r && pattern_ok(r, size, 200));
    zs_obj_read_end(pool, h, size, r);

    /* Mapped or read on another thread, freed here. */
    for (int use_read = 0; use_read <= 1; use_read++) {
        struct holder t = {pool, h, size, use_read, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, holder_main, &t), 0);
        holder_wait(&t, 1);
        MISUSE(pool, EBUSY, zs_free(pool, h), 1);
        /* Also not movable to another thread's end: unmap / read_end here refuse. */
        if (use_read)
            MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, size, local), 1);
        else
            MISUSE(pool, EINVAL, zs_unmap_object(pool, h), 1);
        holder_set(&t, 2);
        holder_wait(&t, 3);
        pthread_join(th, NULL);
        CHECK(t.ok);
    }

    /* Mapped here, freed on another thread. */
    void *m = zs_map_object(pool, h, ZS_MM_RO);
    CHECK(m != NULL);
    struct freer f = {pool, h, 0};
    unsigned long before = misuse_count(pool);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, freer_main, &f), 0);
    pthread_join(th, NULL);
    CHECK_EQ(f.err, EBUSY);
    CHECK_EQ(misuse_count(pool), before + 1);
    CHECK(m && pattern_ok(m, size, 200));
    zs_unmap_object(pool, h);
    CHECK(bystanders_ok(pool));

    /* Nothing pinned any more: the free goes through. */
    CHECK(object_ok(pool, h, size, 200));
    errno = 0;
    NOT_MISUSE(pool, zs_free(pool, h));
    CHECK_EQ(errno, 0);
    CHECK_EQ(pool_info(pool).live_objects, NB);
}

/* ---- row: unmap / read_end with no matching map / begin on this thread ---------- */

static void row_unmatched_end(struct zs_pool *pool)
{
    const size_t size = 700;
    unsigned long h = new_object(pool, size, 300);
    unsigned char local[ZS_MAX_ALLOC_SIZE];

    /* Never mapped, never read. */
    MISUSE(pool, EINVAL, zs_unmap_object(pool, h), 1);
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, size, local), 1);

    /* Ended once too often. */
    void *m = zs_map_object(pool, h, ZS_MM_RW);
    CHECK(m != NULL);
    NOT_MISUSE(pool, zs_unmap_object(pool, h));
    MISUSE(pool, EINVAL, zs_unmap_object(pool, h), 1);
    void *r = zs_obj_read_begin(pool, h, size, local);
    CHECK(r != NULL);
    NOT_MISUSE(pool, zs_obj_read_end(pool, h, size, r));
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, size, r), 1);

    /* A read is not a mapping, and a mapping is not a read. */
    r = zs_obj_read_begin(pool, h, size, local);
    CHECK(r != NULL);
    MISUSE(pool, EINVAL, zs_unmap_object(pool, h), 1);
    NOT_MISUSE(pool, zs_obj_read_end(pool, h, size, r));
    m = zs_map_object(pool, h, ZS_MM_RO);
    CHECK(m != NULL);
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, size, m), 1);
    NOT_MISUSE(pool, zs_unmap_object(pool, h));

    r = zs_obj_read_begin(pool, h, size, local);
    CHECK(r != NULL);

    /* read_end must name the read as it was begun: same length, same pointer. */
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, size - 1, r), 1);
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, size, local + 1), 1);
    /* A mapped or read handle's neighbour is not mapped. */
    MISUSE(pool, EINVAL, zs_unmap_object(pool, by_h[0]), 1);
    /* Those refusals left the read in progress: the object is still pinned. */
    MISUSE(pool, EBUSY, zs_free(pool, h), 1);
    NOT_MISUSE(pool, zs_obj_read_end(pool, h, size, r));
    CHECK(object_ok(pool, h, size, 300));
    NOT_MISUSE(pool, zs_free(pool, h));
}

/* ---- row: mem_len larger than the object's slot --------------------------------- */

static size_t slot_of(struct zs_pool *pool, size_t size)
{
    struct zs_class_info ci;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    CHECK_EQ(zs_class_info(pool, zs_lookup_class_index(pool, (unsigned int)size), &ci), 0);
    return ci.class_size;
}

static void row_too_long(struct zs_pool *pool, int dense)
{
    /* Longer than any length passed below, so that no refusal could read or write
     * past them even if it copied. */
    unsigned char buf[3 * ZS_MAX_ALLOC_SIZE], local[3 * ZS_MAX_ALLOC_SIZE];
    static const size_t sizes[] = {1, 100, 500, 3000, 4096};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t size = sizes[k];
        uint64_t seed = 400 + k;
        unsigned long h = new_object(pool, size, seed);
        /* The slot: in the kernel's layout the class size (which also holds the
         * kernel's 8-byte handle header, so class_size + 1 is certainly too long); in
         * the dense layout exactly the object's size, objects being packed end to end
         * (a lane reports class_size 4096, which is no slot). */
        size_t slot = dense ? size : slot_of(pool, size);
        if (dense)
            CHECK_EQ(slot_of(pool, size), pool_info(pool).max_object_size);
        CHECK(slot >= size);
        size_t over = slot + 1;
        memset(buf, 0xEE, sizeof buf);

        /* write: refused, nothing copied. */
        MISUSE(pool, EINVAL, zs_obj_write(pool, h, buf, over), 1);
        MISUSE(pool, EINVAL, zs_obj_write(pool, h, buf, over + 4096), 1);
        CHECK(object_ok(pool, h, size, seed));

        /* read_begin: NULL, nothing copied into local_copy. */
        void *p = local;
        memset(local, 0x11, sizeof local);
        MISUSE(pool, EINVAL, p = zs_obj_read_begin(pool, h, over, local), p == NULL);
        CHECK(local[0] == 0x11 && local[over - 1] == 0x11);
        /* Nothing was begun: the object is not pinned. */
        MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, over, local), 1);

        /* read_end: a longer length than the read was begun with. */
        void *r = zs_obj_read_begin(pool, h, size, local);
        CHECK(r != NULL);
        MISUSE(pool, EINVAL, zs_obj_read_end(pool, h, over, r), 1);
        NOT_MISUSE(pool, zs_obj_read_end(pool, h, size, r));

        /* The slot itself is not too long (the dense layout's slot, the object's own
         * bytes, is all usable). */
        if (dense) {
            fill_pattern(buf, slot, seed + 50);
            NOT_MISUSE(pool, zs_obj_write(pool, h, buf, slot));
            CHECK(object_ok(pool, h, slot, seed + 50));
        } else {
            NOT_MISUSE(pool, zs_obj_write(pool, h, buf, size));
        }
        NOT_MISUSE(pool, zs_free(pool, h));
    }
}

/* ---- row: NULL local_copy when one is needed; NULL handle_mem with mem_len > 0 ---- */

static void row_null_buffers(enum zs_layout layout)
{
    /* Pinned to 4 KiB frames: 24 objects of 3000 bytes straddle 4 KiB frames. */
    struct zs_pool *pool = test_pool_framed("misuse-null", layout, 0, 4096);
    /* Bystanders of its own, which MISUSE checks; the shared pool's are put back after. */
    unsigned long shared_by_h[NB];
    memcpy(shared_by_h, by_h, sizeof by_h);
    bystanders_make(pool);
    enum { N = 24, SPREAD = 8 };
    const size_t size = 3000;
    unsigned long h[N], keep[SPREAD];
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    alloc_on_scattered_frames(pool, h, N, size, keep, SPREAD);
    for (int i = 0; i < N; i++) {
        fill_pattern(local, size, 600 + (uint64_t)i);
        zs_obj_write(pool, h[i], local, size);
    }
    int needed = 0, not_needed = 0;
    for (int i = 0; i < N; i++) {
        void *p = zs_obj_read_begin(pool, h[i], size, local);
        if (!CHECK(p != NULL))
            continue;
        int copied = p == local;
        zs_obj_read_end(pool, h[i], size, p);
        if (copied) {
            /* The object must be copied: without local_copy the read is refused. */
            needed++;
            MISUSE(pool, EINVAL, p = zs_obj_read_begin(pool, h[i], size, NULL), p == NULL);
            /* Refused means not begun: the object can be freed... after this check. */
            MISUSE(pool, EINVAL, zs_obj_read_end(pool, h[i], size, NULL), 1);
        } else {
            /* Contiguous: local_copy is not needed, NULL is fine. */
            not_needed++;
            NOT_MISUSE(pool, p = zs_obj_read_begin(pool, h[i], size, NULL));
            CHECK(p != NULL && pattern_ok(p, size, 600 + (uint64_t)i));
            if (p)
                zs_obj_read_end(pool, h[i], size, p);
        }
    }
    CHECK(needed > 0);
    CHECK(not_needed > 0);

    /* NULL handle_mem with a length: write and read_end. */
    MISUSE(pool, EINVAL, zs_obj_write(pool, h[0], NULL, 10), 1);
    CHECK(object_ok(pool, h[0], size, 600));
    void *r = zs_obj_read_begin(pool, h[1], 100, local);
    CHECK(r != NULL);
    MISUSE(pool, EINVAL, zs_obj_read_end(pool, h[1], 100, NULL), 1);
    MISUSE(pool, EBUSY, zs_free(pool, h[1]), 1); /* still being read */
    NOT_MISUSE(pool, zs_obj_read_end(pool, h[1], 100, r));
    /* Zero bytes from NULL is not a misuse. */
    NOT_MISUSE(pool, zs_obj_write(pool, h[2], NULL, 0));

    for (int i = 0; i < N; i++) {
        CHECK(object_ok(pool, h[i], size, 600 + (uint64_t)i));
        NOT_MISUSE(pool, zs_free(pool, h[i]));
    }
    for (int i = 0; i < SPREAD; i++)
        zs_free(pool, keep[i]);
    CHECK(bystanders_ok(pool));
    for (int i = 0; i < NB; i++)
        zs_free(pool, by_h[i]);
    memcpy(by_h, shared_by_h, sizeof by_h);
    CHECK_EQ(zs_pool_check(pool), 0);
    zs_destroy_pool(pool);
}

/* ---- ZSMALLOC_ABORT_ON_MISUSE=1 ------------------------------------------------ */

/* Maps the object and exits with the mapping open. */
struct leaver {
    struct zs_pool *pool;
    unsigned long h;
};

static void *map_and_exit(void *arg)
{
    struct leaver *l = arg;
    (void)zs_map_object(l->pool, l->h, ZS_MM_RW);
    return NULL;
}

/* In the child: one misuse of the named kind. Prints the handle first (stdout). */
static int abort_child(const char *kind)
{
    struct zs_pool *pool = test_pool("misuse-abort", ZS_LAYOUT_DENSE, 0);
    unsigned long h = zs_malloc(pool, 100, 0);
    unsigned char buf[8] = {0};
    if (strcmp(kind, "double-free") == 0) {
        zs_free(pool, h);
        printf("%lx zs_free\n", h);
        fflush(stdout);
        zs_free(pool, h);
    } else if (strcmp(kind, "busy-free") == 0) {
        void *p = zs_map_object(pool, h, ZS_MM_RO);
        (void)p;
        printf("%lx zs_free\n", h);
        fflush(stdout);
        zs_free(pool, h);
    } else if (strcmp(kind, "unmap") == 0) {
        printf("%lx zs_unmap_object\n", h);
        fflush(stdout);
        zs_unmap_object(pool, h);
    } else if (strcmp(kind, "foreign") == 0) {
        unsigned long bad = h ^ (1ul << 20);
        printf("%lx zs_obj_write\n", bad);
        fflush(stdout);
        zs_obj_write(pool, bad, buf, sizeof buf);
    } else if (strcmp(kind, "too-long") == 0) {
        printf("%lx zs_obj_read_begin\n", h);
        fflush(stdout);
        unsigned char local[ZS_MAX_ALLOC_SIZE + 1];
        (void)zs_obj_read_begin(pool, h, sizeof local, local);
    } else if (strcmp(kind, "null-pool") == 0) {
        printf("%lx zs_map_object\n", h);
        fflush(stdout);
        (void)zs_map_object(NULL, h, ZS_MM_RO);
    } else if (strcmp(kind, "thread-exit") == 0) {
        /* The mapping is ended at the thread's exit: a misuse, named by its begin. */
        printf("%lx zs_map_object\n", h);
        fflush(stdout);
        struct leaver l = {pool, h};
        pthread_t th;
        if (pthread_create(&th, NULL, map_and_exit, &l) != 0)
            return 5;
        pthread_join(th, NULL);
    } else if (strcmp(kind, "double-destroy") == 0) {
        printf("0 zs_destroy_pool\n");
        fflush(stdout);
        zs_destroy_pool(pool);
        zs_destroy_pool(pool);
        printf("returned\n");
        return 0;
    } else {
        return 4;
    }
    /* Not aborted: either the variable is unset (a normal return) or a failure. */
    zs_destroy_pool(pool);
    printf("returned\n");
    return 0;
}

struct child_result {
    int exited, code, signaled, sig;
    char out[512], err[2048];
};

static void read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k > 0) {
            n += (size_t)k;
            if (n == cap - 1)
                break;
        } else if (k == 0 || errno != EINTR) {
            break;
        }
    }
    buf[n] = 0;
}

static int run_child(const char *self, const char *kind, const char *env_value, struct child_result *res)
{
    int out[2], err[2];
    memset(res, 0, sizeof *res);
    if (pipe(out) != 0 || pipe(err) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]), close(out[1]), close(err[0]), close(err[1]);
        if (env_value)
            setenv("ZSMALLOC_ABORT_ON_MISUSE", env_value, 1);
        else
            unsetenv("ZSMALLOC_ABORT_ON_MISUSE");
        char *argv[] = {(char *)self, (char *)"--abort-child", (char *)kind, NULL};
        execv(self, argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    /* The child writes little; read stdout then stderr (neither can fill a pipe). */
    read_all(out[0], res->out, sizeof res->out);
    read_all(err[0], res->err, sizeof res->err);
    close(out[0]);
    close(err[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    res->exited = WIFEXITED(status);
    res->code = res->exited ? WEXITSTATUS(status) : -1;
    res->signaled = WIFSIGNALED(status);
    res->sig = res->signaled ? WTERMSIG(status) : 0;
    return 0;
}

static void test_abort_on_misuse(const char *self)
{
    static const char *kinds[] = {"double-free", "busy-free",   "unmap",         "foreign",
                                  "too-long",    "null-pool",   "thread-exit",   "double-destroy"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        struct child_result res;
        if (!CHECK_EQ(run_child(self, kinds[k], "1", &res), 0))
            continue;
        /* Aborted (SIGABRT), after printing the handle and the call it was about. */
        int aborted = res.signaled && res.sig == SIGABRT;
        if (!CHECK(aborted))
            fprintf(stderr, "  %s: exited=%d code=%d signal=%d stderr=[%s]\n", kinds[k], res.exited, res.code,
                    res.sig, res.err);
        unsigned long h = 0;
        char call[64] = "";
        CHECK(sscanf(res.out, "%lx %63s", &h, call) == 2);
        CHECK(strstr(res.out, "returned") == NULL);
        /* Exactly one line on stderr, naming the call and the handle. */
        size_t len = strlen(res.err);
        int one_line = len > 1 && res.err[len - 1] == '\n' && memchr(res.err, '\n', len - 1) == NULL;
        if (!CHECK(one_line))
            fprintf(stderr, "  %s: stderr=[%s]\n", kinds[k], res.err);
        if (!CHECK(call[0] && strstr(res.err, call) != NULL))
            fprintf(stderr, "  %s: call %s not named in [%s]\n", kinds[k], call, res.err);
        char hex[32], dec[32];
        snprintf(hex, sizeof hex, "%lx", h);
        snprintf(dec, sizeof dec, "%lu", h);
        if (!CHECK(strstr(res.err, hex) != NULL || strstr(res.err, dec) != NULL))
            fprintf(stderr, "  %s: handle %s not named in [%s]\n", kinds[k], hex, res.err);
    }
    /* Unset, or any other value: the misuse is refused and the program goes on. */
    const char *values[] = {NULL, "0", ""};
    for (size_t v = 0; v < 3; v++) {
        struct child_result res;
        if (!CHECK_EQ(run_child(self, "double-free", values[v], &res), 0))
            continue;
        CHECK(res.exited && res.code == 0);
        CHECK(strstr(res.out, "returned") != NULL);
        CHECK_EQ(strlen(res.err), 0);
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--abort-child") == 0)
        return abort_child(argv[2]);

    for (int layout = 0; layout <= 1; layout++) {
        struct zs_pool *pool = test_pool("misuse", (enum zs_layout)layout, 0);
        bystanders_make(pool);
        CHECK(bystanders_ok(pool));
        CHECK_EQ(misuse_count(pool), 0);
        row_null_pool(pool);
        row_foreign(pool);
        row_stale(pool);
        row_busy(pool);
        row_unmatched_end(pool);
        row_too_long(pool, layout == ZS_LAYOUT_DENSE);
        row_null_buffers((enum zs_layout)layout);
        CHECK(bystanders_ok(pool));
        struct zs_pool_info info = pool_info(pool);
        CHECK_EQ(info.live_objects, NB);
        CHECK(info.misuse_events > 100);
        for (int i = 0; i < NB; i++)
            zs_free(pool, by_h[i]);
        CHECK_EQ(misuse_count(pool), info.misuse_events);
        CHECK_EQ(zs_get_total_pages(pool), 0);
        CHECK_EQ(zs_pool_check(pool), 0);
        zs_destroy_pool(pool);
    }
    test_abort_on_misuse(argv[0]);
    return check_summary();
}
