/*
 * zsbench: drives the zs_* C ABI through compressed-page workloads and reports speed
 * and memory per phase.
 *
 * Workloads (the sequence of object sizes):
 *   trace  one size per line from --trace FILE, cycled to --objects N
 *   sweep  every size from 32 to the kernel layout's huge class size in --sweep-step
 *          steps, --sweep-count objects each (interleaved)
 *   churn  the trace's sizes (or the sweep's without a trace), with a long churn
 *          phase right after the fill
 *   kernel-selftest  the kernel's own zsmalloc test workload: --sweep-count objects
 *          (default 182) of every size from 32 bytes to the last below the kernel
 *          layout's huge class size, --sweep-step apart (default 1; the kernel's test
 *          runs steps 1, 9, ..., 121), ascending, one size at a time
 *
 * Orders (--order; the workload's sizes, after cycling to --objects, rearranged):
 *   as-given    as the workload makes them (the default)
 *   ascending, descending
 *   sawtooth    ascending ramps, one after another: the sorted sizes dealt out to as
 *               many ramps as the most common size has objects
 *   by-size     every object of one size, then the next size's, the sizes shuffled
 *
 * Phases (--phases, comma separated; default by workload):
 *   fill     zs_malloc + zs_obj_write of every object
 *   read     zs_obj_read_begin/end of every live object, verified byte for byte
 *   map      zs_map_object(RO)/zs_unmap_object of every live object, verified
 *   free     zs_free of a seeded random --free-fraction of the objects
 *   compact  zs_compact (one call; ops are the objects it moved)
 *   churn    --churn-ops replacements: free a random live object, allocate and
 *            write a new one whose size is drawn from the workload's sizes
 *   verify   read and verify every live object again (after compaction and churn)
 *
 * Every object's content is a pattern derived from the seed, its index and its
 * generation (bumped by each churn replacement), so every read checks that the right
 * bytes came back from the right handle.
 *
 * Objects are at most the pool's max_object_size (--max-object-size; zs_pool_info says
 * what the pool took): the trace's sizes, the buffers and the walk of the classes all
 * follow it, so that compressed units larger than a page run like pages.
 *
 * Memory, after each phase:
 *   frames     zs_get_total_pages()
 *   footprint  frames x the frame size + meta_bytes from zs_pool_info()
 *   density    requested bytes (zs_pool_info) / footprint
 *   rss        growth of the process's anonymous resident set (/proc/self/statm,
 *              resident - shared) since just before the pool was created; every
 *              buffer and thread of the harness exists before that point.
 *
 * The implementation behind the ABI is named from the libraries that provide
 * zs_malloc and malloc (dladdr), so that an LD_PRELOAD comparison can be checked
 * (--expect) rather than trusted.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zsmalloc.h"

#define MAX_PHASES 16
#define MAX_THREADS 256
/* An object's content starts at one of this many offsets into the seeded pattern. */
#define PATTERN_WINDOW 4096
#define MAX_REPORTED_ERRORS 10

enum phase_kind { PH_FILL, PH_READ, PH_MAP, PH_FREE, PH_COMPACT, PH_CHURN, PH_VERIFY, PH_QUIT };
static const char *const phase_names[] = {"fill", "read", "map", "free", "compact", "churn", "verify"};
#define NR_PHASE_KINDS 7

struct obj {
    unsigned long handle; /* 0: not live */
    uint32_t size;
    uint32_t gen;
};

struct result {
    const char *name;
    int available;            /* 0: the phase did not run (n/a) */
    uint64_t ops;
    double seconds;
    unsigned long frames;
    struct zs_pool_info info;
    uint64_t footprint;
    double density;
    long long rss_delta;      /* bytes */
    unsigned long compact_freed; /* zs_compact's return value (compact phase) */
    uint64_t errors;          /* verification failures and refused calls in this phase */
    uint64_t stray_errno;     /* successful calls that changed errno anyway */
    unsigned long ideal_frames; /* frames if every class were packed perfectly; 0: unknown */
    uint64_t harness_requested; /* the harness's own count, cross-checks the pool's */
    uint64_t harness_live;
};

struct worker {
    pthread_t thread;
    unsigned id;
    uint64_t rng;
    uint64_t ops;
    uint64_t errors;
    uint64_t stray_errno;
    int stray_value;
    unsigned char *buf;   /* max_object bytes: an object's content to write */
    unsigned char *local; /* max_object bytes: zs_obj_read_begin's local_copy */
};

static struct {
    /* options */
    const char *trace_path;
    const char *workload;
    const char *json_path;
    const char *expect;
    const char *label;
    const char *phases_opt;
    uint64_t objects;
    unsigned threads;
    double free_fraction;
    uint64_t seed;
    int layout;
    unsigned chain;
    unsigned sweep_step;
    unsigned sweep_count;
    unsigned sweep_max;
    unsigned max_object_opt; /* --max-object-size; 0: the pool's default */
    unsigned frame_size_opt; /* --frame-size; 0: the system page */
    const char *order;
    uint64_t churn_ops;
    int check;
    int quiet;
    int inject_corruption;

    /* state */
    struct zs_pool *pool;
    uint32_t *sizes;  /* the workload's size sequence, one per index */
    uint64_t nsizes;
    struct obj *objs;
    uint32_t *perm;
    uint64_t nfree;
    unsigned max_object;   /* the pool's max_object_size */
    unsigned long frame_size;
    unsigned char *pattern; /* PATTERN_WINDOW + max_object bytes */
    unsigned *class_idx;    /* max_object entries: ideal_frames' scratch */
    struct worker *workers;
    pthread_barrier_t start, done;
    volatile enum phase_kind phase;
    pthread_mutex_t report_lock;
    unsigned reported;
    long rss_base_pages;
    long page_size;

    int stray_value;
    const char *impl;
    char zs_lib[512];
    char malloc_lib[512];
    char sizes_desc[256];

