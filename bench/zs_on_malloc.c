/*
 * libzs_on_malloc.so: the zs_* ABI of include/zsmalloc.h on plain malloc, so that the
 * benchmark harness runs the identical workload on the process's malloc (glibc's, or
 * jemalloc's or mimalloc's when one of those is preloaded too):
 *
 *   LD_PRELOAD=build/libzs_on_malloc.so build/zsbench --expect malloc ...
 *   LD_PRELOAD="build/libzs_on_malloc.so /usr/lib/x86_64-linux-gnu/libjemalloc.so.2" ...
 *
 * A handle is the object's pointer, with the requested size less one in its top 16 bits
 * (user addresses on x86-64 and AArch64 fit in 48 bits; sizes are 1..65536, the largest
 * max_object_size the ABI allows), so that zs_free can keep the
 * requested-byte count exact without adding a single byte to any malloc'd block.
 * Reads and maps return the pointer itself (malloc's objects are always contiguous);
 * zs_obj_write is a memcpy. Objects never move: zs_compact returns 0.
 *
 * Footprint. zs_pool_info and zs_get_total_pages report, as the frames held, the
 * growth of the process's anonymous resident set (/proc/self/statm: resident minus
 * shared) since the pool was created, in pages, and no separate metadata. That is
 * what the process really holds for the objects: malloc's headers and size-class
 * rounding, its own metadata, per-thread arenas and caches, and the pages that free()
 * keeps rather than giving back to the kernel, whichever malloc is active. It needs a
 * caller that allocates nothing else while the pool lives (the harness allocates
 * everything, threads included, before it creates the pool). The alternative,
 * glibc's mallinfo2(), sees only glibc's arenas (under jemalloc or mimalloc it would
 * describe an unused heap) and counts bytes in chunks rather than pages held.
 *
 * Not implemented, as malloc has no such thing: misuse detection (a stale handle is
 * undefined behaviour here, as in the kernel), class statistics (zs_class_info
 * refuses every index), ZS_ALLOC_NOGROW (accepted, ignored) and max_pages. Objects
 * still live at zs_destroy_pool are not tracked and leak: free them first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zsmalloc.h"

#define EXPORT __attribute__((visibility("default")))
#define SIZE_SHIFT 48
#define PTR_MASK ((1UL << SIZE_SHIFT) - 1)
#define COUNTER_SLOTS 64
#define MAX_OBJECT_LIMIT 65536

/* Live objects and requested bytes are counted per thread, each thread in its own
 * cache line (threads past COUNTER_SLOTS share), so that the accounting adds no
 * contention that malloc itself does not have; zs_pool_info adds them up. A free on
 * another thread than the malloc subtracts from its own slot: the sums stay exact. */
struct counter {
    _Alignas(64) atomic_long live;
    atomic_long requested;
};

struct zs_pool {
    struct counter counters[COUNTER_SLOTS];
    long rss_base;      /* anonymous resident pages before the pool was created */
    unsigned chain;     /* for zs_huge_class_size */
    unsigned max_object; /* max_object_size: zs_malloc refuses larger objects */
};

static atomic_uint next_slot;
static _Thread_local int my_slot = -1;

static struct counter *counter(struct zs_pool *pool)
{
    if (my_slot < 0)
        my_slot = (int)(atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed) % COUNTER_SLOTS);
    return &pool->counters[my_slot];
}

static long anon_rss_pages(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    long size, resident, shared;
    if (sscanf(buf, "%ld %ld %ld", &size, &resident, &shared) != 3)
        return 0;
    return resident - shared;
}

/* RSS growth since creation, in 4096-byte frames (0 if the process shrank). */
static unsigned long held_frames(const struct zs_pool *pool)
{
    long grown = anon_rss_pages() - pool->rss_base;
    if (grown <= 0)
        return 0;
    return (unsigned long)grown * (unsigned long)sysconf(_SC_PAGESIZE) / 4096;
}

