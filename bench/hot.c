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
 *               CPUs) in one pool (or the process heap for malloc): private objects
 *               (each thread replaces objects of its own live set) and shared ones (one
 *               live set, so that most frees are of another thread's objects), each
 *               without and with zs_compact running on one more thread throughout:
 *               pairs per second, and the speed-up over one thread
 *
 * "malloc" is whichever malloc the process has: glibc's, or jemalloc or mimalloc
 * preloaded (LD_PRELOAD), named in the first line; `make bench-hot` runs all three.
 *
 * zshot --trace FILE [--rounds N] [--threads-max N] [--pairs N] [--mode M]
 *       [--layout dense|kernel] [--only FIGURE] [--latency] [--pool-each] [--fill-in-turn]
 * (--pairs: per thread in the threads figure, 400000; --mode: one kind of threaded
 * run alone, 0 private, 1 shared, 2 private with the compactor, 3 shared with it;
 * --only write+read, pairs, map or threads: that figure alone, to profile it;
 * --latency: the threads figure also times each zsmalloc pair, and prints per row
 * the longest, how many took over 100 us and over 1 ms, and the compactor's calls
 * and the calls that freed frames, summed over the row's runs; the clock read
 * around each pair slows the pairs themselves; --pool-each: in the threads figure each
 * zsmalloc thread has a pool of its own, which shares nothing with the others';
 * --fill-in-turn: the threads fill their live sets one after the other rather than at
 * once, so that what each takes from a pool as it fills is not interleaved with the
 * others'). The threads figure's medians are of
 * (rounds + 7) / 8 runs.
 * The sizes are one per line of FILE (the node trace in `make bench-hot`).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
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

static size_t *sizes;
static size_t nsizes;
static int layout = ZS_LAYOUT_DENSE;
static unsigned rounds = 41;
static size_t pairs_per_thread = 400000;
static volatile unsigned char sink;
static const char *only;
static int only_mode = -1;
static int latency;
/* --pool-each and --fill-in-turn (the threads figure). */
static int pool_each, fill_in_turn;
/* --latency: over the runs of one row of the threads figure (zsmalloc's). */
static struct {
    double longest;
    unsigned long over_100us, over_1ms, compact_calls, compact_freeing;
} lat;

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
        if (!r || r[0] != 0xA5 || r[s - 1] != 0xA5)
            die("zs_obj_read_begin: not the bytes written");
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
        ring[j] = must_malloc(p, sizes[i]);
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

/* One run of the threaded pairs: `threads` threads, each replacing objects of its own
 * live set (private) or of one live set all of them share (shared: an object is
 * often freed by a thread other than the one that allocated it), in one pool or in
 * the process heap; with `compactor`, one more thread calls zs_compact throughout. */
struct pair_run {
    struct zs_pool *pool; /* NULL: malloc */
    unsigned threads;
    unsigned filled; /* --fill-in-turn: the threads that have filled their live sets */
    int shared;
    int compactor;
    uintptr_t *ring; /* handles or pointers: threads x nsizes entries */
    pthread_barrier_t start;
    volatile int stop;
};

struct pair_thread {
    pthread_t thread;
    struct pair_run *run;
    struct zs_pool *pool; /* this thread's: the run's, or its own (--pool-each) */
    unsigned id;
    double seconds;
};

static uintptr_t obj_new(struct zs_pool *pool, size_t s)
{
    if (pool)
        return must_malloc(pool, s);
    void *m = malloc(s);
    if (!m)
        die("malloc failed");
    clobber(m);
    return (uintptr_t)m;
}

static void obj_free(struct zs_pool *pool, uintptr_t o)
{
    if (pool)
        zs_free(pool, o);
    else
        free((void *)o);
}

static void *pair_thread_main(void *arg)
{
    struct pair_thread *t = arg;
    struct pair_run *run = t->run;
    size_t n = nsizes, off = (size_t)t->id * 977;
    uintptr_t *mine = run->ring + (size_t)t->id * n;
    if (fill_in_turn)
        while (__atomic_load_n(&run->filled, __ATOMIC_ACQUIRE) != t->id)
            sched_yield();
    for (size_t i = 0; i < n; i++)
        mine[i] = obj_new(t->pool, sizes[(i + off) % n]);
    __atomic_add_fetch(&run->filled, 1, __ATOMIC_RELEASE);
    /* Shared: every thread's walk covers the whole ring, and an entry is swapped
     * atomically, so each object is freed once, by whichever thread replaces it. */
    uintptr_t *ring = run->shared ? run->ring : mine;
    size_t span = run->shared ? n * run->threads : n;
    pthread_barrier_wait(&run->start);
    double t0 = now(), longest = 0;
    unsigned long over_100us = 0, over_1ms = 0;
    int timed = latency && run->pool;
    for (size_t k = 0; k < pairs_per_thread; k++) {
        size_t i = k % n, j = (victim(i, (unsigned)(k / n), span) + off) % span;
        double a = timed ? now() : 0;
        uintptr_t o = obj_new(t->pool, sizes[(i + off) % n]);
        obj_free(t->pool, __atomic_exchange_n(&ring[j], o, __ATOMIC_RELAXED));
        if (timed) {
            double d = now() - a;
            longest = d > longest ? d : longest;
            over_100us += d > 100e-6;
            over_1ms += d > 1e-3;
        }
    }
    t->seconds = now() - t0;
    if (timed) {
        static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&m);
        lat.longest = longest > lat.longest ? longest : lat.longest;
        lat.over_100us += over_100us;
        lat.over_1ms += over_1ms;
        pthread_mutex_unlock(&m);
    }
    return NULL;
}

static void *compactor_main(void *arg)
{
    struct pair_run *run = arg;
    pthread_barrier_wait(&run->start);
    unsigned long calls = 0, freeing = 0;
    while (!run->stop) {
        freeing += zs_compact(run->pool) != 0;
        calls++;
    }
    lat.compact_calls += calls;
    lat.compact_freeing += freeing;
    return NULL;
}

/* Pairs per second: all threads' pairs over the slowest thread's time. */
static double threaded_pairs(struct zs_pool *p, unsigned n, int shared, int compactor)
{
    struct pair_run run = {.pool = p, .threads = n, .shared = shared, .compactor = compactor && p};
    run.ring = malloc((size_t)n * nsizes * sizeof *run.ring);
    struct pair_thread *ts = calloc(n, sizeof *ts);
    pthread_t comp;
    pthread_barrier_init(&run.start, NULL, n + (unsigned)run.compactor);
    for (unsigned i = 0; i < n; i++) {
        /* A pool each: private objects only (a shared live set is the run's pool's). */
        struct zs_pool *own = p && pool_each && !shared ? new_pool() : p;
        ts[i] = (struct pair_thread){.run = &run, .id = i, .pool = own};
        if (pthread_create(&ts[i].thread, NULL, pair_thread_main, &ts[i]))
            die("pthread_create failed");
    }
    if (run.compactor && pthread_create(&comp, NULL, compactor_main, &run))
        die("pthread_create failed");
    double slowest = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(ts[i].thread, NULL);
        if (ts[i].seconds > slowest)
            slowest = ts[i].seconds;
    }
    if (run.compactor) {
        run.stop = 1;
        pthread_join(comp, NULL);
    }
    /* A private run's entries of thread i are its live set, in its pool. */
    for (size_t i = 0; i < (size_t)n * nsizes; i++)
        obj_free(shared ? p : ts[i / nsizes].pool, run.ring[i]);
    for (unsigned i = 0; p && i <= n; i++) {
        struct zs_pool *q = i < n ? ts[i].pool : p;
        if (i < n && q == p)
            continue;
        struct zs_pool_info info = {.size = sizeof info};
        if (zs_pool_info(q, &info) || info.live_objects)
            die("objects left in the pool after every one was freed once");
        if (q != p)
            zs_destroy_pool(q);
    }
    pthread_barrier_destroy(&run.start);
    free(ts);
    free(run.ring);
    return (double)n * pairs_per_thread / slowest;
}

