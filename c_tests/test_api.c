/*
 * The contract of every function of include/zsmalloc.h, from C.
 *
 * Pool creation and destruction (default, NULL name, configurations valid and
 * invalid, the `size` convention), malloc and free, every size 1..4096 round-tripping
 * through every access path, objects straddling frames (in place and copied), the
 * page limit and ZS_ALLOC_NOGROW, the statistics, the kernel layout's class table and
 * the dense layout's lanes and end-to-end packing, the error-handle macros, and many
 * simultaneous mappings on one thread.
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

/* ---- creation, destruction, configuration ------------------------------------------- */

static struct zs_pool *create_with(const char *name, size_t size, unsigned long max_pages, unsigned int chain,
                                   unsigned int layout)
{
    struct zs_pool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = size;
    cfg.max_pages = max_pages;
    cfg.chain_size = chain;
    cfg.layout = (enum zs_layout)layout;
    return zs_create_pool_with(name, &cfg);
}

/* Allocates 4096-byte objects into h[0..n) until one fails, which must fail with
 * ENOMEM (in the handle and in errno); returns how many succeeded. */
static int fill_pages_until_enomem(struct zs_pool *pool, unsigned long *h, int n)
{
    int got = 0;
    for (int i = 0; i < n; i++) {
        errno = 0;
        h[i] = zs_malloc(pool, ZS_MAX_ALLOC_SIZE, 0);
        if (ZS_IS_ERR(h[i])) {
            CHECK_EQ(ZS_ERR(h[i]), ENOMEM);
            CHECK_EQ(errno, ENOMEM);
            break;
        }
        got++;
    }
    return got;
}

/* zs_malloc(pool, size, flags) must be refused with ENOMEM, in the handle and errno. */
static void check_malloc_enomem(struct zs_pool *pool, size_t size, unsigned int flags)
{
    errno = 0;
    unsigned long h = zs_malloc(pool, size, flags);
    CHECK(ZS_IS_ERR(h) && ZS_ERR(h) == ENOMEM);
    CHECK_EQ(errno, ENOMEM);
}

/* A pool must hand out, store and give back an object. */
static void smoke(struct zs_pool *pool, size_t size)
{
    unsigned char buf[ZS_MAX_ALLOC_SIZE], local[ZS_MAX_ALLOC_SIZE];
    unsigned long h = zs_malloc(pool, size, 0);
    if (!CHECK(!ZS_IS_ERR(h) && h != 0))
        return;
    fill_pattern(buf, size, size);
    zs_obj_write(pool, h, buf, size);
    void *p = zs_obj_read_begin(pool, h, size, local);
    CHECK(p && memcmp(p, buf, size) == 0);
    zs_obj_read_end(pool, h, size, p);
    zs_free(pool, h);
    CHECK_EQ(pool_info(pool).live_objects, 0);
}

