/*
 * A small check harness shared by the C conformance tests.
 *
 * CHECK(cond) and CHECK_EQ(a, b) count a pass or a failure (a failure prints the file,
 * line and expression, and for CHECK_EQ both values); they are thread-safe. Every test
 * program ends with `return check_summary();`, which prints exactly the line
 * "N passed, M failed" and gives the exit status (non-zero when M > 0).
 *
 * Also here: deterministic byte patterns for objects, and the pool the tests work in.
 */
#ifndef ZS_C_TESTS_CHECK_H
#define ZS_C_TESTS_CHECK_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zsmalloc.h"

static atomic_ulong check_passed_;
static atomic_ulong check_failed_;

/* Failure messages printed in full; later failures are only counted. */
#define CHECK_MAX_REPORTS 60

static inline int check_report_(int ok, const char *file, int line, const char *what, const char *detail)
{
    if (ok) {
        atomic_fetch_add(&check_passed_, 1);
        return 1;
    }
    unsigned long n = atomic_fetch_add(&check_failed_, 1);
    if (n < CHECK_MAX_REPORTS)
        fprintf(stderr, "FAIL %s:%d: %s%s%s\n", file, line, what, detail ? " " : "", detail ? detail : "");
    else if (n == CHECK_MAX_REPORTS)
        fprintf(stderr, "(further failures are counted but not shown)\n");
    return 0;
}

static inline int check_eq_(unsigned long long a, unsigned long long b, const char *file, int line,
                            const char *ea, const char *eb)
{
    char what[512];
    char detail[128];
    snprintf(what, sizeof what, "%s == %s", ea, eb);
    snprintf(detail, sizeof detail, "(%llu [%#llx] vs %llu [%#llx])", a, a, b, b);
    return check_report_(a == b, file, line, what, detail);
}

/* Each evaluates to whether the check passed. */
#define CHECK(cond) check_report_(!!(cond), __FILE__, __LINE__, #cond, NULL)
#define CHECK_EQ(a, b) check_eq_((unsigned long long)(a), (unsigned long long)(b), __FILE__, __LINE__, #a, #b)

/* Prints the one summary line; the exit status of the program. */
static inline int check_summary(void)
{
    unsigned long passed = atomic_load(&check_passed_);
    unsigned long failed = atomic_load(&check_failed_);
    fflush(stderr);
    printf("%lu passed, %lu failed\n", passed, failed);
    fflush(stdout);
    return failed ? 1 : 0;
}

/* ---- deterministic patterns ------------------------------------------------------- */

/* splitmix64: a seeded, reproducible stream. */
static inline uint64_t mix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A value in [0, n). */
static inline unsigned long rand_below(uint64_t *state, unsigned long n)
{
    return (unsigned long)(mix64(state) % n);
}

/* Fills buf with the first len bytes of the stream that seed names (so a shorter
 * pattern is a prefix of a longer one). */
static inline void fill_pattern(void *buf, size_t len, uint64_t seed)
{
    unsigned char *p = buf;
    uint64_t st = seed * 0x2545F4914F6CDD1Dull;
    size_t i = 0;
    while (i < len) {
        uint64_t v = mix64(&st);
        for (int k = 0; k < 8 && i < len; k++, i++)
            p[i] = (unsigned char)(v >> (8 * k));
    }
}

/* Whether buf holds exactly the first len bytes that seed names. */
static inline int pattern_ok(const void *buf, size_t len, uint64_t seed)
{
    unsigned char tmp[ZS_MAX_ALLOC_SIZE];
    if (len > sizeof tmp)
        return 0;
    fill_pattern(tmp, len, seed);
    return memcmp(tmp, buf, len) == 0;
}

/* Versions of an object, for tests whose readers race its writers: a version of `len`
 * (>= VERSION_HEADER) bytes holds its length and seed, then the pattern of the seed, so
 * a reader that does not know which version it met can tell a whole one from a mix. */
enum { VERSION_HEADER = 8 };

static inline void fill_version(unsigned char *p, size_t len, uint32_t seed)
{
    uint32_t l = (uint32_t)len;
    memcpy(p, &l, 4);
    memcpy(p + 4, &seed, 4);
    fill_pattern(p + VERSION_HEADER, len - VERSION_HEADER, seed);
}

/* The length of the whole version at p, of at most `room` bytes, or 0 where p holds
 * none. */
static inline size_t version_len(const unsigned char *p, size_t room)
{
    uint32_t len, seed;
    memcpy(&len, p, 4);
    memcpy(&seed, p + 4, 4);
    if (len < VERSION_HEADER || len > room || !pattern_ok(p + VERSION_HEADER, len - VERSION_HEADER, seed))
        return 0;
    return len;
}

/* ---- pools -------------------------------------------------------------------------- */

/* Whether the first `len` bytes of object `h` hold the pattern of `seed` (read through
 * zs_obj_read_begin/end, in place or copied). */
