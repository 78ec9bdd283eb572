/*
 * Frame migration through the C ABI: zs_frame_census against the class statistics,
 * zs_make_adjacent turning copied reads into direct ones, zs_defragment shrinking the
 * committed arena with every object intact, zs_release_arena its address space, a frame
 * holding a mapped object staying put, and the NULL-pool and size conventions.
 */
#include "check.h"

static struct zs_frame_census census(struct zs_pool *pool)
{
    struct zs_frame_census c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    CHECK_EQ(zs_frame_census(pool, &c), 0);
    return c;
}

static void test_null_and_size(void)
{
    struct zs_frame_census c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    errno = 0;
    CHECK_EQ(zs_frame_census(NULL, &c), -EINVAL);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(zs_defragment(NULL), -EINVAL);
    CHECK_EQ(zs_make_adjacent(NULL), -EINVAL);
    struct zs_pool *pool = test_pool("census-size", ZS_LAYOUT_DENSE, 0);
    CHECK_EQ(zs_frame_census(pool, NULL), -EINVAL);
    /* Only the declared bytes are written: a caller compiled before `top` existed. */
    c.size = offsetof(struct zs_frame_census, top);
    c.top = 12345;
    unsigned long h = zs_malloc(pool, 100, 0);
    CHECK_EQ(zs_frame_census(pool, &c), 0);
    CHECK(c.committed_frames > 0);
    CHECK_EQ(c.top, 12345);
    zs_free(pool, h);
    zs_destroy_pool(pool);
}

static void test_census(void)
{
    struct zs_pool *pool = test_pool("census", ZS_LAYOUT_KERNEL, 0);
    unsigned long h[3000];
    for (int i = 0; i < 3000; i++)
        h[i] = zs_malloc(pool, 40 + (size_t)(i * 53) % 4000, 0);
    struct zs_frame_census c = census(pool);
    CHECK_EQ(c.zspage_frames + c.huge_frames, zs_get_total_pages(pool));
    CHECK_EQ(c.top, c.free_frames + c.zspage_frames + c.huge_frames + c.transit_frames);
    unsigned long sum = 0;
    for (unsigned i = 0; i < ZS_MAX_CLASSES; i++) {
        sum += c.class_frames[i];
        if (!c.class_frames[i])
            continue;
        struct zs_class_info ci;
        CHECK_EQ(class_info_of(pool, i, &ci), 0);
        CHECK_EQ(ci.pages_used, c.class_frames[i]);
    }
    CHECK_EQ(sum, zs_get_total_pages(pool));
    for (int i = 0; i < 3000; i++)
        zs_free(pool, h[i]);
    CHECK_EQ(census(pool).zspage_frames, 0);
    zs_destroy_pool(pool);
}

/* The dense layout: one lane (one thread) filled to a page limit that is no multiple
 * of the chain, so its last zspage is cut short; the census still counts the lane's
 * frames as zs_class_info does, one zspage at a time, and none of them is huge. */
static void test_census_dense(void)
{
    struct zs_pool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.max_pages = 600;
    cfg.layout = ZS_LAYOUT_DENSE;
    struct zs_pool *pool = zs_create_pool_with("census-d", &cfg);
    if (!CHECK(pool != NULL))
        return;
    static unsigned long h[3000];
    int n = 0;
    while (n < 3000) {
        unsigned long x = zs_malloc(pool, 40 + (size_t)(n * 53) % 4000, 0);
        if (ZS_IS_ERR(x)) {
            CHECK_EQ(ZS_ERR(x), ENOMEM);
            break;
        }
        h[n++] = x;
    }
    CHECK(n < 3000);
    CHECK_EQ(zs_get_total_pages(pool), 600);
    struct zs_frame_census c = census(pool);
    CHECK_EQ(c.zspage_frames, 600);
    CHECK_EQ(c.huge_frames, 0);
    CHECK_EQ(c.top, c.free_frames + c.zspage_frames + c.transit_frames);
    unsigned int lane = zs_lookup_class_index(pool, 1);
    struct zs_class_info ci;
    CHECK_EQ(class_info_of(pool, lane, &ci), 0);
    unsigned long zspages = 0;
    for (int g = 0; g < ZS_NR_FULLNESS_GROUPS; g++)
        zspages += ci.zspages[g];
    CHECK_EQ(c.class_frames[lane], 600);
    CHECK_EQ(ci.pages_used, 600);
    CHECK_EQ(zspages, (600 + ci.pages_per_zspage - 1) / ci.pages_per_zspage);
    CHECK(zspages * ci.pages_per_zspage > ci.pages_used);
    unsigned long sum = 0;
    for (unsigned i = 0; i < ZS_MAX_CLASSES; i++)
        sum += c.class_frames[i];
    CHECK_EQ(sum, 600);
    CHECK_EQ(zs_pool_check(pool), 0);
    for (int i = 0; i < n; i++)
        zs_free(pool, h[i]);
    CHECK_EQ(census(pool).zspage_frames, 0);
    zs_destroy_pool(pool);
}