static void test_create_destroy(void)
{
    /* The default configuration. Under valgrind its reservation (sized to physical
     * memory) can pass valgrind's address-space ceiling on a large machine: ENOMEM is
     * then valgrind's limit, not the library's, and only that case is excused. */
    errno = 0;
    struct zs_pool *def = zs_create_pool("api-default");
    if (!def && errno == ENOMEM && under_valgrind()) {
        fprintf(stderr, "note: default pool larger than valgrind's address space; checked natively\n");
    } else if (CHECK(def != NULL)) {
        smoke(def, 100);
        smoke(def, ZS_MAX_ALLOC_SIZE);
        CHECK_EQ(zs_get_total_pages(def), 0);
        zs_destroy_pool(def);
    }

    /* NULL name, NULL config, max_pages given. */
    struct zs_pool *anon = create_with(NULL, sizeof(struct zs_pool_config), 64, 0, ZS_LAYOUT_DENSE);
    if (CHECK(anon != NULL)) {
        smoke(anon, 777);
        zs_destroy_pool(anon);
    }
    errno = 0;
    struct zs_pool *anon2 = zs_create_pool(NULL);
    if (!anon2 && errno == ENOMEM && under_valgrind()) {
        fprintf(stderr, "note: default pool larger than valgrind's address space; checked natively\n");
    } else if (CHECK(anon2 != NULL)) {
        struct zs_pool *nullcfg = NULL;
        /* Created one at a time: two default pools could pass valgrind's ceiling. */
        zs_destroy_pool(anon2);
        nullcfg = zs_create_pool_with("api-nullcfg", NULL);
        if (CHECK(nullcfg != NULL)) {
            smoke(nullcfg, 1);
            zs_destroy_pool(nullcfg);
        }
    }

    /* The name is copied: the caller's buffer may go away. */
    char name[32];
    snprintf(name, sizeof name, "api-%s", "copied");
    struct zs_pool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.max_pages = 64;
    struct zs_pool *named = zs_create_pool_with(name, &cfg);
    memset(name, 0, sizeof name);
    if (CHECK(named != NULL)) {
        smoke(named, 42);
        CHECK_EQ(zs_pool_check(named), 0);
        zs_destroy_pool(named);
    }

    /* Destroy: NULL is a no-op; a pool with live objects and many frames is freed
     * whole (ASan's and valgrind's leak checks see the rest). */
    zs_destroy_pool(NULL);
    struct zs_pool *full = test_pool("api-full", ZS_LAYOUT_DENSE, 0);
    for (size_t i = 1; i <= 600; i++) {
        unsigned long h = zs_malloc(full, i * 6 % ZS_MAX_ALLOC_SIZE + 1, 0);
        CHECK(!ZS_IS_ERR(h));
    }
    CHECK(zs_get_total_pages(full) > 0);
    zs_destroy_pool(full);

    /* Valid chain sizes for both layouts. */
    unsigned int chains[] = {0, 4, 5, 8, 15, 16};
    for (unsigned int layout = 0; layout <= 1; layout++) {
        for (size_t i = 0; i < sizeof chains / sizeof chains[0]; i++) {
            struct zs_pool *p = create_with("api-chain", sizeof(struct zs_pool_config), 256, chains[i], layout);
            if (CHECK(p != NULL)) {
                smoke(p, 3000);
                zs_destroy_pool(p);
            }
        }
    }

    /* Invalid fields: NULL, errno EINVAL. */
    struct {
        const char *what;
        size_t size;
        unsigned int chain, layout;
    } bad[] = {
        {"chain 1", sizeof(struct zs_pool_config), 1, 0},
        {"chain 3", sizeof(struct zs_pool_config), 3, 0},
        {"chain 17", sizeof(struct zs_pool_config), 17, 1},
        {"chain 1000", sizeof(struct zs_pool_config), 1000, 0},
        {"layout 2", sizeof(struct zs_pool_config), 0, 2},
        {"layout 99", sizeof(struct zs_pool_config), 8, 99},
        {"size 0", 0, 0, 0},
        {"size shorter than the size field", sizeof(size_t) - 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        struct zs_pool *p = create_with("api-bad", bad[i].size, 64, bad[i].chain, bad[i].layout);
        if (!CHECK(p == NULL))
            fprintf(stderr, "  accepted: %s\n", bad[i].what), zs_destroy_pool(p);
        if (!CHECK_EQ(errno, EINVAL))
            fprintf(stderr, "  case: %s\n", bad[i].what);
    }
}

/* The `size` convention of zs_pool_config: the library reads only `size` bytes. */
static void test_config_size_convention(void)
{
    size_t dense_huge, kernel_huge;
    {
        /* Compared with pools whose configs are too short to name a frame size. */
        struct zs_pool *d = test_pool_framed("api-d", ZS_LAYOUT_DENSE, 0, 0);
        struct zs_pool *k = test_pool_framed("api-k", ZS_LAYOUT_KERNEL, 0, 0);
        dense_huge = zs_huge_class_size(d);
        kernel_huge = zs_huge_class_size(k);
        CHECK(dense_huge != kernel_huge);
        zs_destroy_pool(d);
        zs_destroy_pool(k);
    }

    /* Only size and max_pages declared: the invalid chain and layout that follow in
     * memory must not be read, and the defaults (the dense layout) apply. */
    struct zs_pool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = offsetof(struct zs_pool_config, chain_size);
    cfg.max_pages = 4;
    cfg.chain_size = 3;
    cfg.layout = (enum zs_layout)7;
    struct zs_pool *p = zs_create_pool_with("api-short", &cfg);
    if (CHECK(p != NULL)) {
        CHECK_EQ(zs_huge_class_size(p), dense_huge);
        /* max_pages was read: four full pages (in a zspage cut to the four frames the
         * limit leaves), then ENOMEM. */
        unsigned long h[5];
        CHECK_EQ(fill_pages_until_enomem(p, h, 5), 4);
        zs_destroy_pool(p);
    }

    /* Only the size field: every default. */
    memset(&cfg, 0xFF, sizeof cfg);
    cfg.size = sizeof(size_t);
    p = zs_create_pool_with("api-sizeonly", &cfg);
    /* max_pages would read as ULONG_MAX if it were read; the default is no limit,
     * which valgrind may not fit (see check.h). */
    if (!p && errno == ENOMEM && under_valgrind()) {
        fprintf(stderr, "note: default-sized pool larger than valgrind's address space\n");
    } else if (CHECK(p != NULL)) {
        CHECK_EQ(zs_huge_class_size(p), dense_huge);
        zs_destroy_pool(p);
    }

    /* A caller compiled with a longer struct (zeros in the fields it adds). */
    struct {
        struct zs_pool_config c;
        unsigned long later[4];
    } big;
    memset(&big, 0, sizeof big);
    big.c.size = sizeof big;
    big.c.max_pages = 32;
    big.c.layout = ZS_LAYOUT_KERNEL;
    p = zs_create_pool_with("api-long", &big.c);
    if (CHECK(p != NULL)) {
        CHECK_EQ(zs_huge_class_size(p), kernel_huge);
        zs_destroy_pool(p);
    }

    /* The config struct is only read. */
    struct zs_pool_config before;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.max_pages = 16;
    cfg.chain_size = 4;
    cfg.layout = ZS_LAYOUT_KERNEL;
    memcpy(&before, &cfg, sizeof cfg);
    p = zs_create_pool_with("api-const", &cfg);
    CHECK(p != NULL);
    CHECK(memcmp(&before, &cfg, sizeof cfg) == 0);
    if (p) {
        CHECK_EQ(zs_huge_class_size(p), 3257);
        zs_destroy_pool(p);
    }
}

/* ---- malloc, free, error handles ------------------------------------------------------ */

static void test_malloc_free(void)
{
    /* The macros. */
    CHECK(!ZS_IS_ERR(0ul));
    CHECK(!ZS_IS_ERR(1ul));
    CHECK(!ZS_IS_ERR((unsigned long)-4096));
    CHECK(ZS_IS_ERR((unsigned long)-4095));
    CHECK(ZS_IS_ERR((unsigned long)-1));
    CHECK_EQ(ZS_ERR((unsigned long)-ENOMEM), ENOMEM);
    CHECK_EQ(ZS_ERR((unsigned long)-EINVAL), EINVAL);
    CHECK_EQ(ZS_MAX_ALLOC_SIZE, 4096);

    struct zs_pool *pool = test_pool("api-malloc", ZS_LAYOUT_DENSE, 0);
    size_t max = pool_info(pool).max_object_size;
    struct {
        size_t size;
        unsigned int flags;
        int err;
    } bad[] = {
        {0, 0, EINVAL},
        {max + 1, 0, ENOSPC},
        {100000, 0, ENOSPC},
        {SIZE_MAX, 0, ENOSPC},
        {100, 2, EINVAL},
        {100, ZS_ALLOC_NOGROW | 4, EINVAL},
        {100, 0x80000000u, EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        unsigned long h = zs_malloc(pool, bad[i].size, bad[i].flags);
        CHECK(ZS_IS_ERR(h));
        CHECK_EQ(ZS_ERR(h), bad[i].err);
        CHECK_EQ(errno, bad[i].err);
    }
    CHECK_EQ(pool_info(pool).live_objects, 0);

    /* Handles: never 0, never errors, all distinct; the counts follow. */
    enum { N = 300 };
    unsigned long h[N];
    unsigned long requested = 0;
    for (int i = 0; i < N; i++) {
        size_t size = (size_t)i * 37 % max + 1;
        h[i] = zs_malloc(pool, size, 0);
        CHECK(h[i] != 0 && !ZS_IS_ERR(h[i]));
        requested += size;
        for (int j = 0; j < i; j++)
            if (h[j] == h[i])
                CHECK(!"handle issued twice");
    }
    struct zs_pool_info info = pool_info(pool);
    CHECK_EQ(info.live_objects, N);
    CHECK_EQ(info.requested_bytes, requested);
    CHECK_EQ(info.total_pages, zs_get_total_pages(pool));
    CHECK(info.total_pages > 0);
    CHECK(info.meta_bytes > 0);

    /* Free: 0 and error handles are no-ops, not misuse. */
    unsigned long misuse = info.misuse_events;
    errno = 0;
    zs_free(pool, 0);
    zs_free(pool, (unsigned long)-EINVAL);
    zs_free(pool, (unsigned long)-1);
    zs_free(pool, (unsigned long)-4095);
    CHECK_EQ(errno, 0);
    CHECK_EQ(misuse_count(pool), misuse);
    CHECK_EQ(pool_info(pool).live_objects, N);

    for (int i = 0; i < N; i += 2) {
        zs_free(pool, h[i]);
        requested -= (size_t)i * 37 % max + 1;
    }
    info = pool_info(pool);
    CHECK_EQ(info.live_objects, N / 2);
    CHECK_EQ(info.requested_bytes, requested);
    CHECK_EQ(zs_pool_check(pool), 0);
    for (int i = 1; i < N; i += 2)
        zs_free(pool, h[i]);
    check_emptied_and_destroy(pool, misuse);
}

/* ---- every size through every access path --------------------------------------------- */

static void test_roundtrip_all_sizes(enum zs_layout layout)
{
    struct zs_pool *pool = test_pool("api-sizes", layout, 0);
    static unsigned long h[ZS_MAX_ALLOC_SIZE + 1];
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    unsigned long bad_write = 0, bad_read = 0, bad_partial = 0, bad_ro = 0, bad_rw = 0, bad_wo = 0, null_ptr = 0;
    unsigned long in_place_straddling = 0, copied = 0, not_local = 0;
    uint64_t salt = (uint64_t)layout << 40;

    for (size_t s = 1; s <= ZS_MAX_ALLOC_SIZE; s++) {
        h[s] = zs_malloc(pool, s, 0);
        if (ZS_IS_ERR(h[s])) {
            CHECK(!"zs_malloc failed");
            zs_destroy_pool(pool);
            return;
        }
        fill_pattern(buf, s, salt + s);
        zs_obj_write(pool, h[s], buf, s);
    }
    struct zs_pool_info info = pool_info(pool);
    CHECK_EQ(info.live_objects, ZS_MAX_ALLOC_SIZE);
    CHECK_EQ(info.requested_bytes, (unsigned long)ZS_MAX_ALLOC_SIZE * (ZS_MAX_ALLOC_SIZE + 1) / 2);

    for (size_t s = 1; s <= ZS_MAX_ALLOC_SIZE; s++) {
        /* zs_obj_write then read_begin/end, byte for byte. */
        memset(local, 0xA5, sizeof local);
        unsigned char *p = zs_obj_read_begin(pool, h[s], s, local);
        if (!p) {
            null_ptr++;
            continue;
        }
        if (!pattern_ok(p, s, salt + s))
            bad_write++;
        if (p == local) {
            copied++;
        } else {
            not_local++;
            if ((uintptr_t)p % 4096 + s > 4096)
                in_place_straddling++;
        }
        zs_obj_read_end(pool, h[s], s, p);

        /* A prefix. */
        size_t half = (s + 1) / 2;
        p = zs_obj_read_begin(pool, h[s], half, local);
        if (!p || !pattern_ok(p, half, salt + s))
            bad_partial++;
        if (p)
            zs_obj_read_end(pool, h[s], half, p);

        /* RO: the object's bytes. */
        p = zs_map_object(pool, h[s], ZS_MM_RO);
        if (!p) {
            null_ptr++;
            continue;
        }
        if (!pattern_ok(p, s, salt + s))
            bad_ro++;
        zs_unmap_object(pool, h[s]);

        /* RW: read, modify, stored at unmap. */
        p = zs_map_object(pool, h[s], ZS_MM_RW);
        if (!p) {
            null_ptr++;
            continue;
        }
        if (!pattern_ok(p, s, salt + s))
            bad_rw++;
        fill_pattern(p, s, salt + s + 0x10000);
        zs_unmap_object(pool, h[s]);
        if (!object_ok(pool, h[s], s, salt + s + 0x10000))
            bad_rw++;

        /* WO: written, stored at unmap. */
        p = zs_map_object(pool, h[s], ZS_MM_WO);
        if (!p) {
            null_ptr++;
            continue;
        }
        fill_pattern(p, s, salt + s + 0x20000);
        zs_unmap_object(pool, h[s]);
        if (!object_ok(pool, h[s], s, salt + s + 0x20000))
            bad_wo++;

        /* And zs_obj_write again, over what WO stored. */
        fill_pattern(buf, s, salt + s + 0x30000);
        zs_obj_write(pool, h[s], buf, s);
        if (!object_ok(pool, h[s], s, salt + s + 0x30000))
            bad_read++;
    }
    CHECK_EQ(null_ptr, 0);
    CHECK_EQ(bad_write, 0);
    CHECK_EQ(bad_partial, 0);
    CHECK_EQ(bad_ro, 0);
    CHECK_EQ(bad_rw, 0);
    CHECK_EQ(bad_wo, 0);
    CHECK_EQ(bad_read, 0);
    /* Objects laid end to end over a zspage's frames straddle frame boundaries; some
     * of the 4096 objects must, and they round-tripped above. */
    CHECK(in_place_straddling + copied > 0);
    CHECK(not_local > 0);

    /* The statistics agree with each other. */
    info = pool_info(pool);
    unsigned long pages = 0, inuse = 0;
    for (unsigned int idx = 0; idx < 1024; idx++) {
        struct zs_class_info ci;
        if (class_info_of(pool, idx, &ci) != 0)
            continue;
        pages += ci.pages_used;
        inuse += ci.objs_inuse;
        unsigned long zspages = 0;
        for (int g = 0; g < ZS_NR_FULLNESS_GROUPS; g++)
            zspages += ci.zspages[g];
        if (layout == ZS_LAYOUT_KERNEL) {
            CHECK_EQ(ci.pages_used, zspages * ci.pages_per_zspage);
            CHECK_EQ(ci.objs_allocated, zspages * ci.objs_per_zspage);
        } else {
            /* A dense lane: zspages of mixed sizes, so no slots, and the objects
             * "allocated" are the live ones. A zspage may be shorter than the chain:
             * these sizes arrive in ascending order, for which a lane opens zspages
             * of the length that wastes least (see "The dense layout"). */
            CHECK_EQ(ci.class_size, info.max_object_size);
            CHECK_EQ(ci.objs_per_zspage, 0);
            CHECK_EQ(ci.objs_allocated, ci.objs_inuse);
            CHECK(ci.pages_used <= zspages * ci.pages_per_zspage);
            CHECK(ci.pages_used >= zspages);
        }
        CHECK(ci.objs_inuse <= ci.objs_allocated);
        CHECK(ci.pages_freeable <= ci.pages_used);
        CHECK_EQ(ci.zspages[0], 0); /* empty zspages are not kept */
    }
    CHECK_EQ(pages, info.total_pages);
    CHECK_EQ(inuse, ZS_MAX_ALLOC_SIZE);
    CHECK_EQ(zs_pool_check(pool), 0);

    for (size_t s = 1; s <= ZS_MAX_ALLOC_SIZE; s++)
        zs_free(pool, h[s]);
    check_emptied_and_destroy(pool, 0);
}

/* ---- straddling objects on frames that are not adjacent ------------------------------- */

static void test_split_objects(enum zs_layout layout)
{
    /* Pinned to 4 KiB frames: at 64 KiB its objects do not span frames enough to straddle. */
    struct zs_pool *pool = test_pool_framed("api-split", layout, 0, 4096);
    enum { N = 48, SPREAD = 12 };
    /* The kernel's layout (chain 8): a class of three frames per zspage. The dense
     * layout: end to end, 21 to a zspage of 16 frames, so every frame boundary of a
     * zspage is straddled. */
    const size_t size = 3000;
    unsigned long h[N], keep[SPREAD];
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    alloc_on_scattered_frames(pool, h, N, size, keep, SPREAD);
    for (int i = 0; i < N; i++) {
        unsigned char buf[ZS_MAX_ALLOC_SIZE];
        fill_pattern(buf, size, 1000 + (uint64_t)i);
        zs_obj_write(pool, h[i], buf, size);
    }

    int copied = 0;
    for (int i = 0; i < N; i++) {
        uint64_t seed = 1000 + (uint64_t)i;
        memset(local, 0, sizeof local);
        unsigned char *p = zs_obj_read_begin(pool, h[i], size, local);
        if (!CHECK(p != NULL))
            continue;
        CHECK(pattern_ok(p, size, seed));
        zs_obj_read_end(pool, h[i], size, p);

        /* One byte is always contiguous: a direct pointer, never the local copy. */
        unsigned char *first = zs_obj_read_begin(pool, h[i], 1, local);
        CHECK(first != NULL && first != local);
        if (first)
            zs_obj_read_end(pool, h[i], 1, first);
        if (p != local || !first || first == local)
            continue;

        /* A copied object: the bytes up to the end of the first frame are still read
         * in place, one more byte needs the copy. */
        copied++;
        size_t in_first = 4096 - (uintptr_t)first % 4096;
        CHECK(in_first < size);
        unsigned char *q = zs_obj_read_begin(pool, h[i], in_first, local);
        CHECK(q == first);
        if (q)
            zs_obj_read_end(pool, h[i], in_first, q);
        memset(local, 0, sizeof local);
        q = zs_obj_read_begin(pool, h[i], in_first + 1, local);
        CHECK(q == local);
        if (q) {
            CHECK(pattern_ok(q, in_first + 1, seed));
            zs_obj_read_end(pool, h[i], in_first + 1, q);
        }

        /* Mappings of a copied object: RW is stored at unmap, WO too, and RO writes
         * are lost (the contract's "where the object had to be copied"). */
        unsigned char *m = zs_map_object(pool, h[i], ZS_MM_RO);
        if (CHECK(m != NULL)) {
            CHECK(pattern_ok(m, size, seed));
            memset(m, 0xEE, size);
            zs_unmap_object(pool, h[i]);
            CHECK(object_ok(pool, h[i], size, seed));
        }
        m = zs_map_object(pool, h[i], ZS_MM_RW);
        if (CHECK(m != NULL)) {
            CHECK(pattern_ok(m, size, seed));
            fill_pattern(m, size, seed + 500);
            zs_unmap_object(pool, h[i]);
            CHECK(object_ok(pool, h[i], size, seed + 500));
        }
        m = zs_map_object(pool, h[i], ZS_MM_WO);
        if (CHECK(m != NULL)) {
            fill_pattern(m, size, seed + 900);
            zs_unmap_object(pool, h[i]);
            CHECK(object_ok(pool, h[i], size, seed + 900));
        }
        fill_pattern(local, size, seed);
        zs_obj_write(pool, h[i], local, size);
    }
    /* Scattered frames give objects whose two parts are apart in memory. */
    CHECK(copied > 0);
    for (int i = 0; i < N; i++)
        CHECK(object_ok(pool, h[i], size, 1000 + (uint64_t)i));
    CHECK_EQ(zs_pool_check(pool), 0);
    for (int i = 0; i < N; i++)
        zs_free(pool, h[i]);
    for (int i = 0; i < SPREAD; i++)
        zs_free(pool, keep[i]);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    CHECK_EQ(misuse_count(pool), 0);
    zs_destroy_pool(pool);
}

/* ---- page limit and ZS_ALLOC_NOGROW ----------------------------------------------- */

/* Zspages of a class or lane, over every fullness group. */
static unsigned long zspages_of(const struct zs_class_info *ci)
{
    unsigned long n = 0;
    for (int g = 0; g < ZS_NR_FULLNESS_GROUPS; g++)
        n += ci->zspages[g];
    return n;
}

/* The calling thread's lane of a dense pool (the class of any size). */
/* A class index no layout has, and sizes outside 1..ZS_MAX_ALLOC_SIZE, are refused
 * with EINVAL. */
static void check_lookup_refusals(struct zs_pool *pool)
{
    struct zs_class_info ci;
    errno = 0;
    CHECK_EQ(class_info_of(pool, UINT_MAX, &ci), -EINVAL);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK_EQ(zs_lookup_class_index(pool, 0), UINT_MAX);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK_EQ(zs_lookup_class_index(pool, (unsigned int)pool_info(pool).max_object_size + 1), UINT_MAX);
    CHECK_EQ(errno, EINVAL);
}

static struct zs_class_info my_lane(struct zs_pool *pool)
{
    struct zs_class_info ci;
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, 1), &ci), 0);
    return ci;
}