    enum phase_kind plan[MAX_PHASES];
    unsigned nplan;
    struct result results[MAX_PHASES];
} B = {
    .objects = 0,
    .threads = 1,
    .free_fraction = 0.5,
    .seed = 42,
    .layout = ZS_LAYOUT_DENSE,
    .chain = 0,
    .order = "as-given",
    /* Bytes per frame, for the footprint and the zspages' size: the probe reads the
     * pool's (zs_pool_info); a library that does not say counts 4096-byte frames. */
    .frame_size = 4096,
    .report_lock = PTHREAD_MUTEX_INITIALIZER,
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("zsbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t next_rand(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL;
    return mix64(*state);
}

/* Uniform in [0, n). */
static uint64_t rand_below(uint64_t *state, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)next_rand(state) * n) >> 64);
}

/* Anonymous resident set in pages: statm's resident minus its shared (file-backed
 * and shmem) pages, so that code pages faulted in from the libraries do not count.
 * Read with open/read: no allocation. */
static long anon_rss_pages(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    long size, resident, shared;
    if (sscanf(buf, "%ld %ld %ld", &size, &resident, &shared) != 3)
        return -1;
    return resident - shared;
}

/* ------------------------------------------------------------------ content */

static uint64_t obj_key(uint64_t index, uint32_t gen)
{
    return mix64(B.seed ^ mix64(index * 2 + 1 + ((uint64_t)gen << 40)));
}

/* The object's bytes: a window of the seeded pattern chosen by the key, with the key
 * itself over the first (up to) 8 bytes so that no two objects look alike. */
static void make_content(unsigned char *dst, uint64_t key, uint32_t size)
{
    memcpy(dst, B.pattern + (key & (PATTERN_WINDOW - 1)), size);
    for (uint32_t b = 0; b < size && b < 8; b++)
        dst[b] ^= (unsigned char)(key >> (8 * b));
}

static int check_content(const unsigned char *p, uint64_t key, uint32_t size)
{
    const unsigned char *want = B.pattern + (key & (PATTERN_WINDOW - 1));
    uint32_t head = size < 8 ? size : 8;
    for (uint32_t b = 0; b < head; b++)
        if (p[b] != (unsigned char)(want[b] ^ (unsigned char)(key >> (8 * b))))
            return 0;
    return memcmp(p + head, want + head, size - head) == 0;
}

