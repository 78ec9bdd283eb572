/*
 * page_store: a small compressed page store on zsmalloc, the way zram uses it.
 *
 * Makes a few hundred 4 KiB pages of varied compressibility (zero-filled, repeated
 * patterns, text, numeric tables, half-random, random), compresses each with zlib and
 * keeps the result in a pool. As zram does, a page that does not compress below the
 * pool's huge class size is stored uncompressed: it would take a frame of its own
 * either way. Then it reads every page back, decompresses it, compares it byte for
 * byte with the original, frees half of the pages, compacts the pool, checks the
 * rest once more, and prints a short summary. Exits non-zero on any mismatch or error.
 *
 *   cc -std=c11 -O2 page_store.c -Iinclude -Ltarget/release -lzsmalloc -lz -o page_store
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "zsmalloc.h"

#define PAGE_SIZE 4096
#define NPAGES 384

struct entry {
    unsigned long handle; /* 0: not stored */
    size_t len;           /* bytes kept in the pool */
    int raw;              /* stored uncompressed */
};

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Page i, the same every time it is asked for. */
static void make_page(unsigned int i, unsigned char *page)
{
    static const char *words[] = {"page ", "frame ", "zspage ", "class ", "handle ", "the ", "of ",
                                  "compressed ", "memory ", "swap ", "object ", "free ", "\n"};
    uint64_t s = 0x5EED0000ull + i;
    size_t n = 0;
    switch (i % 6) {
    case 0: /* zero-filled */
        memset(page, 0, PAGE_SIZE);
        break;
    case 1: /* a short pattern, repeated */
        for (n = 0; n < PAGE_SIZE; n++)
            page[n] = (unsigned char)("abcdefgh01234567"[(n + i) % 16]);
        break;
    case 2: /* text */
        while (n < PAGE_SIZE) {
            const char *w = words[next_rand(&s) % (sizeof words / sizeof words[0])];
            for (size_t k = 0; w[k] && n < PAGE_SIZE; k++)
                page[n++] = (unsigned char)w[k];
        }
        break;
    case 3: /* a table of slowly growing 32-bit integers */
        for (uint32_t v = i * 1000; n + 4 <= PAGE_SIZE; n += 4) {
            v += (uint32_t)(next_rand(&s) % 16);
            memcpy(page + n, &v, 4);
        }
        break;
    case 4: /* half random, half zeros */
        memset(page, 0, PAGE_SIZE);
        for (n = 0; n < PAGE_SIZE / 2; n += 8) {
            uint64_t r = next_rand(&s);
            memcpy(page + n, &r, 8);
        }
        break;
    default: /* random: does not compress */
        for (n = 0; n < PAGE_SIZE; n += 8) {
            uint64_t r = next_rand(&s);
            memcpy(page + n, &r, 8);
        }
        break;
    }
}

/* Reads page i back from the pool and compares it with the original. */
static int check_page(struct zs_pool *pool, const struct entry *e, unsigned int i, unsigned long *in_place)
{
    unsigned char want[PAGE_SIZE], got[PAGE_SIZE], local[PAGE_SIZE];
    make_page(i, want);
    /* A pointer into the pool where the bytes are contiguous, else a copy in local. */
    const unsigned char *src = zs_obj_read_begin(pool, e->handle, e->len, local);
    if (!src) {
        perror("zs_obj_read_begin");
        return 0;
    }
    if (src != local)
        (*in_place)++;
    int ok;
    if (e->raw) {
        ok = memcmp(src, want, PAGE_SIZE) == 0;
    } else {
        uLongf out = PAGE_SIZE;
        ok = uncompress(got, &out, src, (uLong)e->len) == Z_OK && out == PAGE_SIZE &&
             memcmp(got, want, PAGE_SIZE) == 0;
    }
    zs_obj_read_end(pool, e->handle, e->len, (void *)src);
    if (!ok)
        fprintf(stderr, "page %u: mismatch\n", i);
    return ok;
}

static void footprint(struct zs_pool *pool, const struct entry *pages, const char *when)
{
    unsigned long n = 0, stored = 0, raw = 0;
    for (unsigned int i = 0; i < NPAGES; i++) {
        if (!pages[i].handle)
            continue;
        n++;
        stored += pages[i].len;
        raw += pages[i].raw;
    }
    unsigned long frames = zs_get_total_pages(pool);
    double frame_bytes = (double)frames * PAGE_SIZE;
    printf("%-18s %4lu pages (%lu stored raw): %7lu bytes in %4lu frames, density %5.1f%%, ratio %.2fx\n",
           when, n, raw, stored, frames, frame_bytes ? 100.0 * (double)stored / frame_bytes : 0.0,
           frame_bytes ? (double)n * PAGE_SIZE / frame_bytes : 0.0);
}

int main(void)
{
    struct zs_pool *pool = zs_create_pool("page_store");
    if (!pool) {
        perror("zs_create_pool");
        return 1;
    }
    /* Compressed sizes at or above this would take a whole frame anyway. */
    size_t huge = zs_huge_class_size(pool);
    static struct entry pages[NPAGES];
    unsigned char page[PAGE_SIZE];
    unsigned char comp[PAGE_SIZE * 2];
    int failed = 0;

    for (unsigned int i = 0; i < NPAGES; i++) {
        make_page(i, page);
        uLongf clen = sizeof comp;
        if (compress2(comp, &clen, page, PAGE_SIZE, Z_DEFAULT_COMPRESSION) != Z_OK) {
            fprintf(stderr, "page %u: compress2 failed\n", i);
            return 1;
        }
        struct entry *e = &pages[i];
        e->raw = clen >= huge;
        e->len = e->raw ? PAGE_SIZE : (size_t)clen;
        e->handle = zs_malloc(pool, e->len, 0);
        if (ZS_IS_ERR(e->handle)) {
            fprintf(stderr, "page %u: zs_malloc(%zu): %s\n", i, e->len, strerror(ZS_ERR(e->handle)));
            return 1;
        }
        zs_obj_write(pool, e->handle, e->raw ? page : comp, e->len);
    }
    footprint(pool, pages, "stored:");

    unsigned long in_place = 0, checked = 0;
    for (unsigned int i = 0; i < NPAGES; i++, checked++)
        failed |= !check_page(pool, &pages[i], i, &in_place);

    /* Free half of the pages (two of every four: every kind loses some), then check
     * the rest again. */
    for (unsigned int i = 0; i < NPAGES; i++) {
        if (i % 4 < 2) {
            zs_free(pool, pages[i].handle);
            pages[i].handle = 0;
        }
    }
    footprint(pool, pages, "after freeing half:");
    /* The freed objects left holes in their zspages: compaction packs the survivors
     * (their handles stay the same) and gives the emptied frames back. */
    unsigned long freed = zs_compact(pool);
    footprint(pool, pages, "after zs_compact:");
    printf("zs_compact freed %lu frames\n", freed);
    for (unsigned int i = 0; i < NPAGES; i++) {
        if (pages[i].handle) {
            failed |= !check_page(pool, &pages[i], i, &in_place);
            checked++;
        }
    }

    if (zs_pool_check(pool) != 0)
        failed = 1;
    printf("verified %lu page reads (%lu in place, %lu through the local copy): %s\n", checked, in_place,
           checked - in_place, failed ? "MISMATCH" : "all identical");
    for (unsigned int i = 0; i < NPAGES; i++)
        if (pages[i].handle)
            zs_free(pool, pages[i].handle);
    if (zs_get_total_pages(pool) != 0) {
        fprintf(stderr, "frames still held after freeing every page\n");
        failed = 1;
    }
    zs_destroy_pool(pool);
    return failed;
}