/* Where an object starts: a one-byte read is always in place, never the local copy.
 * The read is ended at once; the address is only compared. */
static unsigned char *first_byte(struct zs_pool *pool, unsigned long h)
{
    unsigned char local[1];
    unsigned char *p = zs_obj_read_begin(pool, h, 1, local);
    CHECK(p != NULL && p != local);
    if (p)
        zs_obj_read_end(pool, h, 1, p);
    return p;
}

/* A pool of `limit` frames, filled with 4096-byte objects into h[0..limit]: exactly
 * `limit` fit and the next is refused with ENOMEM. NULL if the pool was not made. */
static struct zs_pool *filled_to_page_limit(const char *name, unsigned int layout, unsigned long limit,
                                            unsigned long *h)
{
    struct zs_pool *pool = create_with(name, sizeof(struct zs_pool_config), limit, 0, layout);
    if (!CHECK(pool != NULL))
        return NULL;
    CHECK_EQ(fill_pages_until_enomem(pool, h, (int)limit + 1), limit);
    CHECK_EQ(zs_get_total_pages(pool), limit);
    return pool;
}

static void test_limits_kernel(void)
{
    /* max_pages: exactly that many one-frame objects (4096 bytes is of the kernel's
     * one-object-per-frame classes), then -ENOMEM. */
    unsigned long h[9];
    struct zs_pool *pool = filled_to_page_limit("api-limit-k", ZS_LAYOUT_KERNEL, 8, h);
    if (!pool)
        return;
    /* A class with no zspage yet cannot grow either. */
    check_malloc_enomem(pool, 100, 0);
    CHECK_EQ(pool_info(pool).live_objects, 8);
    CHECK_EQ(zs_pool_check(pool), 0);
    /* A frame given back can be taken again. */
    zs_free(pool, h[3]);
    CHECK_EQ(zs_get_total_pages(pool), 7);
    h[3] = zs_malloc(pool, ZS_MAX_ALLOC_SIZE, 0);
    CHECK(!ZS_IS_ERR(h[3]));
    CHECK_EQ(zs_get_total_pages(pool), 8);
    zs_destroy_pool(pool);

    /* ZS_ALLOC_NOGROW: only free slots of the class's existing zspages. */
    pool = test_pool("api-nogrow-k", ZS_LAYOUT_KERNEL, 0);
    check_malloc_enomem(pool, 200, ZS_ALLOC_NOGROW);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    unsigned long first = zs_malloc(pool, 200, 0);
    CHECK(!ZS_IS_ERR(first));
    unsigned long pages = zs_get_total_pages(pool);
    CHECK(pages > 0);
    struct zs_class_info ci;
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, 200), &ci), 0);
    CHECK(ci.objs_per_zspage > 1);
    static unsigned long more[4096];
    unsigned int room = ci.objs_per_zspage - 1, taken = 0;
    for (unsigned int i = 0; i < room && i < 4096; i++) {
        more[i] = zs_malloc(pool, 200, ZS_ALLOC_NOGROW);
        if (!CHECK(!ZS_IS_ERR(more[i])))
            break;
        taken++;
    }
    CHECK_EQ(taken, room);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    check_malloc_enomem(pool, 200, ZS_ALLOC_NOGROW);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    /* Without the flag the class grows. */
    unsigned long n = zs_malloc(pool, 200, 0);
    CHECK(!ZS_IS_ERR(n));
    CHECK(zs_get_total_pages(pool) > pages);
    /* Its only object freed, the new zspage goes; a freed object in the first one
     * leaves room that NOGROW may use. */
    zs_free(pool, n);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    zs_free(pool, more[0]);
    more[0] = zs_malloc(pool, 200, ZS_ALLOC_NOGROW);
    CHECK(!ZS_IS_ERR(more[0]));
    CHECK_EQ(zs_get_total_pages(pool), pages);
    CHECK_EQ(pool_info(pool).live_objects, (unsigned long)taken + 1);
    CHECK_EQ(zs_pool_check(pool), 0);
    zs_destroy_pool(pool);
}