static void report_error(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_error(struct worker *w, const char *fmt, ...)
{
    w->errors++;
    pthread_mutex_lock(&B.report_lock);
    if (B.reported++ < MAX_REPORTED_ERRORS) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "zsbench: %s: ", phase_names[B.phase]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    pthread_mutex_unlock(&B.report_lock);
}

/* ------------------------------------------------------------------ operations */

/* After a call that reports failure only through errno (zs_free, zs_obj_write): the
 * contract's refusals are errors; any other change to errno on a call that did its
 * work is counted apart (the contract says success leaves errno alone). Whether the
 * work was done is checked independently: the pool's live-object and requested-byte
 * counts must match the harness's after every phase. */
static void check_errno(struct worker *w, const char *call, uint64_t i)
{
    int e = errno;
    if (e == 0)
        return;
    if (e == EINVAL || e == EBUSY) {
        report_error(w, "%s of object %" PRIu64 ": %s", call, i, strerror(e));
    } else {
        w->stray_errno++;
        w->stray_value = e;
    }
}

static void alloc_obj(struct worker *w, uint64_t i, uint32_t size, uint32_t gen)
{
    unsigned long h = zs_malloc(B.pool, size, 0);
    if (ZS_IS_ERR(h) || h == 0) {
        report_error(w, "zs_malloc(%u) for object %" PRIu64 " failed: %s", size, i,
                     h ? strerror(ZS_ERR(h)) : "returned 0");
        B.objs[i].handle = 0;
        return;
    }
    make_content(w->buf, obj_key(i, gen), size);
    errno = 0;
    zs_obj_write(B.pool, h, w->buf, size);
    check_errno(w, "zs_obj_write", i);
    B.objs[i].handle = h;
    B.objs[i].size = size;
    B.objs[i].gen = gen;
}

static void free_obj(struct worker *w, uint64_t i)
{
    errno = 0;
    zs_free(B.pool, B.objs[i].handle);
    check_errno(w, "zs_free", i);
    B.objs[i].handle = 0;
}

static void read_obj(struct worker *w, uint64_t i)
{
    struct obj *o = &B.objs[i];
    void *p = zs_obj_read_begin(B.pool, o->handle, o->size, w->local);
    if (!p) {
        report_error(w, "zs_obj_read_begin of object %" PRIu64 ": %s", i, strerror(errno));
        return;
    }
    if (!check_content(p, obj_key(i, o->gen), o->size))
        report_error(w, "object %" PRIu64 " (size %u, handle %#lx) read back wrong bytes", i, o->size,
                     o->handle);
    zs_obj_read_end(B.pool, o->handle, o->size, p);
}

static void map_obj(struct worker *w, uint64_t i)
{
    struct obj *o = &B.objs[i];
    void *p = zs_map_object(B.pool, o->handle, ZS_MM_RO);
    if (!p) {
        report_error(w, "zs_map_object of object %" PRIu64 ": %s", i, strerror(errno));
        return;
    }
    if (!check_content(p, obj_key(i, o->gen), o->size))
        report_error(w, "object %" PRIu64 " (size %u, handle %#lx) mapped wrong bytes", i, o->size,
                     o->handle);
    zs_unmap_object(B.pool, o->handle);
}

/* ------------------------------------------------------------------ phases */

/* Thread t owns the indices i with i % threads == t (fill, read, map, churn, verify);
 * the free phase deals out the seeded permutation the same way. */
static void run_phase(struct worker *w)
{
    const uint64_t n = B.objects, T = B.threads;
    switch (B.phase) {
    case PH_FILL:
        for (uint64_t i = w->id; i < n; i += T) {
            alloc_obj(w, i, B.sizes[i], 0);
            w->ops++;
        }
        break;
    case PH_READ:
    case PH_VERIFY:
        for (uint64_t i = w->id; i < n; i += T)
            if (B.objs[i].handle) {
                read_obj(w, i);
                w->ops++;
            }
        break;
    case PH_MAP:
        for (uint64_t i = w->id; i < n; i += T)
            if (B.objs[i].handle) {
                map_obj(w, i);
                w->ops++;
            }
        break;
    case PH_FREE:
        for (uint64_t j = w->id; j < B.nfree; j += T) {
            uint64_t i = B.perm[j];
            if (B.objs[i].handle) {
                free_obj(w, i);
                w->ops++;
            }
        }
        break;
    case PH_CHURN: {
        uint64_t mine = n > w->id ? (n - w->id + T - 1) / T : 0;
        uint64_t todo = B.churn_ops / T + (w->id < B.churn_ops % T);
        if (!mine)
            break;
        for (uint64_t k = 0; k < todo; k++) {
            /* A random live object of this thread's share (the next live one after a
             * random start); with none live, the op allocates at the start. */
            uint64_t start = rand_below(&w->rng, mine), probe = start, i;
            do {
                i = w->id + probe * T;
                if (B.objs[i].handle)
                    break;
                probe = probe + 1 == mine ? 0 : probe + 1;
            } while (probe != start);
            if (B.objs[i].handle)
                free_obj(w, i);
            else
                i = w->id + start * T;
            alloc_obj(w, i, B.sizes[rand_below(&w->rng, B.nsizes)], B.objs[i].gen + 1);
            w->ops++;
        }
        break;
    }
    default:
        break;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* Touch the buffers, and report ready, before the pool exists: the workers' stacks
     * and buffers are not the pool's footprint. */
    memset(w->buf, 0, B.max_object);
    memset(w->local, 0, B.max_object);
    pthread_barrier_wait(&B.done);
    for (;;) {
        pthread_barrier_wait(&B.start);
        if (B.phase == PH_QUIT)
            return NULL;
        run_phase(w);
        pthread_barrier_wait(&B.done);
    }
}

static int cmp_uint(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return (x > y) - (x < y);
}

/* Frames the live objects would need with every class packed perfectly (the state a
 * complete compaction reaches), from zs_class_info; 0 where that is not available.
 * A dense-layout pool has no size classes (its class info says 0 objects per
 * zspage): there, the requested bytes end to end in whole zspages. */
static unsigned long ideal_frames(const struct zs_pool_info *info)
{
    unsigned *idx = B.class_idx;
    for (unsigned size = 1; size <= B.max_object; size++) {
        idx[size - 1] = zs_lookup_class_index(B.pool, size);
        if (idx[size - 1] == (unsigned)-1)
            return 0;
    }
    qsort(idx, B.max_object, sizeof idx[0], cmp_uint);
    unsigned long frames = 0;
    for (unsigned k = 0; k < B.max_object; k++) {
        if (k && idx[k] == idx[k - 1])
            continue;
        struct zs_class_info ci;
        memset(&ci, 0, sizeof ci);
        ci.size = sizeof ci;
        if (zs_class_info(B.pool, idx[k], &ci) != 0)
            return 0;
        if (ci.objs_per_zspage == 0) {
            unsigned long zspage = ci.pages_per_zspage * B.frame_size;
            return zspage ? (info->requested_bytes + zspage - 1) / zspage * ci.pages_per_zspage : 0;
        }
        frames += (ci.objs_inuse + ci.objs_per_zspage - 1) / ci.objs_per_zspage * ci.pages_per_zspage;
    }
    return frames;
}

static void snapshot(struct result *r)
{
    r->frames = zs_get_total_pages(B.pool);
    memset(&r->info, 0, sizeof r->info);
    r->info.size = sizeof r->info;
    if (zs_pool_info(B.pool, &r->info) != 0)
        fprintf(stderr, "zsbench: zs_pool_info failed\n");
    r->footprint = (uint64_t)r->frames * B.frame_size + r->info.meta_bytes;
    r->density = r->footprint ? (double)r->info.requested_bytes / (double)r->footprint : 0.0;
    long rss = anon_rss_pages();
    r->rss_delta = rss < 0 ? -1 : (long long)(rss - B.rss_base_pages) * B.page_size;
    uint64_t req = 0, live = 0;
    for (uint64_t i = 0; i < B.objects; i++)
        if (B.objs[i].handle) {
            req += B.objs[i].size;
            live++;
        }
    r->harness_requested = req;
    r->harness_live = live;
    r->ideal_frames = ideal_frames(&r->info);
}

static void run_plan(void)
{
    for (unsigned p = 0; p < B.nplan; p++) {
        struct result *r = &B.results[p];
        enum phase_kind k = B.plan[p];
        r->name = phase_names[k];
        r->available = 1;
        B.phase = k;
        if (k == PH_COMPACT) {
            struct zs_pool_info before = {.size = sizeof before};
            zs_pool_info(B.pool, &before);
            double t0 = now();
            r->compact_freed = zs_compact(B.pool);
            r->seconds = now() - t0;
            snapshot(r);
            r->ops = r->info.objs_moved - before.objs_moved;
        } else {
            for (unsigned t = 0; t < B.threads; t++)
                B.workers[t].ops = B.workers[t].errors = B.workers[t].stray_errno = 0;
            double t0 = now();
            pthread_barrier_wait(&B.start);
            pthread_barrier_wait(&B.done);
            r->seconds = now() - t0;
            for (unsigned t = 0; t < B.threads; t++) {
                r->ops += B.workers[t].ops;
                r->errors += B.workers[t].errors;
                r->stray_errno += B.workers[t].stray_errno;
                if (B.workers[t].stray_errno)
                    B.stray_value = B.workers[t].stray_value;
            }
            snapshot(r);
        }
        if (B.check) {
            int rc = zs_pool_check(B.pool);
            if (rc != 0) {
                fprintf(stderr, "zsbench: zs_pool_check after %s: %d\n", r->name, rc);
                r->errors++;
            }
        }
        if (k == PH_FILL && B.inject_corruption) {
            /* Test of the verifier itself: change one byte of one object. */
            for (uint64_t i = 0; i < B.objects; i++)
                if (B.objs[i].handle) {
                    unsigned char *m = zs_map_object(B.pool, B.objs[i].handle, ZS_MM_RW);
                    if (m) {
                        m[B.objs[i].size - 1] ^= 0x5a;
                        zs_unmap_object(B.pool, B.objs[i].handle);
                    }
                    break;
                }
        }
    }
}

/* ------------------------------------------------------------------ setup */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void identify(void)
{
    Dl_info di;
    void *zm = dlsym(RTLD_DEFAULT, "zs_malloc");
    void *mm = dlsym(RTLD_DEFAULT, "malloc");
    snprintf(B.zs_lib, sizeof B.zs_lib, "%s", zm && dladdr(zm, &di) && di.dli_fname ? di.dli_fname : "?");
    snprintf(B.malloc_lib, sizeof B.malloc_lib, "%s", mm && dladdr(mm, &di) && di.dli_fname ? di.dli_fname : "?");
    const char *zb = base_name(B.zs_lib), *mb = base_name(B.malloc_lib);
    if (strncmp(zb, "libzsmalloc", 11) == 0)
        B.impl = "zsmalloc";
    else if (strstr(zb, "zs_on_malloc")) {
        if (strstr(mb, "jemalloc"))
            B.impl = "jemalloc";
        else if (strstr(mb, "mimalloc"))
            B.impl = "mimalloc";
        else if (strncmp(mb, "libc.", 5) == 0 || strncmp(mb, "libc-", 5) == 0)
            B.impl = "malloc";
        else
            B.impl = "malloc-other";
    } else
        B.impl = "unknown";
}

static void load_trace(void)
{
    FILE *f = fopen(B.trace_path, "r");
    if (!f)
        die("cannot open trace %s: %s", B.trace_path, strerror(errno));
    uint64_t cap = 1 << 16, n = 0;
    B.sizes = malloc(cap * sizeof *B.sizes);
    char line[128];
    unsigned long lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        /* A line longer than the buffer (a long comment): only its start counts. */
        if (!strchr(line, '\n')) {
            int ch;
            while ((ch = getc(f)) != EOF && ch != '\n')
                ;
        }
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '#' || *s == '\n' || *s == 0)
            continue;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > (long)B.max_object)
            die("%s:%lu: not a size in 1..%u (the pool's max_object_size; --max-object-size sets it)",
                B.trace_path, lineno, B.max_object);
        if (n == cap)
            B.sizes = realloc(B.sizes, (cap *= 2) * sizeof *B.sizes);
        B.sizes[n++] = (uint32_t)v;
    }
    fclose(f);
    if (!n)
        die("%s: no sizes", B.trace_path);
    B.nsizes = n;
    const char *b = base_name(B.trace_path);
    size_t len = strlen(b);
    if (len > 4 && strcmp(b + len - 4, ".txt") == 0)
        len -= 4;
    snprintf(B.sizes_desc, sizeof B.sizes_desc, "%.*s", (int)len, b);
}

