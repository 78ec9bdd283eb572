/*
 * zshot: the fast paths of the zs_* C ABI against their baselines, in one process and
 * one run, rounds alternating between the library and the baseline so that a shared
 * machine's drift falls on both alike; each figure is the median over the rounds.
 *
 *   write+read  zs_obj_write + zs_obj_read_begin/end of every object of the trace,
 *               against memcpy into and out of malloc'd objects of the same sizes
 *   pairs       zs_malloc + zs_free pairs replacing objects of a steady live set (the
 *               trace's), against malloc + free on the same walk
 *   map         zs_map_object(ZS_MM_RO) + zs_unmap_object of 256 objects whose
 *               handles stay in cache: the calls' own cost, in ns per pair
 *   threads     the pairs with 1, 2, .. N threads (N = --threads-max, default twice the
 *               CPUs), each thread with its own live set in one shared pool (or in the
 *               one process heap for malloc): pairs per second, and the speed-up over
 *               one thread
 *
 * zshot --trace FILE [--rounds N] [--threads-max N] [--layout dense|kernel] [--only FIGURE]
 * (--only write+read, pairs, map or threads: that figure alone, to profile it)
 * The sizes are one per line of FILE (the node trace in `make bench-hot`).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zsmalloc.h"

#define MAP_OBJECTS 256
#define MAP_REPEAT 64
#define PAIRS_PER_THREAD 200000

static size_t *sizes;
static size_t nsizes;
static int layout = ZS_LAYOUT_DENSE;
static unsigned rounds = 41;
static volatile unsigned char sink;
static const char *only;

/* Whether the figure `name` is measured in this run. */
static int wanted(const char *name)
{
    return !only || !strcmp(only, name);
}