static inline int object_ok(struct zs_pool *pool, unsigned long h, size_t len, uint64_t seed)
{
    unsigned char local[ZS_MAX_ALLOC_SIZE];
    void *p = zs_obj_read_begin(pool, h, len, local);
    if (!p)
        return 0;
    int ok = pattern_ok(p, len, seed);
    zs_obj_read_end(pool, h, len, p);
    return ok;
}

/*
 * Frames a test pool may hold. A pool created with max_pages 0 reserves (PROT_NONE, no
 * commit) an arena sized to the machine's physical memory plus a handle table up to half
 * as large. That is harmless natively and under AddressSanitizer, but valgrind's address
 * space manager has a fixed ceiling (about 128 GiB on amd64 in valgrind 3.19), which
 * one default pool already exceeds on a 96 GiB machine. So every pool the tests work
 * in is bounded (the reservation then follows max_pages: 64 MiB of arena here), and
 * the default configuration is exercised only by short create/allocate/destroy checks.
 */
#define TEST_MAX_PAGES 16384ul

/* An extension struct zeroed, with its `size` set to this build's sizeof. */
#define SIZED(var) (memset(&(var), 0, sizeof(var)), (var).size = sizeof(var))

/* The configuration of the pools the tests work in. */
/* The frame size the tests run with: ZS_TEST_FRAME_SIZE in bytes (make test runs the
 * suites at several), 0 (the system's page) where it is unset. */
static inline unsigned int test_frame_size(void)
{
    const char *v = getenv("ZS_TEST_FRAME_SIZE");
    return v ? (unsigned int)strtoul(v, NULL, 10) : 0;
}

static inline struct zs_pool_config test_config(enum zs_layout layout, unsigned int chain_size)
{
    struct zs_pool_config cfg;
    SIZED(cfg);
    cfg.frame_size = test_frame_size();
    cfg.max_pages = TEST_MAX_PAGES;
    cfg.chain_size = chain_size;
    cfg.layout = layout;
    return cfg;
}

/* A test pool with frames of frame_size bytes whatever ZS_TEST_FRAME_SIZE says (0: the
 * system's page), for the tests whose figures are one frame size's by construction. */
static inline struct zs_pool *test_pool_framed(const char *name, enum zs_layout layout, unsigned int chain_size,
                                               unsigned int frame_size)
{
    struct zs_pool_config cfg = test_config(layout, chain_size);
    cfg.frame_size = frame_size;
    struct zs_pool *pool = zs_create_pool_with(name, &cfg);
    if (!pool) {
        fprintf(stderr, "zs_create_pool_with(%s): %s\n", name, strerror(errno));
        exit(2);
    }
    return pool;
}

static inline struct zs_pool *test_pool(const char *name, enum zs_layout layout, unsigned int chain_size)
{
    return test_pool_framed(name, layout, chain_size, test_frame_size());
}

static inline struct zs_pool_info pool_info(struct zs_pool *pool)
{
    struct zs_pool_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    if (zs_pool_info(pool, &info) != 0)
        CHECK(!"zs_pool_info failed");
    return info;
}

static inline unsigned long misuse_count(struct zs_pool *pool)
{
    return pool_info(pool).misuse_events;
}

/* Once every object is freed: nothing live or requested, no frame held, `misuse`
 * misuse events in all, and every invariant holds. Then destroys the pool. */
static inline void check_emptied_and_destroy(struct zs_pool *pool, unsigned long misuse)
{
    struct zs_pool_info info = pool_info(pool);
    CHECK_EQ(info.live_objects, 0);
    CHECK_EQ(info.requested_bytes, 0);
    CHECK_EQ(info.total_pages, 0);
    CHECK_EQ(zs_get_total_pages(pool), 0);
    CHECK_EQ(info.misuse_events, misuse);
    CHECK_EQ(zs_pool_check(pool), 0);
    zs_destroy_pool(pool);
}

/* Whether the test runs under valgrind (the Makefile sets ZS_TEST_VALGRIND=1 there):
 * the heavier loops run fewer iterations, valgrind being some 50 times slower. */
static inline int under_valgrind(void)
{
    const char *v = getenv("ZS_TEST_VALGRIND");
    return v && strcmp(v, "1") == 0;
}

/* Whether the pool has the dense layout: its "classes" are lanes, whose zspages take
 * objects of every size, so a lane reports no objects per zspage (every class of the
 * kernel's layout holds at least one). */
/* zs_class_info into a zeroed struct of this build's size; returns what it returned. */
static inline int class_info_of(struct zs_pool *pool, unsigned int idx, struct zs_class_info *ci)
{
    memset(ci, 0, sizeof *ci);
    ci->size = sizeof *ci;
    return zs_class_info(pool, idx, ci);
}