static struct zs_pool_config pool_config(void)
{
    return (struct zs_pool_config){.size = sizeof(struct zs_pool_config),
                                   .chain_size = B.chain,
                                   .layout = (enum zs_layout)B.layout,
                                   .max_object_size = B.max_object_opt,
                                   .frame_size = B.frame_size_opt};
}

/* The pool's limits, asked of a pool made as the measured one will be (and destroyed
 * before it): the sizes and buffers are set up before that pool exists, so that none
 * of them counts in its resident set. */
static void probe_pool(void)
{
    struct zs_pool_config cfg = pool_config();
    struct zs_pool *p = zs_create_pool_with("zsbench-probe", &cfg);
    if (!p)
        die("zs_create_pool_with (max object size %u, frame size %u): %s", B.max_object_opt, B.frame_size_opt,
            strerror(errno));
    struct zs_pool_info info = {.size = sizeof info};
    if (zs_pool_info(p, &info) != 0)
        die("zs_pool_info: %s", strerror(errno));
    zs_destroy_pool(p);
    if (info.max_object_size < 1 || info.max_object_size > UINT32_MAX / 2)
        die("the pool reports a max_object_size of %lu", info.max_object_size);
    B.max_object = (unsigned)info.max_object_size;
    if (info.frame_size)
        B.frame_size = info.frame_size;
}

/* The sweep's upper end: the kernel layout's huge class size for the chain in use,
 * asked of a kernel-layout pool, so that every implementation sweeps the same sizes. */
static unsigned kernel_huge_class_size(void)
{
    struct zs_pool_config cfg = {
        .size = sizeof cfg, .chain_size = B.chain, .layout = ZS_LAYOUT_KERNEL, .frame_size = B.frame_size_opt};
    struct zs_pool *p = zs_create_pool_with("zsbench-probe", &cfg);
    if (!p)
        die("zs_create_pool_with (kernel layout probe): %s", strerror(errno));
    size_t huge = zs_huge_class_size(p);
    zs_destroy_pool(p);
    return huge ? (unsigned)huge : (unsigned)B.frame_size;
}

static void make_sweep(void)
{
    if (!B.sweep_step)
        B.sweep_step = 16;
    if (!B.sweep_count)
        B.sweep_count = 256;
    unsigned max = B.sweep_max ? B.sweep_max : kernel_huge_class_size();
    if (max > B.max_object)
        max = B.max_object;
    uint64_t n = 0;
    B.sizes = malloc(((max - 32) / B.sweep_step + 2) * sizeof *B.sizes);
    for (unsigned s = 32; s <= max; s += B.sweep_step)
        B.sizes[n++] = s;
    if (!n)
        die("empty sweep");
    B.nsizes = n;
    snprintf(B.sizes_desc, sizeof B.sizes_desc, "sweep-32-%u-step%u", max, B.sweep_step);
    if (!B.objects)
        B.objects = n * B.sweep_count;
}

/* The kernel's own test workload: every size of the sweep's range below the huge class
 * size (whose objects take a frame each in the kernel layout), B.sweep_count objects
 * of each in a row, ascending. */