static void die(const char *msg)
{
    fprintf(stderr, "zshot: %s\n", msg);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Keeps the compiler from dropping or merging copies whose results it cannot see used. */
static inline void clobber(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void load_trace(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open the trace");
    size_t cap = 16384;
    sizes = malloc(cap * sizeof *sizes);
    char line[64];
    while (fgets(line, sizeof line, f)) {
        char *end;
        unsigned long s = strtoul(line, &end, 10);
        if (end == line || s == 0 || s > 4096)
            continue;
        if (nsizes == cap)
            sizes = realloc(sizes, (cap *= 2) * sizeof *sizes);
        sizes[nsizes++] = s;
    }
    fclose(f);
    if (!nsizes)
        die("no sizes in the trace");
}

static struct zs_pool *new_pool(void)
{
    struct zs_pool_config cfg = {.size = sizeof cfg, .max_pages = 1UL << 20, .layout = layout};
    struct zs_pool *p = zs_create_pool_with("zshot", &cfg);
    if (!p)
        die("zs_create_pool_with failed");
    return p;
}

static unsigned long must_malloc(struct zs_pool *p, size_t s)
{
    unsigned long h = zs_malloc(p, s, 0);
    if (ZS_IS_ERR(h))
        die("zs_malloc failed");
    return h;
}

/* ------------------------------------------------------------ write+read */

static unsigned char src[4096] __attribute__((aligned(64)));
static unsigned char local[4096] __attribute__((aligned(64)));

static double zs_write_read(struct zs_pool *p, const unsigned long *hs)
{
    double t = now();
    for (size_t i = 0; i < nsizes; i++) {
        size_t s = sizes[i];
        zs_obj_write(p, hs[i], src, s);
        unsigned char *r = zs_obj_read_begin(p, hs[i], s, local);
        sink ^= r[s - 1];
        zs_obj_read_end(p, hs[i], s, r);
    }
    return (now() - t) * 1e9 / (double)nsizes;
}

static double memcpy_write_read(unsigned char **bufs)
{
    double t = now();
    for (size_t i = 0; i < nsizes; i++) {
        size_t s = sizes[i];
        memcpy(bufs[i], src, s);
        clobber(bufs[i]);
        memcpy(local, bufs[i], s);
        clobber(local);
        sink ^= local[s - 1];
    }
    return (now() - t) * 1e9 / (double)nsizes;
}

/* ------------------------------------------------------------ pairs */

static inline size_t victim(size_t i, unsigned r, size_t n)
{
    return (i * 7919 + r) % n;
}

static double zs_pairs(struct zs_pool *p, unsigned long *ring, unsigned r)
{
    double t = now();
    for (size_t i = 0; i < nsizes; i++) {
        size_t j = victim(i, r, nsizes);
        zs_free(p, ring[j]);
        ring[j] = zs_malloc(p, sizes[i], 0);
    }
    return (now() - t) * 1e9 / (double)nsizes;
}

static double malloc_pairs(void **ring, unsigned r)
{
    double t = now();
    for (size_t i = 0; i < nsizes; i++) {
        size_t j = victim(i, r, nsizes);
        free(ring[j]);
        ring[j] = malloc(sizes[i]);
        clobber(ring[j]);
    }
    return (now() - t) * 1e9 / (double)nsizes;
}

/* ------------------------------------------------------------ map */

static double zs_map_unmap(struct zs_pool *p, const unsigned long *hs)
{
    double t = now();
    for (unsigned k = 0; k < MAP_REPEAT; k++)
        for (size_t i = 0; i < MAP_OBJECTS; i++) {
            void *m = zs_map_object(p, hs[i], ZS_MM_RO);
            clobber(m);
            zs_unmap_object(p, hs[i]);
        }
    return (now() - t) * 1e9 / (double)(MAP_REPEAT * MAP_OBJECTS);
}

/* ------------------------------------------------------------ threads */

struct pair_thread {
    pthread_t thread;
    struct zs_pool *pool; /* NULL: malloc */
    unsigned id;
    pthread_barrier_t *start;
    double seconds;
};

static void *pair_thread_main(void *arg)
{
    struct pair_thread *t = arg;
    size_t n = nsizes;
    unsigned long *ring = malloc(n * sizeof *ring);
    void **mring = malloc(n * sizeof *mring);
    size_t off = (size_t)t->id * 977;
    for (size_t i = 0; i < n; i++) {
        size_t s = sizes[(i + off) % n];
        if (t->pool)
            ring[i] = must_malloc(t->pool, s);
        else
            mring[i] = malloc(s);
    }
    pthread_barrier_wait(t->start);
    double t0 = now();
    for (size_t k = 0; k < PAIRS_PER_THREAD; k++) {
        size_t i = k % n, j = victim(i, (unsigned)(k / n), n);
        size_t s = sizes[(i + off) % n];
        if (t->pool) {
            zs_free(t->pool, ring[j]);
            ring[j] = zs_malloc(t->pool, s, 0);
        } else {
            free(mring[j]);
            mring[j] = malloc(s);
            clobber(mring[j]);
        }
    }
    t->seconds = now() - t0;
    for (size_t i = 0; i < n; i++) {
        if (t->pool)
            zs_free(t->pool, ring[i]);
        else
            free(mring[i]);
    }
    free(ring);
    free(mring);
    return NULL;
}

/* Pairs per second with `n` threads: all pairs over the slowest thread's time. */
static double threaded_pairs(struct zs_pool *p, unsigned n)
{
    struct pair_thread *ts = calloc(n, sizeof *ts);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, n);
    for (unsigned i = 0; i < n; i++) {
        ts[i] = (struct pair_thread){.pool = p, .id = i, .start = &start};
        if (pthread_create(&ts[i].thread, NULL, pair_thread_main, &ts[i]))
            die("pthread_create failed");
    }
    double slowest = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(ts[i].thread, NULL);
        if (ts[i].seconds > slowest)
            slowest = ts[i].seconds;
    }
    pthread_barrier_destroy(&start);
    free(ts);
    return (double)n * PAIRS_PER_THREAD / slowest;
}