static unsigned long err_handle(int e)
{
    errno = e;
    return (unsigned long)-(long)e;
}

static void *obj_ptr(unsigned long handle)
{
    return (void *)(uintptr_t)(handle & PTR_MASK);
}

static size_t obj_size(unsigned long handle)
{
    return (handle >> SIZE_SHIFT) + 1;
}

static int bad_handle(unsigned long handle)
{
    return handle == 0 || ZS_IS_ERR(handle);
}

EXPORT struct zs_pool *zs_create_pool_with(const char *name, const struct zs_pool_config *config)
{
    (void)name;
    unsigned chain = 0, max_object = 0;
    if (config) {
        if (config->size < sizeof(size_t) + sizeof(unsigned long) + sizeof(unsigned int)) {
            errno = EINVAL;
            return NULL;
        }
        chain = config->chain_size;
        if ((chain != 0 && (chain < 4 || chain > 16)) ||
            (config->size >= sizeof *config && config->layout != ZS_LAYOUT_DENSE &&
             config->layout != ZS_LAYOUT_KERNEL)) {
            errno = EINVAL;
            return NULL;
        }
        if (config->size >= offsetof(struct zs_pool_config, max_object_size) + sizeof config->max_object_size)
            max_object = config->max_object_size;
        if (max_object > MAX_OBJECT_LIMIT) {
            errno = EINVAL;
            return NULL;
        }
    }
    long base = anon_rss_pages();
    struct zs_pool *pool = aligned_alloc(64, sizeof *pool);
    if (!pool)
        return NULL;
    memset(pool, 0, sizeof *pool);
    pool->rss_base = base;
    pool->chain = chain ? chain : 8;
    pool->max_object = max_object ? max_object : ZS_MAX_ALLOC_SIZE;
    return pool;
}

EXPORT struct zs_pool *zs_create_pool(const char *name)
{
    return zs_create_pool_with(name, NULL);
}

EXPORT void zs_destroy_pool(struct zs_pool *pool)
{
    free(pool);
}

EXPORT unsigned long zs_malloc(struct zs_pool *pool, size_t size, unsigned int flags)
{
    if (!pool || size == 0 || (flags & ~(unsigned)ZS_ALLOC_NOGROW))
        return err_handle(EINVAL);
    if (size > pool->max_object)
        return err_handle(ENOSPC);
    void *p = malloc(size);
    if (!p)
        return err_handle(ENOMEM);
    if ((uintptr_t)p & ~PTR_MASK) {
        free(p);
        return err_handle(ENOMEM);
    }
    struct counter *c = counter(pool);
    atomic_fetch_add_explicit(&c->live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->requested, (long)size, memory_order_relaxed);
    return (unsigned long)(uintptr_t)p | ((unsigned long)(size - 1) << SIZE_SHIFT);
}

EXPORT void zs_free(struct zs_pool *pool, unsigned long handle)
{
    if (!pool) {
        errno = EINVAL;
        return;
    }
    if (bad_handle(handle))
        return;
    struct counter *c = counter(pool);
    atomic_fetch_sub_explicit(&c->live, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&c->requested, (long)obj_size(handle), memory_order_relaxed);
    free(obj_ptr(handle));
}

EXPORT void *zs_obj_read_begin(struct zs_pool *pool, unsigned long handle, size_t mem_len, void *local_copy)
{
    (void)local_copy;
    if (!pool || bad_handle(handle) || mem_len > obj_size(handle)) {
        errno = EINVAL;
        return NULL;
    }
    return obj_ptr(handle);
}

EXPORT void zs_obj_read_end(struct zs_pool *pool, unsigned long handle, size_t mem_len, void *handle_mem)
{
    (void)handle_mem;
    if (!pool || bad_handle(handle) || mem_len > obj_size(handle))
        errno = EINVAL;
}

EXPORT void zs_obj_write(struct zs_pool *pool, unsigned long handle, const void *handle_mem, size_t mem_len)
{
    if (!pool || bad_handle(handle) || mem_len > obj_size(handle) || (!handle_mem && mem_len)) {
        errno = EINVAL;
        return;
    }
    memcpy(obj_ptr(handle), handle_mem, mem_len);
}