static void make_kernel_selftest(void)
{
    if (!B.sweep_step)
        B.sweep_step = 1;
    if (!B.sweep_count)
        B.sweep_count = 182;
    unsigned max = B.sweep_max ? B.sweep_max : kernel_huge_class_size() - 1;
    if (max > B.max_object)
        max = B.max_object;
    if (max < 32)
        die("empty kernel-selftest range");
    uint64_t n = 0, nsizes = (max - 32) / B.sweep_step + 1;
    B.sizes = malloc(nsizes * B.sweep_count * sizeof *B.sizes);
    if (!B.sizes)
        die("out of memory for %" PRIu64 " sizes", nsizes * B.sweep_count);
    for (unsigned s = 32; s <= max; s += B.sweep_step)
        for (unsigned k = 0; k < B.sweep_count; k++)
            B.sizes[n++] = s;
    B.nsizes = n;
    snprintf(B.sizes_desc, sizeof B.sizes_desc, "32-%u-step%u-x%u%s%.0u", max, B.sweep_step, B.sweep_count,
             B.chain ? "-chain" : "", B.chain);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Rearranges the n sizes of seq in B.order (see the top of the file). */
static void apply_order(uint32_t *seq, uint64_t n)
{
    if (!strcmp(B.order, "as-given") || n == 0)
        return;
    qsort(seq, n, sizeof *seq, cmp_u32);
    if (!strcmp(B.order, "ascending"))
        return;
    if (!strcmp(B.order, "descending")) {
        for (uint64_t i = 0, j = n - 1; i < j; i++, j--) {
            uint32_t t = seq[i];
            seq[i] = seq[j];
            seq[j] = t;
        }
        return;
    }
    /* Runs of equal sizes in the sorted sequence: where each starts. */
    uint64_t *start = malloc((n + 1) * sizeof *start), runs = 0, longest = 0;
    uint32_t *sorted = malloc(n * sizeof *sorted);
    if (!start || !sorted)
        die("out of memory for --order");
    memcpy(sorted, seq, n * sizeof *seq);
    for (uint64_t i = 0; i < n; i++)
        if (i == 0 || sorted[i] != sorted[i - 1])
            start[runs++] = i;
    start[runs] = n;
    for (uint64_t r = 0; r < runs; r++)
        if (start[r + 1] - start[r] > longest)
            longest = start[r + 1] - start[r];
    uint64_t k = 0;
    if (!strcmp(B.order, "sawtooth")) {
        for (uint64_t ramp = 0; ramp < longest; ramp++)
            for (uint64_t i = ramp; i < n; i += longest)
                seq[k++] = sorted[i];
    } else { /* by-size: the runs in a seeded shuffle */
        uint64_t rng = mix64(B.seed ^ 0x0bd512e5ULL);
        uint64_t *order = malloc(runs * sizeof *order);
        if (!order)
            die("out of memory for --order");
        for (uint64_t r = 0; r < runs; r++)
            order[r] = r;
        for (uint64_t r = runs; r > 1; r--) {
            uint64_t j = rand_below(&rng, r), t = order[r - 1];
            order[r - 1] = order[j];
            order[j] = t;
        }
        for (uint64_t r = 0; r < runs; r++)
            for (uint64_t i = start[order[r]]; i < start[order[r] + 1]; i++)
                seq[k++] = sorted[i];
        free(order);
    }
    free(start);
    free(sorted);
}

static int parse_phase(const char *s, size_t len)
{
    for (int k = 0; k < NR_PHASE_KINDS; k++)
        if (strlen(phase_names[k]) == len && strncmp(s, phase_names[k], len) == 0)
            return k;
    return -1;
}

static void parse_plan(const char *spec)
{
    B.nplan = 0;
    for (const char *s = spec; *s;) {
        size_t len = strcspn(s, ",");
        int k = parse_phase(s, len);
        if (k < 0)
            die("unknown phase '%.*s' (fill, read, map, free, compact, churn, verify)", (int)len, s);
        if (B.nplan == MAX_PHASES)
            die("too many phases");
        if (B.nplan == 0 && k != PH_FILL)
            die("the first phase must be fill");
        B.plan[B.nplan++] = (enum phase_kind)k;
        s += len;
        if (*s == ',')
            s++;
    }
    if (!B.nplan)
        die("no phases");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: zsbench [options]\n"
            "  --workload trace|sweep|churn|kernel-selftest  size sequence and default phases (trace with\n"
            "                       --trace, else sweep)\n"
            "  --order as-given|ascending|descending|sawtooth|by-size  arrival order of the sizes (default as-given)\n"
            "  --trace FILE         one object size per line (1..the pool's max object size)\n"
            "  --max-object-size N  the pool's max_object_size (default 0: the library's, the frame size)\n"
            "  --frame-size N       the pool's frame_size (default 0: the system page)\n"
            "  --objects N          objects (trace: cycled/truncated to N; default: trace length)\n"
            "  --threads N          worker threads (default 1)\n"
            "  --free-fraction F    fraction freed in the free phase (default 0.5)\n"
            "  --seed S             content, free set and churn seed (default 42)\n"
            "  --layout dense|kernel  class layout (default dense)\n"
            "  --chain N            frames per zspage limit, 4..16 (default: the layout's)\n"
            "  --sweep-step N       sweep size step (default 16; kernel-selftest: 1)\n"
            "  --sweep-count N      sweep objects per size (default 256; kernel-selftest: 182)\n"
            "  --sweep-max N        sweep upper size (default: the kernel layout's huge class size;\n"
            "                       kernel-selftest: the size below it)\n"
            "  --churn-ops N        churn replacements (default: objects; churn workload: 4 x objects)\n"
            "  --phases LIST        comma-separated: fill,read,map,free,compact,churn,verify\n"
            "  --json FILE          write the results as JSON\n"
            "  --label NAME         name of this run in the JSON (default: implementation[-layout])\n"
            "  --expect IMPL        refuse to run unless IMPL (zsmalloc|malloc|jemalloc|mimalloc) is active\n"
            "  --check              zs_pool_check after every phase (zsmalloc)\n"
            "  --inject-corruption  change one byte of one object after the fill (tests the verifier)\n"
            "  --quiet              no table on stdout\n");
}