int main(int argc, char **argv)
{
    const char *trace = NULL;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads_max = ncpu > 0 ? 2 * (unsigned)ncpu : 4;
    static const struct option opts[] = {{"trace", required_argument, 0, 't'},
                                         {"rounds", required_argument, 0, 'r'},
                                         {"threads-max", required_argument, 0, 'n'},
                                         {"layout", required_argument, 0, 'l'},
                                         {"only", required_argument, 0, 'o'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': trace = optarg; break;
        case 'r': rounds = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'n': threads_max = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'o': only = optarg; break;
        case 'l':
            if (!strcmp(optarg, "dense"))
                layout = ZS_LAYOUT_DENSE;
            else if (!strcmp(optarg, "kernel"))
                layout = ZS_LAYOUT_KERNEL;
            else
                die("--layout takes dense or kernel");
            break;
        default:
            die("usage: zshot --trace FILE [--rounds N] [--threads-max N] [--layout dense|kernel] [--only FIGURE]");
        }
    }
    if (!trace)
        die("--trace FILE is needed");
    if (rounds < 1 || threads_max < 1)
        die("--rounds and --threads-max take a positive number");
    load_trace(trace);
    memset(src, 0xA5, sizeof src);

    double *a = malloc(rounds * sizeof *a), *b = malloc(rounds * sizeof *b), *q = malloc(rounds * sizeof *q);
    struct zs_pool *p = new_pool();
    unsigned long *hs = malloc(nsizes * sizeof *hs);
    unsigned char **bufs = malloc(nsizes * sizeof *bufs);
    void **mring = malloc(nsizes * sizeof *mring);
    for (size_t i = 0; i < nsizes; i++) {
        hs[i] = must_malloc(p, sizes[i]);
        zs_obj_write(p, hs[i], src, sizes[i]);
        bufs[i] = malloc(sizes[i]);
        memset(bufs[i], 0, sizes[i]);
        mring[i] = malloc(sizes[i]);
    }
    printf("zshot: %zu objects (node trace), layout %s, %u rounds, %ld CPUs\n", nsizes,
           layout == ZS_LAYOUT_DENSE ? "dense" : "kernel", rounds, ncpu);
    printf("%-34s %10s %10s %8s\n", "figure (median ns per object)", "zsmalloc", "baseline", "ratio");

    /* One warm-up round of each, then the counted rounds. */
    for (unsigned r = 0; wanted("write+read") && r < rounds + 1; r++) {
        double x = zs_write_read(p, hs), y = memcpy_write_read(bufs);
        if (r) {
            a[r - 1] = x;
            b[r - 1] = y;
            q[r - 1] = x / y;
        }
    }
    if (wanted("write+read"))
        printf("%-34s %10.1f %10.1f %7.2fx\n", "write+read vs memcpy in+out", median(a, rounds),
               median(b, rounds), median(q, rounds));

    for (unsigned r = 0; wanted("pairs") && r < rounds + 1; r++) {
        double x = zs_pairs(p, hs, r), y = malloc_pairs(mring, r);
        if (r) {
            a[r - 1] = x;
            b[r - 1] = y;
            q[r - 1] = x / y;
        }
    }
    if (wanted("pairs"))
        printf("%-34s %10.1f %10.1f %7.2fx\n", "malloc+free pairs vs glibc", median(a, rounds), median(b, rounds),
               median(q, rounds));

    for (unsigned r = 0; wanted("map") && r < rounds + 1; r++) {
        double x = zs_map_unmap(p, hs);
        if (r)
            a[r - 1] = x;
    }
    if (wanted("map"))
        printf("%-34s %10.1f %10s %8s\n", "map(RO)+unmap, 256 cached objects", median(a, rounds), "-", "-");

    for (size_t i = 0; i < nsizes; i++) {
        zs_free(p, hs[i]);
        free(bufs[i]);
        free(mring[i]);
    }
    zs_destroy_pool(p);

    if (wanted("threads"))
        printf("\n%-34s %10s %10s %10s %10s\n", "threads (median Mpairs/s)", "zsmalloc", "x 1 thread", "malloc",
               "x 1 thread");
    unsigned trounds = rounds / 8 + 3;
    double zs1 = 0, m1 = 0;
    for (unsigned n = 1; wanted("threads") && n <= threads_max; n++) {
        for (unsigned r = 0; r < trounds; r++) {
            struct zs_pool *tp = new_pool();
            a[r] = threaded_pairs(tp, n) / 1e6;
            zs_destroy_pool(tp);
            b[r] = threaded_pairs(NULL, n) / 1e6;
        }
        double za = median(a, trounds), mb = median(b, trounds);
        if (n == 1) {
            zs1 = za;
            m1 = mb;
        }
        printf("%-34u %10.2f %9.2fx %10.2f %9.2fx\n", n, za, za / zs1, mb, mb / m1);
    }
    free(a);
    free(b);
    free(q);
    free(hs);
    free(bufs);
    free(mring);
    free(sizes);
    return sink == 0x5A ? 0 : 0;
}