/* The threads figure for one kind of run: 1..threads_max threads, zsmalloc and malloc
 * runs alternating, each in a fresh pool (or the process heap). */
static void threads_table(unsigned threads_max, int shared, int compactor, double *a, double *b)
{
    printf("\n%s objects%s: median Mpairs/s\n", shared ? "shared" : "private",
           compactor ? ", zs_compact running throughout (zsmalloc)" : "");
    printf("%-8s %10s %10s %10s %10s\n", "threads", "zsmalloc", "x 1 thread", "malloc", "x 1 thread");
    unsigned trounds = (rounds + 7) / 8;
    double zs1 = 0, m1 = 0;
    for (unsigned n = 1; n <= threads_max; n++) {
        memset(&lat, 0, sizeof lat);
        for (unsigned r = 0; r < trounds; r++) {
            struct zs_pool *tp = new_pool();
            a[r] = threaded_pairs(tp, n, shared, compactor) / 1e6;
            zs_destroy_pool(tp);
            b[r] = threaded_pairs(NULL, n, shared, 0) / 1e6;
        }
        double za = median(a, trounds), mb = median(b, trounds);
        if (n == 1) {
            zs1 = za;
            m1 = mb;
        }
        printf("%-8u %10.2f %9.2fx %10.2f %9.2fx\n", n, za, za / zs1, mb, mb / m1);
        if (latency)
            printf("         zsmalloc pairs: longest %.0f us, %lu over 100 us, %lu over 1 ms; zs_compact calls %lu, "
                   "%lu freeing frames\n",
                   lat.longest * 1e6, lat.over_100us, lat.over_1ms, lat.compact_calls, lat.compact_freeing);
    }
}