static void test_limits_dense(void)
{
    /* max_pages 8, fewer than the chain of 16: the lane's zspage is cut to the eight
     * frames the limit leaves, and takes eight 4096-byte objects end to end. */
    unsigned long h[9];
    struct zs_pool *pool = filled_to_page_limit("api-limit-d", ZS_LAYOUT_DENSE, 8, h);
    if (!pool)
        return;
    struct zs_class_info ci = my_lane(pool);
    CHECK_EQ(zspages_of(&ci), 1);
    CHECK_EQ(ci.pages_used, 8);
    CHECK_EQ(ci.pages_per_zspage, 16); /* the chain, which that zspage could not have */
    CHECK_EQ(ci.zspages[ZS_NR_FULLNESS_GROUPS - 1], 1); /* every byte in use */
    /* Not a byte free and no frame to take: even one byte is refused. */
    check_malloc_enomem(pool, 1, 0);
    CHECK_EQ(pool_info(pool).live_objects, 8);
    CHECK_EQ(zs_pool_check(pool), 0);
    /* A freed object leaves a hole, not a free frame: the other seven keep the zspage. */
    unsigned char *hole = first_byte(pool, h[3]);
    zs_free(pool, h[3]);
    CHECK_EQ(zs_get_total_pages(pool), 8);
    /* The hole takes an object of any size that fits, at its start; the 3996 bytes
     * left of it are then too few for a full page. */
    unsigned long small = zs_malloc(pool, 100, 0);
    if (CHECK(!ZS_IS_ERR(small)))
        CHECK(first_byte(pool, small) == hole);
    check_malloc_enomem(pool, ZS_MAX_ALLOC_SIZE, 0);
    zs_free(pool, small);
    h[3] = zs_malloc(pool, ZS_MAX_ALLOC_SIZE, 0);
    CHECK(!ZS_IS_ERR(h[3]));
    CHECK_EQ(zs_get_total_pages(pool), 8);
    CHECK_EQ(zs_pool_check(pool), 0);
    for (int i = 0; i < 8; i++)
        zs_free(pool, h[i]);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    zs_destroy_pool(pool);

    /* max_pages 20: a zspage of the whole chain, then one cut to the four frames left;
     * so a lane's frames need not be its zspages times the chain. */
    unsigned long h20[21];
    pool = filled_to_page_limit("api-limit-d20", ZS_LAYOUT_DENSE, 20, h20);
    if (!pool)
        return;
    ci = my_lane(pool);
    CHECK_EQ(zspages_of(&ci), 2);
    CHECK_EQ(ci.pages_used, 20);
    CHECK_EQ(ci.pages_per_zspage, 16);
    CHECK_EQ(ci.objs_inuse, 20);
    CHECK_EQ(ci.objs_allocated, 20);
    CHECK_EQ(zs_pool_check(pool), 0);
    /* The short zspage goes when its last object does, the long one likewise. */
    for (int i = 16; i < 20; i++)
        zs_free(pool, h20[i]);
    CHECK_EQ(zs_get_total_pages(pool), 16);
    for (int i = 0; i < 16; i++)
        zs_free(pool, h20[i]);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    zs_destroy_pool(pool);

    /* ZS_ALLOC_NOGROW: only free runs of the lane's existing zspages (a hole or the
     * tail). A run of at least the size rounded up to 64 bytes (the placement buckets'
     * width) is always found; with no run of the size itself, -ENOMEM. */
    enum { SZ = 200, ROUNDED = 256 };
    /* Pinned to 4 KiB frames: the runs and counts below are a 4 KiB zspage's. */
    pool = test_pool_framed("api-nogrow-d", ZS_LAYOUT_DENSE, 0, 4096);
    check_malloc_enomem(pool, SZ, ZS_ALLOC_NOGROW);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    static unsigned long obj[1024];
    unsigned char buf[ZS_MAX_ALLOC_SIZE];
    obj[0] = zs_malloc(pool, SZ, 0);
    CHECK(!ZS_IS_ERR(obj[0]));
    unsigned long pages = zs_get_total_pages(pool);
    ci = my_lane(pool);
    CHECK_EQ(pages, ci.pages_per_zspage);
    const unsigned long cap = pages * 4096;
    /* The tail shrinks by 200 bytes an object, from 336 (at least 256: found) to 136
     * (less than 200: refused), never to a length in between: so the zspage takes
     * exactly as many as fit. */
    CHECK(cap % SZ + SZ >= ROUNDED);
    unsigned int taken = 1;
    while (taken < sizeof obj / sizeof obj[0]) {
        errno = 0;
        unsigned long x = zs_malloc(pool, SZ, ZS_ALLOC_NOGROW);
        if (ZS_IS_ERR(x)) {
            CHECK_EQ(ZS_ERR(x), ENOMEM);
            CHECK_EQ(errno, ENOMEM);
            break;
        }
        obj[taken++] = x;
    }
    CHECK_EQ(taken, cap / SZ);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    for (unsigned int i = 0; i < taken; i++) {
        fill_pattern(buf, SZ, 3000 + (uint64_t)i);
        zs_obj_write(pool, obj[i], buf, SZ);
    }
    /* Objects of every size share the zspage: the tail (136 bytes) still takes its
     * length rounded down to 64 bytes; after that only 8 bytes are free. */
    size_t tail = cap - (size_t)taken * SZ;
    size_t fits = tail / 64 * 64;
    CHECK(fits >= 64);
    unsigned long filler = zs_malloc(pool, fits, ZS_ALLOC_NOGROW);
    CHECK(!ZS_IS_ERR(filler));
    check_malloc_enomem(pool, tail - fits + 1, ZS_ALLOC_NOGROW);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    /* Without the flag the lane grows a zspage, given back with its only object. */
    unsigned long n = zs_malloc(pool, SZ, 0);
    CHECK(!ZS_IS_ERR(n));
    CHECK_EQ(zs_get_total_pages(pool), 2 * pages);
    zs_free(pool, n);
    CHECK_EQ(zs_get_total_pages(pool), pages);
    /* A freed object becomes a hole that NOGROW fills, from its start (the 150 bytes
     * round up to 192, which the 200-byte hole holds)... */
    const unsigned int victim = 100;
    unsigned char *at = first_byte(pool, obj[victim]);
    zs_free(pool, obj[victim]);
    n = zs_malloc(pool, 150, ZS_ALLOC_NOGROW);
    if (CHECK(!ZS_IS_ERR(n))) {
        CHECK(first_byte(pool, n) == at);
        fill_pattern(buf, 150, 2999);
        zs_obj_write(pool, n, buf, 150);
        CHECK(object_ok(pool, n, 150, 2999));
    }
    CHECK_EQ(zs_get_total_pages(pool), pages);
    /* ... and once the 50 bytes left of it and the tail's 8 are all that is free,
     * nothing longer fits. */
    check_malloc_enomem(pool, SZ - 150 + 1, ZS_ALLOC_NOGROW);
    /* The bytes around the hole are the neighbours' still, and the books agree. */
    unsigned long bad = 0;
    for (unsigned int i = 0; i < taken; i++)
        if (i != victim && !object_ok(pool, obj[i], SZ, 3000 + (uint64_t)i))
            bad++;
    CHECK_EQ(bad, 0);
    ci = my_lane(pool);
    CHECK_EQ(ci.objs_inuse, (unsigned long)taken + 1); /* the victim out, 150 and filler in */
    CHECK_EQ(ci.objs_allocated, ci.objs_inuse);
    CHECK_EQ(ci.pages_used, pages);
    CHECK_EQ(ci.zspages[ZS_NR_FULLNESS_GROUPS - 2], 1); /* 58 bytes free: 90-99% */
    CHECK_EQ(pool_info(pool).live_objects, (unsigned long)taken + 1);
    CHECK_EQ(zs_pool_check(pool), 0);
    zs_destroy_pool(pool);
}

/* ---- the class table ------------------------------------------------------------ */

static void check_huge_boundary(struct zs_pool *pool, const char *what)
{
    size_t huge = zs_huge_class_size(pool);
    size_t max = pool_info(pool).max_object_size;
    struct zs_class_info ci;
    if (!CHECK(huge > 1 && huge <= max)) {
        fprintf(stderr, "  %s\n", what);
        return;
    }
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, (unsigned int)huge), &ci), 0);
    if (!CHECK(ci.objs_per_zspage == 1 && ci.pages_per_zspage == 1))
        fprintf(stderr, "  %s: size %zu is not one object per frame\n", what, huge);
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, (unsigned int)huge - 1), &ci), 0);
    if (!CHECK(ci.objs_per_zspage > 1))
        fprintf(stderr, "  %s: size %zu is already one object per frame\n", what, huge - 1);
    /* Every size from there up is stored one per frame. */
    for (size_t s = huge; s <= max; s += 7) {
        class_info_of(pool, zs_lookup_class_index(pool, (unsigned int)s), &ci);
        if (ci.objs_per_zspage != 1) {
            CHECK(!"a size above the huge class size shares a frame");
            break;
        }
    }
    /* And an object of that size takes exactly one frame. */
    unsigned long before = zs_get_total_pages(pool);
    unsigned long h = zs_malloc(pool, huge, 0);
    CHECK(!ZS_IS_ERR(h));
    CHECK_EQ(zs_get_total_pages(pool), before + 1);
    zs_free(pool, h);
}