static inline int pool_is_dense(struct zs_pool *pool)
{
    struct zs_class_info ci;
    return class_info_of(pool, zs_lookup_class_index(pool, 1), &ci) == 0 && ci.objs_per_zspage == 0;
}

/*
 * The dense layout's half of alloc_on_scattered_frames (below). There every size
 * shares zspages, and a zspage is given back whole, as a run of adjacent frames that
 * the next zspage takes whole: freeing every other object scatters nothing. So the
 * objects are allocated first and their frames moved apart afterwards, with
 * zs_defragment, which moves frames in use from the top of the arena into free frames
 * below but leaves a frame holding a mapped object where it is.
 *
 *  - Fillers of a frame each first, enough to use up every free frame and the lane's free
 *    runs and then to fill more zspages than the objects will take; then the objects,
 *    which therefore get fresh frames at the top of the arena; then the fillers are
 *    freed, and their zspages with them. Every frame of the objects' zspages is then
 *    at or above the count of frames held: all of them are defragmentation's to move,
 *    into the fillers' frames below.
 *  - Every `stride`-th object is mapped during zs_defragment. Between two mapped
 *    objects lie at least two frames' bytes, so at least one whole frame, which moves down
 *    while the frames of the mapped objects stay above: objects straddling such a
 *    boundary have their two parts in distant frames, whatever order defragmentation
 *    moves frames in.
 *
 * Nothing needs to be kept afterwards.
 */
static inline void alloc_on_scattered_frames_dense(struct zs_pool *pool, unsigned long *out, size_t n,
                                                   size_t obj_size)
{
    struct zs_class_info ci;
    CHECK_EQ(class_info_of(pool, zs_lookup_class_index(pool, (unsigned int)obj_size), &ci), 0);
    struct zs_frame_census census;
    memset(&census, 0, sizeof census);
    census.size = sizeof census;
    CHECK_EQ(zs_frame_census(pool, &census), 0);
    size_t frame = pool_info(pool).frame_size;
    size_t nfill = ci.pages_used + census.free_frames + (n * obj_size + frame - 1) / frame +
                   3 * (size_t)ci.pages_per_zspage;
    unsigned long *fill = malloc(nfill * sizeof *fill);
    if (!CHECK(fill != NULL))
        exit(2);
    for (size_t i = 0; i < nfill; i++) {
        fill[i] = zs_malloc(pool, frame, 0);
        CHECK(!ZS_IS_ERR(fill[i]));
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = zs_malloc(pool, obj_size, 0);
        CHECK(!ZS_IS_ERR(out[i]));
    }
    for (size_t i = 0; i < nfill; i++)
        zs_free(pool, fill[i]);
    free(fill);

    size_t stride = (2 * frame + obj_size - 1) / obj_size + 1;
    for (size_t i = stride / 2; i < n; i += stride)
        CHECK(zs_map_object(pool, out[i], ZS_MM_RO) != NULL);
    CHECK(zs_defragment(pool) >= 0);
    for (size_t i = stride / 2; i < n; i += stride)
        zs_unmap_object(pool, out[i]);
}

/*
 * Allocates n objects of obj_size bytes on frames that are not adjacent in the arena,
 * so that objects straddling two frames of their zspage are not contiguous in memory:
 * reads must copy them and mappings must work on a copy.
 *
 * The kernel's layout (obj_size must be of a class of several frames per zspage):
 * frames freed by a pool are reused before the arena grows, so the helper takes
 * 2 * spread one-frame objects (of the frame's size, stored one per frame), frees
 * every other one, and then allocates. The one-frame objects that remain are returned
 * in keep[0..spread) for the caller to free.
 *
 * The dense layout: see alloc_on_scattered_frames_dense; keep[0..spread) is all 0,
 * which zs_free ignores.
 */
static inline void alloc_on_scattered_frames(struct zs_pool *pool, unsigned long *out, size_t n, size_t obj_size,
                                             unsigned long *keep, size_t spread)
{
    if (pool_is_dense(pool)) {
        for (size_t i = 0; i < spread; i++)
            keep[i] = 0;
        alloc_on_scattered_frames_dense(pool, out, n, obj_size);
        return;
    }
    unsigned long all[64];
    size_t frame = pool_info(pool).frame_size;
    if (spread * 2 > sizeof all / sizeof all[0])
        spread = sizeof all / sizeof all[0] / 2;
    for (size_t i = 0; i < 2 * spread; i++) {
        all[i] = zs_malloc(pool, frame, 0);
        CHECK(!ZS_IS_ERR(all[i]));
    }
    for (size_t i = 0; i < spread; i++) {
        zs_free(pool, all[2 * i + 1]);
        keep[i] = all[2 * i];
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = zs_malloc(pool, obj_size, 0);
        CHECK(!ZS_IS_ERR(out[i]));
    }
}

#endif /* ZS_C_TESTS_CHECK_H */