/* The library that provides malloc in this process (glibc, or one preloaded). */
static const char *malloc_name(void)
{
    Dl_info info;
    if (!dladdr(dlsym(RTLD_DEFAULT, "malloc"), &info) || !info.dli_fname)
        return "unknown";
    const char *slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
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
                                         {"pairs", required_argument, 0, 'p'},
                                         {"mode", required_argument, 0, 'm'},
                                         {"latency", no_argument, 0, 'L'},
                                         {"pool-each", no_argument, 0, 'E'},
                                         {"fill-in-turn", no_argument, 0, 'F'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': trace = optarg; break;
        case 'r': rounds = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'n': threads_max = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'o': only = optarg; break;
        case 'p': pairs_per_thread = strtoul(optarg, NULL, 10); break;
        case 'm': only_mode = (int)strtol(optarg, NULL, 10) & 3; break;
        case 'L': latency = 1; break;
        case 'E': pool_each = 1; break;
        case 'F': fill_in_turn = 1; break;
        case 'l':
            if (!strcmp(optarg, "dense"))
                layout = ZS_LAYOUT_DENSE;
            else if (!strcmp(optarg, "kernel"))
                layout = ZS_LAYOUT_KERNEL;
            else
                die("--layout takes dense or kernel");
            break;
        default:
            die("usage: zshot --trace FILE [--rounds N] [--threads-max N] [--pairs N] [--mode M] "
                "[--layout dense|kernel] [--only FIGURE] [--latency] [--pool-each] [--fill-in-turn]");
        }
    }
    if (!trace)
        die("--trace FILE is needed");
    if (rounds < 1 || threads_max < 1 || pairs_per_thread < 1)
        die("--rounds, --threads-max and --pairs take a positive number");
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
    double load[1] = {-1};
    getloadavg(load, 1);
    printf("zshot: %zu objects (node trace), layout %s, %u rounds, %ld CPUs, load %.2f, malloc from %s\n", nsizes,
           layout == ZS_LAYOUT_DENSE ? "dense" : "kernel", rounds, ncpu, load[0], malloc_name());
    if (wanted("write+read") || wanted("pairs") || wanted("map"))
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
        printf("%-34s %10.1f %10.1f %7.2fx\n", "malloc+free pairs vs malloc+free", median(a, rounds), median(b, rounds),
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

    for (int mode = 0; wanted("threads") && mode < 4; mode++)
        if (only_mode < 0 || mode == only_mode)
            threads_table(threads_max, mode & 1, mode >> 1, a, b);
    free(a);
    free(b);
    free(q);
    free(hs);
    free(bufs);
    free(mring);
    free(sizes);
    return sink == 0x5A ? 0 : 0;
}