static void test_huge_class_size(void)
{
    struct {
        unsigned int chain;
        size_t expect;
    } kernel[] = {{0, 3625}, {4, 3257}, {8, 3625}, {16, 3833}};
    for (size_t i = 0; i < sizeof kernel / sizeof kernel[0]; i++) {
        /* Pinned to 4 KiB frames: the kernel's class table at 4 KiB pages. */
        struct zs_pool *p = test_pool_framed("api-huge-k", ZS_LAYOUT_KERNEL, kernel[i].chain, 4096);
        CHECK_EQ(zs_huge_class_size(p), kernel[i].expect);
        check_huge_boundary(p, "kernel layout");
        zs_destroy_pool(p);
    }
    /* The dense layout stores no size alone: 4096, the full page, is its "huge
     * class size", and even objects of that size share zspages, end to end, `chain`
     * of them to a zspage. */
    struct {
        unsigned int chain, frames;
    } dense[] = {{0, 16}, {4, 4}, {8, 8}, {16, 16}};
    for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++) {
        /* Pinned to 4 KiB frames: `chain` full 4096-byte pages to a zspage. */
        struct zs_pool *p = test_pool_framed("api-huge-d", ZS_LAYOUT_DENSE, dense[i].chain, 4096);
        unsigned long chain = dense[i].frames;
        CHECK_EQ(zs_huge_class_size(p), ZS_MAX_ALLOC_SIZE);
        struct zs_class_info ci = my_lane(p);
        CHECK_EQ(ci.class_size, ZS_MAX_ALLOC_SIZE);
        CHECK_EQ(ci.pages_per_zspage, chain);
        CHECK_EQ(ci.objs_per_zspage, 0);
        /* 4095 bytes and 1 byte share the first frame. */
        unsigned long a = zs_malloc(p, ZS_MAX_ALLOC_SIZE - 1, 0), b = zs_malloc(p, 1, 0);
        CHECK(!ZS_IS_ERR(a) && !ZS_IS_ERR(b));
        CHECK_EQ(zs_get_total_pages(p), chain);
        ci = my_lane(p);
        CHECK_EQ(zspages_of(&ci), 1);
        CHECK_EQ(ci.objs_inuse, 2);
        zs_free(p, a);
        zs_free(p, b);
        CHECK_EQ(zs_get_total_pages(p), 0);
        /* `chain` full pages fill one zspage exactly; one more opens a second. */
        unsigned long h[17];
        for (unsigned long k = 0; k <= chain; k++) {
            h[k] = zs_malloc(p, ZS_MAX_ALLOC_SIZE, 0);
            CHECK(!ZS_IS_ERR(h[k]));
            CHECK_EQ(zs_get_total_pages(p), k < chain ? chain : 2 * chain);
        }
        ci = my_lane(p);
        CHECK_EQ(ci.zspages[ZS_NR_FULLNESS_GROUPS - 1], 1);
        CHECK_EQ(zspages_of(&ci), 2);
        for (unsigned long k = 0; k <= chain; k++)
            zs_free(p, h[k]);
        CHECK_EQ(zs_get_total_pages(p), 0);
        CHECK_EQ(zs_pool_check(p), 0);
        zs_destroy_pool(p);
    }
}

/* The kernel's layout: a class table ordered by size, every class holding its sizes. */
static void check_class_table(struct zs_pool *pool)
{
    static unsigned char is_lookup[4096];
    memset(is_lookup, 0, sizeof is_lookup);
    unsigned int prev = 0;
    unsigned long bad_order = 0, bad_fit = 0, bad_info = 0;
    struct zs_class_info ci;
    size_t huge = zs_huge_class_size(pool);
    for (unsigned int s = 1; s <= ZS_MAX_ALLOC_SIZE; s++) {
        unsigned int idx = zs_lookup_class_index(pool, s);
        if (idx >= sizeof is_lookup) {
            bad_info++;
            continue;
        }
        is_lookup[idx] = 1;
        if (idx < prev)
            bad_order++;
        prev = idx;
        if (class_info_of(pool, idx, &ci) != 0) {
            bad_info++;
            continue;
        }
        /* The slot holds the object (with the kernel's 8-byte header where the kernel
         * puts one: every class but the one-object-per-frame ones). */
        size_t need = s + (s < huge ? 8 : 0);
        if (ci.class_size < need || ci.objs_per_zspage * ci.class_size > ci.pages_per_zspage * 4096u)
            bad_fit++;
    }
    CHECK_EQ(bad_order, 0);
    CHECK_EQ(bad_fit, 0);
    CHECK_EQ(bad_info, 0);
    /* zs_class_info accepts exactly the indices that zs_lookup_class_index returns. */
    unsigned long mismatch = 0, classes = 0;
    for (unsigned int idx = 0; idx < sizeof is_lookup; idx++) {
        int ok = class_info_of(pool, idx, &ci) == 0;
        classes += ok;
        if (ok != is_lookup[idx])
            mismatch++;
    }
    CHECK_EQ(mismatch, 0);
    CHECK(classes > 10);
    check_lookup_refusals(pool);

    /* An allocation lands in the class the lookup names. */
    unsigned int sizes[] = {1, 15, 16, 17, 100, 700, 1500, 2049, 3000, 3600, 3700, 4000, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned int idx = zs_lookup_class_index(pool, sizes[i]);
        class_info_of(pool, idx, &ci);
        unsigned long before = ci.objs_inuse;
        unsigned long h = zs_malloc(pool, sizes[i], 0);
        class_info_of(pool, idx, &ci);
        CHECK_EQ(ci.objs_inuse, before + 1);
        CHECK(ci.pages_used > 0);
        zs_free(pool, h);
        class_info_of(pool, idx, &ci);
        CHECK_EQ(ci.objs_inuse, before);
    }
}

/* A thread other than main: its lane, for every size, and an object allocated there. */
struct lane_probe {
    struct zs_pool *pool;
    unsigned int lane;
    unsigned long other_lane; /* sizes whose lookup named another lane */
    unsigned long h;
};

static void *lane_probe_main(void *arg)
{
    struct lane_probe *p = arg;
    p->lane = zs_lookup_class_index(p->pool, 1);
    for (unsigned int s = 1; s <= ZS_MAX_ALLOC_SIZE; s++)
        p->other_lane += zs_lookup_class_index(p->pool, s) != p->lane;
    p->h = zs_malloc(p->pool, 100, 0);
    return NULL;
}

/* The dense layout: no size classes but lanes, one per CPU up to 16, each reporting
 * the same facts; a thread allocates every size in its own lane. */
static void check_dense_lanes(struct zs_pool *pool)
{
    struct zs_class_info ci;
    unsigned int lane = zs_lookup_class_index(pool, 1);
    unsigned long other_lane = 0;
    for (unsigned int s = 1; s <= ZS_MAX_ALLOC_SIZE; s++)
        other_lane += zs_lookup_class_index(pool, s) != lane;
    CHECK_EQ(other_lane, 0);
    /* The lanes are the indices 0..n-1 and nothing else. */
    unsigned int lanes = 0;
    unsigned long bad_info = 0;
    while (lanes < 1024 && class_info_of(pool, lanes, &ci) == 0) {
        if (ci.class_size != ZS_MAX_ALLOC_SIZE || ci.pages_per_zspage != 16 || ci.objs_per_zspage != 0 ||
            ci.objs_inuse != 0 || ci.objs_allocated != 0 || ci.pages_used != 0 || zspages_of(&ci) != 0)
            bad_info++;
        lanes++;
    }
    CHECK(lanes >= 1 && lanes <= 16);
    CHECK(lane < lanes);
    CHECK_EQ(bad_info, 0);
    unsigned long beyond = 0;
    for (unsigned int idx = lanes; idx < 1024; idx++)
        beyond += class_info_of(pool, idx, &ci) == 0;
    CHECK_EQ(beyond, 0);
    check_lookup_refusals(pool);

    /* Objects of every size land in the lane, together in one zspage: 22794 bytes of
     * its 65536 (34%: the 31-40% group). */
    unsigned int sizes[] = {1, 15, 16, 17, 100, 700, 1500, 2049, 3000, 3600, 3700, 4000, 4096};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    unsigned long h[NS], used = 0;
    for (size_t i = 0; i < NS; i++) {
        h[i] = zs_malloc(pool, sizes[i], 0);
        CHECK(!ZS_IS_ERR(h[i]));
        used += sizes[i];
        CHECK_EQ(class_info_of(pool, lane, &ci), 0);
        CHECK_EQ(ci.objs_inuse, i + 1);
        CHECK_EQ(ci.objs_allocated, i + 1);
        CHECK_EQ(ci.pages_used, 16);
    }
    CHECK_EQ(used, 22794);
    CHECK_EQ(zspages_of(&ci), 1);
    CHECK_EQ(ci.zspages[4], 1);
    CHECK_EQ(zs_get_total_pages(pool), 16);
    CHECK_EQ(pool_info(pool).requested_bytes, used);

    /* Another thread: a lane of the pool, the same for every size, and its object is
     * counted there (the same lane as main's when threads outnumber the lanes). */
    struct lane_probe probe = {pool, UINT_MAX, 0, 0};
    pthread_t th;
    if (CHECK_EQ(pthread_create(&th, NULL, lane_probe_main, &probe), 0)) {
        pthread_join(th, NULL);
        CHECK(probe.lane < lanes);
        CHECK_EQ(probe.other_lane, 0);
        CHECK(!ZS_IS_ERR(probe.h));
        CHECK_EQ(class_info_of(pool, probe.lane, &ci), 0);
        CHECK_EQ(ci.objs_inuse, probe.lane == lane ? NS + 1 : 1);
        /* Freed from this thread: the object goes from its own lane. */
        zs_free(pool, probe.h);
        CHECK_EQ(class_info_of(pool, probe.lane, &ci), 0);
        CHECK_EQ(ci.objs_inuse, probe.lane == lane ? NS : 0);
    }
    for (size_t i = 0; i < NS; i++)
        zs_free(pool, h[i]);
    CHECK_EQ(class_info_of(pool, lane, &ci), 0);
    CHECK_EQ(ci.objs_inuse, 0);
    CHECK_EQ(ci.pages_used, 0);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    CHECK_EQ(zs_pool_check(pool), 0);
}