/* Objects whose frames were scattered (see alloc_on_scattered_frames: in the dense
 * layout by zs_defragment around mapped objects) are read through a copy until
 * zs_make_adjacent joins their zspages' frames. */
static void test_adjacency(enum zs_layout layout)
{
    /* Pinned to 4 KiB frames: 256 objects of 40 bytes span several frames only at 4 KiB. */
    struct zs_pool *pool = test_pool_framed("adjacent", layout, 0, 4096);
    enum { N = 256 };
    unsigned long h[N], keep[4];
    alloc_on_scattered_frames(pool, h, N, 40, keep, 4);
    for (int i = 0; i < N; i++) {
        unsigned char buf[40];
        fill_pattern(buf, 40, (uint64_t)i);
        zs_obj_write(pool, h[i], buf, 40);
    }
    /* Count the reads that had to copy, then join and count again. */
    unsigned char local[40];
    int copied = 0;
    for (int i = 0; i < N; i++) {
        void *p = zs_obj_read_begin(pool, h[i], 40, local);
        copied += p == (void *)local;
        zs_obj_read_end(pool, h[i], 40, p);
    }
    CHECK(copied > 0);
    struct zs_pool_info before = pool_info(pool);
    CHECK(zs_make_adjacent(pool) >= 1);
    int copied_after = 0;
    for (int i = 0; i < N; i++) {
        void *p = zs_obj_read_begin(pool, h[i], 40, local);
        copied_after += p == (void *)local;
        CHECK(pattern_ok(p, 40, (uint64_t)i));
        zs_obj_read_end(pool, h[i], 40, p);
    }
    CHECK_EQ(copied_after, 0);
    struct zs_pool_info after = pool_info(pool);
    CHECK(after.frames_migrated > before.frames_migrated);
    CHECK_EQ(after.read_copied_bytes, before.read_copied_bytes);
    CHECK_EQ(zs_pool_check(pool), 0);
    for (int i = 0; i < N; i++)
        zs_free(pool, h[i]);
    for (int i = 0; i < 4; i++)
        zs_free(pool, keep[i]);
    zs_destroy_pool(pool);
}

static void test_defragment(void)
{
    /* Pinned to 4 KiB frames: the holes it frees and moves are whole 4 KiB frames. */
    struct zs_pool *pool = test_pool_framed("defrag", ZS_LAYOUT_DENSE, 0, 4096);
    enum { N = 8000 };
    static unsigned long h[N];
    for (int i = 0; i < N; i++) {
        size_t size = 300 + (size_t)(i * 131) % 3000;
        h[i] = zs_malloc(pool, size, 0);
        unsigned char buf[ZS_MAX_ALLOC_SIZE];
        fill_pattern(buf, size, (uint64_t)i);
        zs_obj_write(pool, h[i], buf, size);
    }
    for (int i = 0; i < N; i++)
        if (i % 40)
            zs_free(pool, h[i]);
    zs_compact(pool);
    /* One object mapped: its frame must not move. */
    void *mapped = zs_map_object(pool, h[0], ZS_MM_RO);
    struct zs_frame_census before = census(pool);
    long shrunk = zs_defragment(pool);
    struct zs_frame_census after = census(pool);
    CHECK(shrunk > 0);
    CHECK(after.committed_frames < before.committed_frames);
    CHECK_EQ(after.arena_mapped_bytes, before.arena_mapped_bytes); /* still reserved */
    CHECK(pattern_ok(mapped, 300, 0));
    zs_unmap_object(pool, h[0]);
    for (int i = 0; i < N; i += 40)
        CHECK(object_ok(pool, h[i], 300 + (size_t)(i * 131) % 3000, (uint64_t)i));
    CHECK_EQ(zs_pool_check(pool), 0);
    /* Unmapped now: the rest can move, and the top comes down to the frames held. */
    zs_defragment(pool);
    CHECK_EQ(census(pool).top, zs_get_total_pages(pool));
    /* Giving the address space up too: the virtual size falls. */
    struct zs_frame_census reserved = census(pool);
    long released = zs_release_arena(pool);
    struct zs_frame_census unmapped = census(pool);
    CHECK(released > 0);
    CHECK_EQ((unsigned long)released, reserved.arena_mapped_bytes - unmapped.arena_mapped_bytes);
    CHECK(unmapped.side_table_mapped_bytes < reserved.side_table_mapped_bytes);
    CHECK_EQ(zs_release_arena(NULL), -EINVAL);
    for (int i = 0; i < N; i += 40)
        zs_free(pool, h[i]);
    CHECK_EQ(zs_pool_check(pool), 0);
    zs_destroy_pool(pool);
}

int main(void)
{
    test_null_and_size();
    test_census();
    test_census_dense();
    test_adjacency(ZS_LAYOUT_KERNEL);
    test_adjacency(ZS_LAYOUT_DENSE);
    test_defragment();
    return check_summary();
}