static unsigned long long parse_count(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        die("bad %s: %s", what, s);
    if (*end == 'k' || *end == 'K')
        v *= 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1e6, end++;
    if (*end)
        die("bad %s: %s", what, s);
    return (unsigned long long)v;
}

/* A count that is an unsigned int of the C ABI (a config field); the library judges it. */
static unsigned parse_uint(const char *s, const char *what)
{
    unsigned long long v = parse_count(s, what);
    if (v > UINT32_MAX)
        die("bad %s: %s", what, s);
    return (unsigned)v;
}

static void parse_args(int argc, char **argv)
{
    enum { O_TRACE = 256, O_OBJECTS, O_THREADS, O_FREE, O_SEED, O_LAYOUT, O_CHAIN, O_JSON, O_EXPECT,
           O_LABEL, O_WORKLOAD, O_STEP, O_COUNT, O_MAX, O_CHURN, O_PHASES, O_CHECK, O_CORRUPT, O_QUIET,
           O_HELP, O_ORDER, O_MAX_OBJECT, O_FRAME };
    static const struct option opts[] = {
        {"trace", required_argument, 0, O_TRACE},       {"objects", required_argument, 0, O_OBJECTS},
        {"threads", required_argument, 0, O_THREADS},   {"free-fraction", required_argument, 0, O_FREE},
        {"seed", required_argument, 0, O_SEED},         {"layout", required_argument, 0, O_LAYOUT},
        {"chain", required_argument, 0, O_CHAIN},       {"json", required_argument, 0, O_JSON},
        {"expect", required_argument, 0, O_EXPECT},     {"label", required_argument, 0, O_LABEL},
        {"workload", required_argument, 0, O_WORKLOAD}, {"sweep-step", required_argument, 0, O_STEP},
        {"sweep-count", required_argument, 0, O_COUNT}, {"sweep-max", required_argument, 0, O_MAX},
        {"churn-ops", required_argument, 0, O_CHURN},   {"phases", required_argument, 0, O_PHASES},
        {"check", no_argument, 0, O_CHECK},             {"inject-corruption", no_argument, 0, O_CORRUPT},
        {"quiet", no_argument, 0, O_QUIET},             {"help", no_argument, 0, O_HELP},
        {"order", required_argument, 0, O_ORDER},       {"max-object-size", required_argument, 0, O_MAX_OBJECT},
        {"frame-size", required_argument, 0, O_FRAME},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_TRACE: B.trace_path = optarg; break;
        case O_OBJECTS: B.objects = parse_count(optarg, "--objects"); break;
        case O_THREADS: B.threads = (unsigned)parse_count(optarg, "--threads"); break;
        case O_FREE: {
            char *end;
            B.free_fraction = strtod(optarg, &end);
            if (*end || !(B.free_fraction >= 0 && B.free_fraction <= 1))
                die("--free-fraction takes a number in 0..1");
            break;
        }
        case O_SEED: B.seed = strtoull(optarg, NULL, 0); break;
        case O_LAYOUT:
            if (strcmp(optarg, "dense") == 0)
                B.layout = ZS_LAYOUT_DENSE;
            else if (strcmp(optarg, "kernel") == 0)
                B.layout = ZS_LAYOUT_KERNEL;
            else
                die("--layout takes dense or kernel");
            break;
        case O_CHAIN: B.chain = (unsigned)parse_count(optarg, "--chain"); break;
        case O_JSON: B.json_path = optarg; break;
        case O_EXPECT: B.expect = optarg; break;
        case O_LABEL: B.label = optarg; break;
        case O_WORKLOAD: B.workload = optarg; break;
        case O_ORDER: B.order = optarg; break;
        case O_STEP:
        case O_COUNT: {
            unsigned v = (unsigned)parse_count(optarg, c == O_STEP ? "--sweep-step" : "--sweep-count");
            if (v < 1)
                die("--sweep-step and --sweep-count must be positive");
            *(c == O_STEP ? &B.sweep_step : &B.sweep_count) = v;
            break;
        }
        case O_MAX: B.sweep_max = (unsigned)parse_count(optarg, "--sweep-max"); break;
        case O_MAX_OBJECT: B.max_object_opt = parse_uint(optarg, "--max-object-size"); break;
        case O_FRAME: B.frame_size_opt = parse_uint(optarg, "--frame-size"); break;
        case O_CHURN: B.churn_ops = parse_count(optarg, "--churn-ops"); break;
        case O_PHASES: B.phases_opt = optarg; break;
        case O_CHECK: B.check = 1; break;
        case O_CORRUPT: B.inject_corruption = 1; break;
        case O_QUIET: B.quiet = 1; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
    if (!B.workload)
        B.workload = B.trace_path ? "trace" : "sweep";
    if (strcmp(B.workload, "trace") && strcmp(B.workload, "sweep") && strcmp(B.workload, "churn") &&
        strcmp(B.workload, "kernel-selftest"))
        die("--workload takes trace, sweep, churn or kernel-selftest");
    if (strcmp(B.order, "as-given") && strcmp(B.order, "ascending") && strcmp(B.order, "descending") &&
        strcmp(B.order, "sawtooth") && strcmp(B.order, "by-size"))
        die("--order takes as-given, ascending, descending, sawtooth or by-size");
    if (!strcmp(B.workload, "trace") && !B.trace_path)
        die("the trace workload needs --trace FILE");
    if (B.threads < 1 || B.threads > MAX_THREADS)
        die("--threads takes 1..%d", MAX_THREADS);
}

/* ------------------------------------------------------------------ output */

static void fmt_rate(char *out, size_t n, const struct result *r)
{
    if (!r->available || r->ops == 0 || r->seconds <= 0)
        snprintf(out, n, "n/a");
    else
        snprintf(out, n, "%.2f", (double)r->ops / r->seconds / 1e6);
}

static void fmt_ns(char *out, size_t n, const struct result *r)
{
    if (!r->available || r->ops == 0 || r->seconds <= 0)
        snprintf(out, n, "n/a");
    else
        snprintf(out, n, "%.1f", r->seconds * 1e9 / (double)r->ops);
}

static void print_table(void)
{
    printf("zsbench: %s (zs_* from %s, malloc from %s)\n", B.label, B.zs_lib, B.malloc_lib);
    printf("workload %s, sizes %s, %" PRIu64 " objects, %u thread%s, layout %s, chain %u, max object size %u, seed %" PRIu64
           ", free fraction %.2f\n",
           B.workload, B.sizes_desc, B.objects, B.threads, B.threads == 1 ? "" : "s",
           B.layout == ZS_LAYOUT_KERNEL ? "kernel" : "dense", B.chain, B.max_object, B.seed, B.free_fraction);
    printf("%-8s %9s %8s %8s %9s %9s %9s %9s %9s %9s %8s %9s %9s %9s %6s\n", "phase", "ops", "Mops/s", "ns/op",
           "live", "req MiB", "frames", "ideal", "meta KiB", "foot MiB", "density", "RSS MiB", "compacted", "moved",
           "errors");
    for (unsigned p = 0; p < B.nplan; p++) {
        const struct result *r = &B.results[p];
        char rate[32], ns[32];
        fmt_rate(rate, sizeof rate, r);
        fmt_ns(ns, sizeof ns, r);
        if (!r->available) {
            printf("%-8s %9s %8s %8s %9s %9s %9s %9s %9s %9s %8s %9s %9s %9s %6s\n", r->name, "n/a", "n/a", "n/a", "",
                   "", "", "", "", "", "", "", "n/a", "n/a", "");
            continue;
        }
        char ideal[32];
        if (r->ideal_frames)
            snprintf(ideal, sizeof ideal, "%lu", r->ideal_frames);
        else
            snprintf(ideal, sizeof ideal, "n/a");
        printf("%-8s %9" PRIu64 " %8s %8s %9lu %9.2f %9lu %9s %9.1f %9.2f %8.4f %9.2f %9lu %9lu %6" PRIu64 "\n",
               r->name, r->ops, rate, ns, r->info.live_objects, (double)r->info.requested_bytes / 1048576.0,
               r->frames, ideal, (double)r->info.meta_bytes / 1024.0, (double)r->footprint / 1048576.0, r->density,
               (double)r->rss_delta / 1048576.0, r->info.pages_compacted, r->info.objs_moved, r->errors);
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void write_json(uint64_t total_errors)
{
    FILE *f = fopen(B.json_path, "w");
    if (!f)
        die("cannot write %s: %s", B.json_path, strerror(errno));
    fprintf(f, "{\n  \"label\": ");
    json_str(f, B.label);
    fprintf(f, ",\n  \"impl\": ");
    json_str(f, B.impl);
    fprintf(f, ",\n  \"zs_lib\": ");
    json_str(f, B.zs_lib);
    fprintf(f, ",\n  \"malloc_lib\": ");
    json_str(f, B.malloc_lib);
    fprintf(f, ",\n  \"workload\": ");
    json_str(f, B.workload);
    fprintf(f, ",\n  \"sizes\": ");
    json_str(f, B.sizes_desc);
    fprintf(f, ",\n  \"objects\": %" PRIu64 ",\n  \"threads\": %u,\n  \"layout\": \"%s\",\n  \"chain\": %u,\n",
            B.objects, B.threads, B.layout == ZS_LAYOUT_KERNEL ? "kernel" : "dense", B.chain);
    fprintf(f, "  \"max_object_size\": %u,\n  \"frame_size\": %lu,\n  \"frame_size_opt\": %u,\n", B.max_object,
            B.frame_size, B.frame_size_opt);
    fprintf(f, "  \"seed\": %" PRIu64 ",\n  \"free_fraction\": %.6g,\n  \"churn_ops\": %" PRIu64 ",\n", B.seed,
            B.free_fraction, B.churn_ops);
    fprintf(f, "  \"errors\": %" PRIu64 ",\n  \"phases\": [\n", total_errors);
    for (unsigned p = 0; p < B.nplan; p++) {
        const struct result *r = &B.results[p];
        fprintf(f, "    {\"phase\": \"%s\", \"available\": %s", r->name, r->available ? "true" : "false");
        if (r->available) {
            double ops_s = r->seconds > 0 ? (double)r->ops / r->seconds : 0;
            double ns = r->ops ? r->seconds * 1e9 / (double)r->ops : 0;
            fprintf(f,
                    ", \"ops\": %" PRIu64 ", \"seconds\": %.9f, \"ops_per_s\": %.1f, \"ns_per_op\": %.2f"
                    ", \"frames\": %lu, \"meta_bytes\": %lu, \"footprint\": %" PRIu64 ", \"requested\": %lu"
                    ", \"live\": %lu, \"density\": %.6f, \"rss_delta\": %lld, \"pages_compacted\": %lu"
                    ", \"objs_moved\": %lu, \"compact_skipped_mapped\": %lu, \"compact_freed\": %lu"
                    ", \"misuse_events\": %lu, \"errors\": %" PRIu64 ", \"stray_errno\": %" PRIu64
                    ", \"ideal_frames\": %lu, \"read_copied_bytes\": %lu",
                    r->ops, r->seconds, ops_s, ns, r->frames, r->info.meta_bytes, r->footprint,
                    r->info.requested_bytes, r->info.live_objects, r->density, r->rss_delta,
                    r->info.pages_compacted, r->info.objs_moved, r->info.compact_skipped_mapped, r->compact_freed,
                    r->info.misuse_events, r->errors, r->stray_errno, r->ideal_frames, r->info.read_copied_bytes);
        }
        fprintf(f, "}%s\n", p + 1 < B.nplan ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    if (fclose(f) != 0)
        die("cannot write %s", B.json_path);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    identify();
    if (B.expect && strcmp(B.expect, B.impl) != 0) {
        fprintf(stderr,
                "zsbench: refusing to run: --expect %s, but the active implementation is %s "
                "(zs_malloc from %s, malloc from %s); did the LD_PRELOAD take?\n",
                B.expect, B.impl, B.zs_lib, B.malloc_lib);
        return 2;
    }
    static char label[128];
    if (!B.label) {
        if (!strcmp(B.impl, "zsmalloc"))
            snprintf(label, sizeof label, "zsmalloc-%s", B.layout == ZS_LAYOUT_KERNEL ? "kernel" : "dense");
        else
            snprintf(label, sizeof label, "%s", B.impl);
        B.label = label;
    }

    probe_pool();
    B.pattern = malloc(PATTERN_WINDOW + B.max_object);
    B.class_idx = malloc(B.max_object * sizeof *B.class_idx);
    if (!B.pattern || !B.class_idx)
        die("out of memory");

    /* The size sequence, the object table, the free permutation. */
    if (!strcmp(B.workload, "kernel-selftest"))
        make_kernel_selftest();
    else if (B.trace_path)
        load_trace();
    else
        make_sweep();
    if (!B.objects)
        B.objects = B.nsizes;
    if (B.objects > UINT32_MAX)
        die("--objects is at most %u", UINT32_MAX);
    uint32_t *seq = malloc(B.objects * sizeof *seq);
    B.objs = calloc(B.objects, sizeof *B.objs);
    B.perm = malloc(B.objects * sizeof *B.perm);
    if (!seq || !B.objs || !B.perm)
        die("out of memory for %" PRIu64 " objects", B.objects);
    for (uint64_t i = 0; i < B.objects; i++)
        seq[i] = B.sizes[i % B.nsizes];
    apply_order(seq, B.objects);
    if (strcmp(B.order, "as-given")) {
        size_t len = strlen(B.sizes_desc);
        snprintf(B.sizes_desc + len, sizeof B.sizes_desc - len, "-%s", B.order);
    }
    free(B.sizes);
    B.sizes = seq;
    B.nsizes = B.objects;
    memset(B.objs, 0, B.objects * sizeof *B.objs); /* resident before the baseline */
    uint64_t rng = mix64(B.seed ^ 0x5eedf00dULL);
    for (uint64_t i = 0; i < B.objects; i++)
        B.perm[i] = (uint32_t)i;
    for (uint64_t i = B.objects; i > 1; i--) {
        uint64_t j = rand_below(&rng, i);
        uint32_t t = B.perm[i - 1];
        B.perm[i - 1] = B.perm[j];
        B.perm[j] = t;
    }
    B.nfree = (uint64_t)(B.free_fraction * (double)B.objects + 0.5);
    for (unsigned b = 0; b < PATTERN_WINDOW + B.max_object; b++)
        B.pattern[b] = (unsigned char)next_rand(&rng);
    int churn_workload = !strcmp(B.workload, "churn");
    if (!B.churn_ops)
        B.churn_ops = churn_workload ? 4 * B.objects : B.objects;
    parse_plan(B.phases_opt ? B.phases_opt
                            : churn_workload ? "fill,churn,read,free,compact,verify"
                                             : "fill,read,map,free,compact,churn,verify");

    /* Workers exist before the pool, so their stacks are not counted in its RSS. */
    B.workers = aligned_alloc(64, B.threads * sizeof *B.workers);
    if (!B.workers)
        die("out of memory");
    memset(B.workers, 0, B.threads * sizeof *B.workers);
    pthread_barrier_init(&B.start, NULL, B.threads + 1);
    pthread_barrier_init(&B.done, NULL, B.threads + 1);
    for (unsigned t = 0; t < B.threads; t++) {
        B.workers[t].id = t;
        B.workers[t].rng = mix64(B.seed + 0x1000 * (t + 1));
        B.workers[t].buf = aligned_alloc(64, (B.max_object + 63) / 64 * 64);
        B.workers[t].local = aligned_alloc(64, (B.max_object + 63) / 64 * 64);
        if (!B.workers[t].buf || !B.workers[t].local)
            die("out of memory");
        if (pthread_create(&B.workers[t].thread, NULL, worker_main, &B.workers[t]) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&B.done); /* every worker started */
    B.page_size = sysconf(_SC_PAGESIZE);

    B.rss_base_pages = anon_rss_pages();
    struct zs_pool_config cfg = pool_config();
    B.pool = zs_create_pool_with("zsbench", &cfg);
    if (!B.pool)
        die("zs_create_pool_with: %s", strerror(errno));

    run_plan();

    /* Every object back, then the pool. */
    for (uint64_t i = 0; i < B.objects; i++)
        if (B.objs[i].handle)
            zs_free(B.pool, B.objs[i].handle);
    zs_destroy_pool(B.pool);
    B.phase = PH_QUIT;
    pthread_barrier_wait(&B.start);
    for (unsigned t = 0; t < B.threads; t++)
        pthread_join(B.workers[t].thread, NULL);

    uint64_t errors = 0, stray = 0;
    for (unsigned p = 0; p < B.nplan; p++) {
        const struct result *r = &B.results[p];
        errors += r->errors;
        stray += r->stray_errno;
        if (r->available && r->info.misuse_events) {
            fprintf(stderr, "zsbench: after %s the pool counts %lu misuse events; the harness made none\n", r->name,
                    r->info.misuse_events);
            errors++;
        }
        if (r->available && (r->harness_requested != r->info.requested_bytes || r->harness_live != r->info.live_objects)) {
            fprintf(stderr,
                    "zsbench: after %s the pool reports %lu live objects, %lu requested bytes; "
                    "the harness holds %" PRIu64 " and %" PRIu64 "\n",
                    r->name, r->info.live_objects, r->info.requested_bytes, r->harness_live, r->harness_requested);
            errors++;
        }
    }
    if (stray)
        fprintf(stderr,
                "zsbench: warning: %" PRIu64 " successful zs_free/zs_obj_write calls left errno changed (last: %s); "
                "the pool's counts show the calls did their work\n",
                stray, strerror(B.stray_value));
    if (!B.quiet)
        print_table();
    if (B.json_path)
        write_json(errors);
    if (errors) {
        fprintf(stderr, "zsbench: %" PRIu64 " error%s\n", errors, errors == 1 ? "" : "s");
        return 1;
    }
    return 0;
}