static void test_class_table(void)
{
    /* Pinned to 4 KiB frames: a lane's zspage of sixteen 4 KiB frames and its fullness. */
    struct zs_pool *dense = test_pool_framed("api-classes-d", ZS_LAYOUT_DENSE, 0, 4096);
    check_dense_lanes(dense);
    zs_destroy_pool(dense);

    /* Pinned to 4 KiB frames: the kernel's class table at 4 KiB pages. */
    struct zs_pool *kernel = test_pool_framed("api-classes-k", ZS_LAYOUT_KERNEL, 8, 4096);
    check_class_table(kernel);
    /* The kernel's table (mm/zsmalloc.c, chain 8): 255 classes 16 bytes apart from 32,
     * an 8-byte handle in the object; 4096 is class 254; 3624 + 8 = 3632 bytes is the
     * class of 8 frames holding 9 objects; 40 + 8 = 48 bytes is 3 frames, 256 objects. */
    struct zs_class_info ci;
    CHECK_EQ(zs_lookup_class_index(kernel, 4096), 254);
    CHECK_EQ(zs_lookup_class_index(kernel, 3625), 254);
    CHECK_EQ(class_info_of(kernel, 254, &ci), 0);
    CHECK_EQ(ci.class_size, 4096);
    CHECK_EQ(class_info_of(kernel, zs_lookup_class_index(kernel, 3624), &ci), 0);
    CHECK_EQ(ci.class_size, 3632);
    CHECK_EQ(ci.pages_per_zspage, 8);
    CHECK_EQ(ci.objs_per_zspage, 9);
    CHECK_EQ(zs_lookup_class_index(kernel, 40), 1);
    CHECK_EQ(class_info_of(kernel, 1, &ci), 0);
    CHECK_EQ(ci.class_size, 48);
    CHECK_EQ(ci.pages_per_zspage, 3);
    CHECK_EQ(ci.objs_per_zspage, 256);
    CHECK_EQ(class_info_of(kernel, 255, &ci), -EINVAL);
    zs_destroy_pool(kernel);
}

/* ---- statistics ------------------------------------------------------------------- */

static void test_stats(void)
{
    struct zs_pool *pool = test_pool("api-stats", ZS_LAYOUT_DENSE, 0);
    struct zs_pool_stats st;
    st.pages_compacted = 12345;
    zs_pool_stats(pool, &st);
    CHECK_EQ(st.pages_compacted, 0);
    errno = 0;
    zs_pool_stats(pool, NULL);
    CHECK_EQ(errno, EINVAL);

    struct zs_pool_info info = pool_info(pool);
    CHECK_EQ(info.size, sizeof info); /* size is left as the caller set it */
    CHECK_EQ(info.live_objects, 0);
    CHECK_EQ(info.requested_bytes, 0);
    CHECK_EQ(info.total_pages, 0);
    CHECK_EQ(info.pages_compacted, 0);
    CHECK_EQ(info.objs_moved, 0);
    CHECK_EQ(info.compact_skipped_mapped, 0);
    CHECK_EQ(info.misuse_events, 0);
    CHECK(info.meta_bytes > 0);

    unsigned long h[64];
    for (int i = 0; i < 64; i++)
        h[i] = zs_malloc(pool, 1000 + (size_t)i, 0);
    info = pool_info(pool);
    CHECK_EQ(info.live_objects, 64);
    CHECK_EQ(info.requested_bytes, 64 * 1000 + 63 * 64 / 2);
    CHECK_EQ(info.total_pages, zs_get_total_pages(pool));
    /* 64 objects of about 1 KiB need at least that many bytes of frames. */
    CHECK(info.total_pages * info.frame_size >= info.requested_bytes);

    /* The size convention: a caller compiled with fewer fields gets only those. */
    struct zs_pool_info part;
    memset(&part, 0x5A, sizeof part);
    part.size = offsetof(struct zs_pool_info, total_pages);
    CHECK_EQ(zs_pool_info(pool, &part), 0);
    CHECK_EQ(part.size, offsetof(struct zs_pool_info, total_pages));
    CHECK_EQ(part.live_objects, 64);
    CHECK_EQ(part.requested_bytes, info.requested_bytes);
    unsigned char sentinel[256]; /* longer than any of the structs */
    memset(sentinel, 0x5A, sizeof sentinel);
    CHECK(memcmp((unsigned char *)&part + part.size, sentinel, sizeof part - part.size) == 0);

    /* ... and a caller compiled with more fields gets ours and keeps the rest. */
    struct {
        struct zs_pool_info i;
        unsigned char later[32];
    } big;
    memset(&big, 0x5A, sizeof big);
    big.i.size = sizeof big;
    CHECK_EQ(zs_pool_info(pool, &big.i), 0);
    CHECK_EQ(big.i.live_objects, 64);
    CHECK_EQ(big.i.misuse_events, 0);
    CHECK(memcmp(big.later, sentinel, sizeof big.later) == 0);

    /* Shorter than the size field itself: refused. */
    struct zs_pool_info tiny;
    memset(&tiny, 0, sizeof tiny);
    tiny.size = 0;
    errno = 0;
    CHECK_EQ(zs_pool_info(pool, &tiny), -EINVAL);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(tiny.live_objects, 0);
    errno = 0;
    CHECK_EQ(zs_pool_info(pool, NULL), -EINVAL);
    CHECK_EQ(errno, EINVAL);

    /* zs_class_info follows the same convention. */
    unsigned int idx = zs_lookup_class_index(pool, 1000);
    struct zs_class_info ci;
    memset(&ci, 0x5A, sizeof ci);
    ci.size = offsetof(struct zs_class_info, zspages);
    CHECK_EQ(zs_class_info(pool, idx, &ci), 0);
    /* The declared fields were written (0x5A5A5A5A otherwise): a dense lane's. */
    CHECK_EQ(ci.class_size, info.max_object_size);
    CHECK_EQ(ci.pages_per_zspage * info.frame_size, 65536); /* the default chain: 64 KiB */
    CHECK_EQ(ci.objs_per_zspage, 0);
    CHECK(memcmp((unsigned char *)&ci + ci.size, sentinel, sizeof ci - ci.size) == 0);
    struct {
        struct zs_class_info c;
        unsigned char later[32];
    } bigc;
    memset(&bigc, 0x5A, sizeof bigc);
    bigc.c.size = sizeof bigc;
    CHECK_EQ(zs_class_info(pool, idx, &bigc.c), 0);
    CHECK_EQ(bigc.c.objs_inuse, 64);
    CHECK_EQ(bigc.c.objs_allocated, 64);
    CHECK_EQ(bigc.c.pages_used, info.total_pages);
    CHECK(memcmp(bigc.later, sentinel, sizeof bigc.later) == 0);
    errno = 0;
    CHECK_EQ(zs_class_info(pool, idx, NULL), -EINVAL);
    CHECK_EQ(errno, EINVAL);
    memset(&ci, 0, sizeof ci);
    errno = 0;
    CHECK_EQ(zs_class_info(pool, idx, &ci), -EINVAL);
    CHECK_EQ(errno, EINVAL);

    /* Fullness groups: a class with one zspage holding one small object, under 10% full:
     * of its slots in the kernel's layout (one of many), of its bytes in a dense lane
     * (64 of 65536). A lone zspage has nothing compaction could free. */
    for (int layout = 0; layout <= 1; layout++) {
        struct zs_pool *one = test_pool("api-groups", (enum zs_layout)layout, 0);
        unsigned long h1 = zs_malloc(one, 64, 0);
        struct zs_class_info g;
        CHECK_EQ(class_info_of(one, zs_lookup_class_index(one, 64), &g), 0);
        CHECK_EQ(g.objs_inuse, 1);
        CHECK_EQ(g.zspages[1], 1); /* under 10% */
        CHECK_EQ(zspages_of(&g), 1);
        CHECK_EQ(g.pages_used, g.pages_per_zspage);
        if (layout == ZS_LAYOUT_KERNEL) {
            CHECK(g.objs_per_zspage > 1);
            CHECK_EQ(g.objs_allocated, g.objs_per_zspage);
        } else {
            CHECK_EQ(g.objs_per_zspage, 0);
            CHECK_EQ(g.objs_allocated, 1);
        }
        CHECK_EQ(g.pages_freeable, 0);
        zs_free(one, h1);
        zs_destroy_pool(one);
    }

    /* A dense zspage's bytes all in use is the 100% group; one full page freed of
     * sixteen leaves 93.75%, the 90-99% group. */
    struct zs_pool *full = test_pool("api-groups-full", ZS_LAYOUT_DENSE, 0);
    unsigned long hf[16];
    for (int i = 0; i < 16; i++)
        CHECK(!ZS_IS_ERR(hf[i] = zs_malloc(full, ZS_MAX_ALLOC_SIZE, 0)));
    struct zs_class_info g = my_lane(full);
    CHECK_EQ(zspages_of(&g), 1);
    CHECK_EQ(g.zspages[ZS_NR_FULLNESS_GROUPS - 1], 1);
    zs_free(full, hf[5]);
    g = my_lane(full);
    CHECK_EQ(g.zspages[ZS_NR_FULLNESS_GROUPS - 2], 1);
    CHECK_EQ(g.objs_inuse, 15);
    for (int i = 0; i < 16; i++)
        if (i != 5)
            zs_free(full, hf[i]);
    CHECK_EQ(zs_get_total_pages(full), 0);
    zs_destroy_pool(full);

    for (int i = 0; i < 64; i++)
        zs_free(pool, h[i]);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    CHECK_EQ(zs_pool_check(pool), 0);
    zs_destroy_pool(pool);
}

/* ---- many simultaneous mappings and reads on one thread ---------------------------- */