EXPORT void *zs_map_object(struct zs_pool *pool, unsigned long handle, enum zs_mapmode mm)
{
    if (!pool || bad_handle(handle) || (unsigned)mm > ZS_MM_WO) {
        errno = EINVAL;
        return NULL;
    }
    return obj_ptr(handle);
}

EXPORT void zs_unmap_object(struct zs_pool *pool, unsigned long handle)
{
    if (!pool || bad_handle(handle))
        errno = EINVAL;
}

EXPORT unsigned long zs_compact(struct zs_pool *pool)
{
    if (!pool)
        errno = EINVAL;
    return 0;
}

EXPORT unsigned long zs_get_total_pages(struct zs_pool *pool)
{
    if (!pool) {
        errno = EINVAL;
        return 0;
    }
    return held_frames(pool);
}

/* The kernel's value for the pool's chain limit (its class arithmetic: 16-byte
 * classes from 32, the chain length with the least tail waste), so that a size sweep
 * covers the same sizes as on the library's kernel layout. */
EXPORT size_t zs_huge_class_size(struct zs_pool *pool)
{
    if (!pool) {
        errno = EINVAL;
        return 0;
    }
    size_t huge = 0;
    for (size_t size = 32; size < 4096; size += 16) {
        unsigned best_k = 1;
        size_t best_waste = 4096 % size;
        for (unsigned k = 1; k <= pool->chain; k++)
            if ((k * 4096) % size < best_waste) {
                best_waste = (k * 4096) % size;
                best_k = k;
            }
        if ((size & (size - 1)) == 0)
            best_k = 1;
        if (best_k != 1 && best_k * 4096 / size != 1)
            huge = size;
    }
    return huge ? huge - 7 : 4096;
}

/* The kernel layout's (unmerged) class index: malloc's own classes are not visible. */
EXPORT unsigned int zs_lookup_class_index(struct zs_pool *pool, unsigned int size)
{
    if (!pool || size == 0 || size > pool->max_object) {
        errno = EINVAL;
        return (unsigned)-1;
    }
    size += 8;
    unsigned idx = size <= 32 ? 0 : (size - 32 + 15) / 16;
    return idx > 254 ? 254 : idx;
}

EXPORT void zs_pool_stats(struct zs_pool *pool, struct zs_pool_stats *stats)
{
    if (!pool || !stats) {
        errno = EINVAL;
        return;
    }
    stats->pages_compacted = 0;
}

EXPORT int zs_pool_info(struct zs_pool *pool, struct zs_pool_info *info)
{
    if (!pool || !info || info->size < sizeof info->size) {
        errno = EINVAL;
        return -EINVAL;
    }
    struct zs_pool_info out = {0};
    long live = 0, requested = 0;
    for (int i = 0; i < COUNTER_SLOTS; i++) {
        live += atomic_load_explicit(&pool->counters[i].live, memory_order_relaxed);
        requested += atomic_load_explicit(&pool->counters[i].requested, memory_order_relaxed);
    }
    out.live_objects = (unsigned long)live;
    out.requested_bytes = (unsigned long)requested;
    out.total_pages = held_frames(pool);
    out.max_object_size = pool->max_object;
    out.frame_size = 4096; /* held_frames counts the resident set in 4096-byte units */
    size_t n = info->size < sizeof out ? info->size : sizeof out;
    out.size = info->size;
    memcpy(info, &out, n);
    return 0;
}

EXPORT int zs_class_info(struct zs_pool *pool, unsigned int index, struct zs_class_info *info)
{
    (void)index;
    (void)info;
    (void)pool;
    errno = EINVAL;
    return -EINVAL;
}

EXPORT int zs_pool_check(struct zs_pool *pool)
{
    if (!pool) {
        errno = EINVAL;
        return -EINVAL;
    }
    return 0;
}