static void test_many_mappings(void)
{
    struct zs_pool *pool = test_pool("api-maps", ZS_LAYOUT_DENSE, 0);
    /* The contract: a thread may hold at least 16 mappings at once. */
    enum { N = 16, SPREAD = 8 };
    unsigned long h[N], keep[SPREAD];
    size_t size[N];
    unsigned char *m[N];
    /* Half of them on scattered frames, so that some mappings are copies. */
    alloc_on_scattered_frames(pool, h, N / 2, 3000, keep, SPREAD);
    for (int i = 0; i < N; i++) {
        size[i] = i < N / 2 ? 3000 : (size_t)(i * 173 % 4000) + 1;
        if (i >= N / 2)
            h[i] = zs_malloc(pool, size[i], 0);
        unsigned char buf[ZS_MAX_ALLOC_SIZE];
        fill_pattern(buf, size[i], 7000 + (uint64_t)i);
        zs_obj_write(pool, h[i], buf, size[i]);
    }
    for (int i = 0; i < N; i++) {
        m[i] = zs_map_object(pool, h[i], i % 3 == 0 ? ZS_MM_RO : ZS_MM_RW);
        CHECK(m[i] != NULL);
    }
    /* All held at once: each still shows its own object, and they do not overlap. */
    for (int i = 0; i < N; i++) {
        if (!m[i])
            continue;
        CHECK(pattern_ok(m[i], size[i], 7000 + (uint64_t)i));
        for (int j = 0; j < i; j++)
            if (m[j] && m[i] < m[j] + size[j] && m[j] < m[i] + size[i])
                CHECK(!"two mappings overlap");
    }
    for (int i = 0; i < N; i++)
        if (m[i] && i % 3 != 0)
            fill_pattern(m[i], size[i], 8000 + (uint64_t)i);
    /* Unmapped in an order other than the reverse. */
    for (int k = 0; k < N; k++) {
        int i = (k * 7) % N;
        if (m[i])
            zs_unmap_object(pool, h[i]);
    }
    for (int i = 0; i < N; i++)
        CHECK(object_ok(pool, h[i], size[i], i % 3 == 0 ? 7000 + (uint64_t)i : 8000 + (uint64_t)i));
    CHECK_EQ(misuse_count(pool), 0);

    /* The same handle mapped twice (read-only mappings share an object), and a read of
     * every object begun beside them. */
    void *a = zs_map_object(pool, h[1], ZS_MM_RO);
    void *b = zs_map_object(pool, h[1], ZS_MM_RO);
    /* Beside them, a writable mapping and a write of that object are refused. */
    errno = 0;
    CHECK(zs_map_object(pool, h[1], ZS_MM_RW) == NULL);
    CHECK_EQ(errno, EBUSY);
    errno = 0;
    zs_obj_write(pool, h[1], "x", 1);
    CHECK_EQ(errno, EBUSY);
    static unsigned char local[N][ZS_MAX_ALLOC_SIZE];
    void *r[N];
    for (int i = 0; i < N; i++) {
        r[i] = zs_obj_read_begin(pool, h[i], size[i], local[i]);
        CHECK(r[i] != NULL);
    }
    CHECK(a && b && pattern_ok(a, size[1], 8001) && pattern_ok(b, size[1], 8001));
    for (int i = 0; i < N; i++)
        if (r[i])
            CHECK(pattern_ok(r[i], size[i], i % 3 == 0 ? 7000 + (uint64_t)i : 8000 + (uint64_t)i));
    for (int i = N - 1; i >= 0; i -= 2)
        if (r[i])
            zs_obj_read_end(pool, h[i], size[i], r[i]);
    for (int i = 0; i < N; i += 2)
        if (r[i])
            zs_obj_read_end(pool, h[i], size[i], r[i]);
    zs_unmap_object(pool, h[1]);
    zs_unmap_object(pool, h[1]);
    CHECK_EQ(misuse_count(pool), 0);

    for (int i = 0; i < N; i++)
        zs_free(pool, h[i]);
    for (int i = 0; i < SPREAD; i++)
        zs_free(pool, keep[i]);
    /* Every mapping and read was ended: nothing is pinned, everything was freed. */
    check_emptied_and_destroy(pool, 0);
}

/* ---- readers share an object, a writer holds it alone ------------------------------ */

/*
 * A writable mapping (ZS_MM_RW, ZS_MM_WO) is the only view of its object while it is
 * open: every other mapping, read and write of it is refused with EBUSY, on this
 * thread too, and none waits. A read (read_begin .. read_end) or a read-only mapping
 * shares the object with other readers and keeps writers out. None of these refusals
 * is a misuse; only freeing a held object is.
 */
static void test_readers_and_writers(enum zs_layout layout)
{
    struct zs_pool *pool = test_pool("api-rw", layout, 0);
    unsigned char buf[ZS_MAX_ALLOC_SIZE], local[ZS_MAX_ALLOC_SIZE];
    unsigned long h = zs_malloc(pool, 300, 0), other = zs_malloc(pool, 300, 0);
    fill_pattern(buf, 300, 21);
    zs_obj_write(pool, h, buf, 300);
    for (int mode = ZS_MM_RW; mode <= ZS_MM_WO; mode += ZS_MM_WO - ZS_MM_RW) {
        unsigned char *m = zs_map_object(pool, h, (enum zs_mapmode)mode);
        if (!CHECK(m != NULL))
            continue;
        for (int second = ZS_MM_RW; second <= ZS_MM_WO; second++) {
            errno = 0;
            CHECK(zs_map_object(pool, h, (enum zs_mapmode)second) == NULL);
            CHECK_EQ(errno, EBUSY);
        }
        errno = 0;
        CHECK(zs_obj_read_begin(pool, h, 300, local) == NULL);
        CHECK_EQ(errno, EBUSY);
        errno = 0;
        zs_obj_write(pool, h, buf, 300);
        CHECK_EQ(errno, EBUSY);
        errno = 0;
        zs_free(pool, h);
        CHECK_EQ(errno, EBUSY);
        /* Other objects are not held by it. */
        errno = 0;
        zs_obj_write(pool, other, buf, 300);
        CHECK_EQ(errno, 0);
        fill_pattern(m, 300, 22);
        zs_unmap_object(pool, h);
        CHECK(object_ok(pool, h, 300, 22));
    }
    CHECK_EQ(misuse_count(pool), 2); /* the two frees of a mapped object */
    /* A read in progress keeps writers out and lets readers in. */
    unsigned char *r = zs_obj_read_begin(pool, h, 300, local);
    CHECK(r != NULL);
    unsigned char *ro = zs_map_object(pool, h, ZS_MM_RO);
    CHECK(ro != NULL && pattern_ok(ro, 300, 22));
    errno = 0;
    zs_obj_write(pool, h, buf, 300);
    CHECK_EQ(errno, EBUSY);
    errno = 0;
    CHECK(zs_map_object(pool, h, ZS_MM_WO) == NULL);
    CHECK_EQ(errno, EBUSY);
    if (ro)
        zs_unmap_object(pool, h);
    if (r)
        zs_obj_read_end(pool, h, 300, r);
    /* A too-long write is refused as the misuse it is even while the object is read. */
    r = zs_obj_read_begin(pool, h, 10, local);
    errno = 0;
    zs_obj_write(pool, h, buf, ZS_MAX_ALLOC_SIZE);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(misuse_count(pool), 3);
    if (r)
        zs_obj_read_end(pool, h, 10, r);
    /* Everything ended: the object is writable again. */
    errno = 0;
    zs_obj_write(pool, h, buf, 300);
    CHECK_EQ(errno, 0);
    CHECK(object_ok(pool, h, 300, 21));
    zs_free(pool, h);
    zs_free(pool, other);
    check_emptied_and_destroy(pool, 3);
}

/* ---- writes shorter than the object and up to its slot -------------------------- */

static void test_partial_writes(enum zs_layout layout)
{
    struct zs_pool *pool = test_pool("api-writes", layout, 0);
    unsigned char buf[ZS_MAX_ALLOC_SIZE], local[ZS_MAX_ALLOC_SIZE];
    unsigned long h = zs_malloc(pool, 500, 0);
    fill_pattern(buf, 500, 1);
    zs_obj_write(pool, h, buf, 500);
    /* A shorter write replaces only the start. */
    unsigned char head[100];
    memset(head, 0x77, sizeof head);
    zs_obj_write(pool, h, head, sizeof head);
    memcpy(buf, head, sizeof head);
    unsigned char *p = zs_obj_read_begin(pool, h, 500, local);
    CHECK(p && memcmp(p, buf, 500) == 0);
    if (p)
        zs_obj_read_end(pool, h, 500, p);
    /* Zero bytes, even from NULL, is not an error and changes nothing. */
    errno = 0;
    zs_obj_write(pool, h, NULL, 0);
    zs_obj_write(pool, h, head, 0);
    CHECK_EQ(errno, 0);
    p = zs_obj_read_begin(pool, h, 500, local);
    CHECK(p && memcmp(p, buf, 500) == 0);
    if (p)
        zs_obj_read_end(pool, h, 500, p);
    /* The whole slot may be written and read: in the kernel's layout the class's
     * size less the kernel's 8-byte handle header (at least the object's size), in
     * the dense layout exactly the object's size (a lane's class_size, 4096, is no
     * slot: test_misuse refuses one byte more). */
    size_t slot = 500;
    if (layout == ZS_LAYOUT_KERNEL) {
        struct zs_class_info ci;
        CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, 500), &ci), 0);
        slot = ci.class_size - 8;
        CHECK(slot > 500 && slot < ZS_MAX_ALLOC_SIZE);
    }
    fill_pattern(buf, slot, 2);
    zs_obj_write(pool, h, buf, slot);
    CHECK(object_ok(pool, h, slot, 2));
    /* ... and writing it left the neighbours alone (in the dense layout they start
     * right at its last byte: see test_dense_packing). */
    unsigned long n1 = zs_malloc(pool, 500, 0), n2 = zs_malloc(pool, 500, 0);
    fill_pattern(buf, 500, 3);
    zs_obj_write(pool, n1, buf, 500);
    fill_pattern(buf, 500, 4);
    zs_obj_write(pool, n2, buf, 500);
    fill_pattern(buf, slot, 5);
    zs_obj_write(pool, h, buf, slot);
    CHECK(object_ok(pool, n1, 500, 3));
    CHECK(object_ok(pool, n2, 500, 4));
    CHECK(object_ok(pool, h, slot, 5));
    CHECK_EQ(misuse_count(pool), 0);
    zs_free(pool, h);
    zs_free(pool, n1);
    zs_free(pool, n2);
    zs_destroy_pool(pool);
}

/* ---- the dense layout packs objects end to end ------------------------------------ */

static void test_dense_packing(void)
{
    /* A fresh lane fills its first zspage from the start: each object begins where
     * the one before it ended, at any byte offset, with no padding; the 200-byte and
     * the 4096-byte ones straddle the first and second frame boundaries. */
    struct zs_pool *pool = test_pool("api-pack", ZS_LAYOUT_DENSE, 0);
    static const size_t sizes[] = {1, 3, 7, 500, 3485, 200, 4096, 13};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned long h[N];
    size_t off[N];
    unsigned char buf[ZS_MAX_ALLOC_SIZE], local[ZS_MAX_ALLOC_SIZE];
    for (size_t i = 0; i < N; i++) {
        off[i] = i ? off[i - 1] + sizes[i - 1] : 0;
        h[i] = zs_malloc(pool, sizes[i], 0);
        if (!CHECK(!ZS_IS_ERR(h[i]))) {
            zs_destroy_pool(pool);
            return;
        }
        fill_pattern(buf, sizes[i], 9000 + (uint64_t)i);
        zs_obj_write(pool, h[i], buf, sizes[i]);
    }
    CHECK(off[5] < 4096 && off[5] + sizes[5] > 4096);
    CHECK(off[6] < 8192 && off[6] + sizes[6] > 8192);
    unsigned char *base = first_byte(pool, h[0]);
    CHECK(base && (uintptr_t)base % 4096 == 0);
    for (size_t i = 0; i < N; i++)
        if (!CHECK(first_byte(pool, h[i]) == base + off[i]))
            fprintf(stderr, "  object %zu (%zu bytes) not at offset %zu\n", i, sizes[i], off[i]);
    /* The zspage's frames are fresh from the arena, adjacent: the straddling objects
     * are read and mapped in place too, and a mapping is exactly the object's bytes. */
    for (size_t i = 0; i < N; i++) {
        unsigned char *p = zs_obj_read_begin(pool, h[i], sizes[i], local);
        CHECK(p == base + off[i]);
        if (p) {
            CHECK(pattern_ok(p, sizes[i], 9000 + (uint64_t)i));
            zs_obj_read_end(pool, h[i], sizes[i], p);
        }
        p = zs_map_object(pool, h[i], ZS_MM_RW);
        CHECK(p == base + off[i]);
        if (p) {
            fill_pattern(p, sizes[i], 9100 + (uint64_t)i);
            zs_unmap_object(pool, h[i]);
        }
    }
    /* Every object written whole through its mapping, and none spilled over. */
    for (size_t i = 0; i < N; i++)
        CHECK(object_ok(pool, h[i], sizes[i], 9100 + (uint64_t)i));
    CHECK_EQ(pool_info(pool).requested_bytes, off[N - 1] + sizes[N - 1]);
    CHECK_EQ(misuse_count(pool), 0);
    for (size_t i = 0; i < N; i++)
        zs_free(pool, h[i]);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    zs_destroy_pool(pool);
}

/* ---- zs_obj_size -------------------------------------------------------------------- */

/* The size each object was allocated with, for every size 1..4096: before and after
 * compaction moved them, while they are read or mapped, and refused (0, EINVAL, one
 * misuse counted) for a freed, foreign, invented or 0 handle and a NULL pool. */
static void test_obj_size(enum zs_layout layout)
{
    struct zs_pool *pool = test_pool("obj-size", layout, 0);
    struct zs_pool *other = test_pool("obj-size-other", layout, 0);
    static unsigned long h[ZS_MAX_ALLOC_SIZE + 1];
    for (size_t size = 1; size <= ZS_MAX_ALLOC_SIZE; size++) {
        h[size] = zs_malloc(pool, size, 0);
        if (!CHECK(!ZS_IS_ERR(h[size])))
            return;
    }
    unsigned long wrong = 0;
    errno = 1234;
    for (size_t size = 1; size <= ZS_MAX_ALLOC_SIZE; size++)
        wrong += zs_obj_size(pool, h[size]) != size;
    CHECK_EQ(wrong, 0);
    CHECK_EQ(errno, 1234); /* success leaves errno alone */

    /* Free every other object so that compaction moves the rest. */
    for (size_t size = 1; size <= ZS_MAX_ALLOC_SIZE; size += 2)
        zs_free(pool, h[size]);
    unsigned long moved_before = pool_info(pool).objs_moved;
    zs_compact(pool);
    CHECK(pool_info(pool).objs_moved > moved_before);
    wrong = 0;
    for (size_t size = 2; size <= ZS_MAX_ALLOC_SIZE; size += 2)
        wrong += zs_obj_size(pool, h[size]) != size;
    CHECK_EQ(wrong, 0);

    /* While the object is being read and while it is mapped. */
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    void *p = zs_obj_read_begin(pool, h[1000], 1000, local);
    CHECK(p != NULL);
    CHECK_EQ(zs_obj_size(pool, h[1000]), 1000);
    zs_obj_read_end(pool, h[1000], 1000, p);
    CHECK(zs_map_object(pool, h[2000], ZS_MM_RO) != NULL);
    CHECK_EQ(zs_obj_size(pool, h[2000]), 2000);
    zs_unmap_object(pool, h[2000]);

    /* Refusals: each is a misuse of this pool except the NULL pool's. */
    unsigned long misuse = misuse_count(pool);
    unsigned long foreign = zs_malloc(other, 100, 0);
    const unsigned long bad[] = {h[1], foreign, 0, h[2] ^ 0x5a5a0000ul};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK_EQ(zs_obj_size(pool, bad[i]), 0);
        CHECK_EQ(errno, EINVAL);
    }
    CHECK_EQ(misuse_count(pool), misuse + sizeof bad / sizeof bad[0]);
    errno = 0;
    CHECK_EQ(zs_obj_size(NULL, h[2]), 0);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(zs_obj_size(other, foreign), 100);

    for (size_t size = 2; size <= ZS_MAX_ALLOC_SIZE; size += 2)
        zs_free(pool, h[size]);
    zs_free(other, foreign);
    check_emptied_and_destroy(pool, misuse + sizeof bad / sizeof bad[0]);
    check_emptied_and_destroy(other, 0);
}

/* The frame size: refused outside its rules with EINVAL, reported by zs_pool_info,
 * the default object limit and the unit of zs_get_total_pages. */
static void test_frame_size_rules(void)
{
    long page = sysconf(_SC_PAGESIZE);
    const unsigned int bad[] = {2048, 12288, 131072, 3000, 4097, 1, (unsigned int)page / 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct zs_pool_config cfg = test_config(ZS_LAYOUT_DENSE, 0);
        cfg.frame_size = bad[i];
        errno = 0;
        struct zs_pool *p = zs_create_pool_with("bad-frame", &cfg);
        if (!CHECK(p == NULL))
            zs_destroy_pool(p);
        CHECK_EQ(errno, EINVAL);
    }
    const unsigned int good[] = {4096, 16384, 65536};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (good[i] % page)
            continue;
        for (int layout = 0; layout < 2; layout++) {
            struct zs_pool_config cfg = test_config((enum zs_layout)layout, 0);
            cfg.frame_size = good[i];
            struct zs_pool *p = zs_create_pool_with("frame", &cfg);
            if (!CHECK(p != NULL))
                continue;
            struct zs_pool_info info = pool_info(p);
            CHECK_EQ(info.frame_size, good[i]);
            CHECK_EQ(info.max_object_size, good[i]);
            unsigned long h = zs_malloc(p, good[i], 0);
            CHECK(!ZS_IS_ERR(h));
            unsigned long over = zs_malloc(p, good[i] + 1, 0);
            CHECK(ZS_IS_ERR(over) && ZS_ERR(over) == ENOSPC);
            /* Frames of the pool's size: a frame's object takes at least one. */
            CHECK(zs_get_total_pages(p) >= 1);
            CHECK_EQ(zs_get_total_pages(p), pool_info(p).total_pages);
            zs_free(p, h);
            CHECK_EQ(zs_get_total_pages(p), 0);
            zs_destroy_pool(p);
        }
    }
}

int main(void)
{
    test_frame_size_rules();
    test_create_destroy();
    test_config_size_convention();
    test_malloc_free();
    test_roundtrip_all_sizes(ZS_LAYOUT_DENSE);
    test_roundtrip_all_sizes(ZS_LAYOUT_KERNEL);
    test_split_objects(ZS_LAYOUT_DENSE);
    test_split_objects(ZS_LAYOUT_KERNEL);
    test_limits_kernel();
    test_limits_dense();
    test_huge_class_size();
    test_class_table();
    test_stats();
    test_many_mappings();
    test_readers_and_writers(ZS_LAYOUT_DENSE);
    test_readers_and_writers(ZS_LAYOUT_KERNEL);
    test_partial_writes(ZS_LAYOUT_DENSE);
    test_partial_writes(ZS_LAYOUT_KERNEL);
    test_dense_packing();
    test_obj_size(ZS_LAYOUT_DENSE);
    test_obj_size(ZS_LAYOUT_KERNEL);
    return check_summary();
}
