/*
 * The public header on its own, compiled as C11 and as C++17 with every warning an
 * error (mk/c_tests.mk, header-compile). It is included twice (the include guard), every
 * declaration is taken with its exact type, and the program links against the library
 * and makes one call of each kind, so a C++ caller is shown unmangled names.
 */
#include "zsmalloc.h"
#include "zsmalloc.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    struct zs_pool *(*create)(const char *) = zs_create_pool;
    struct zs_pool *(*create_with)(const char *, const struct zs_pool_config *) = zs_create_pool_with;
    void (*destroy)(struct zs_pool *) = zs_destroy_pool;
    unsigned long (*alloc)(struct zs_pool *, size_t, unsigned int) = zs_malloc;
    void (*release)(struct zs_pool *, unsigned long) = zs_free;
    void *(*read_begin)(struct zs_pool *, unsigned long, size_t, void *) = zs_obj_read_begin;
    void (*read_end)(struct zs_pool *, unsigned long, size_t, void *) = zs_obj_read_end;
    void (*obj_write)(struct zs_pool *, unsigned long, const void *, size_t) = zs_obj_write;
    void *(*map)(struct zs_pool *, unsigned long, enum zs_mapmode) = zs_map_object;
    void (*unmap)(struct zs_pool *, unsigned long) = zs_unmap_object;
    unsigned long (*compact)(struct zs_pool *) = zs_compact;
    unsigned long (*total_pages)(struct zs_pool *) = zs_get_total_pages;
    size_t (*huge_class_size)(struct zs_pool *) = zs_huge_class_size;
    unsigned int (*lookup)(struct zs_pool *, unsigned int) = zs_lookup_class_index;
    void (*stats)(struct zs_pool *, struct zs_pool_stats *) = zs_pool_stats;
    int (*pool_info)(struct zs_pool *, struct zs_pool_info *) = zs_pool_info;
    int (*class_info)(struct zs_pool *, unsigned int, struct zs_class_info *) = zs_class_info;
    int (*check)(struct zs_pool *) = zs_pool_check;
    (void)create;

    struct zs_pool_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.max_pages = 64;
    cfg.chain_size = 0;
    cfg.layout = ZS_LAYOUT_KERNEL;
    struct zs_pool *pool = create_with("header", &cfg);
    if (!pool)
        return 1;
    int bad = 0;
    unsigned long h = alloc(pool, 100, ZS_ALLOC_NOGROW);
    bad |= !ZS_IS_ERR(h); /* a new pool has no room without growing */
    h = alloc(pool, 100, 0);
    bad |= ZS_IS_ERR(h);
    char msg[100] = "zsmalloc " ZSMALLOC_VERSION_STRING;
    char local[100];
    obj_write(pool, h, msg, sizeof msg);
    void *p = read_begin(pool, h, sizeof msg, local);
    bad |= p == NULL || memcmp(p, msg, sizeof msg) != 0;
    read_end(pool, h, sizeof msg, p);
    p = map(pool, h, ZS_MM_RO);
    bad |= p == NULL;
    unmap(pool, h);
    struct zs_pool_stats st;
    stats(pool, &st);
    struct zs_pool_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    bad |= pool_info(pool, &info) != 0 || info.live_objects != 1;
    struct zs_class_info ci;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    bad |= class_info(pool, lookup(pool, 100), &ci) != 0 || ci.zspages[ZS_NR_FULLNESS_GROUPS - 1] > 1;
    bad |= huge_class_size(pool) != 3625 || total_pages(pool) == 0;
    release(pool, h);
    bad |= compact(pool) != 0 || check(pool) != 0;
    destroy(pool);
    bad |= ZS_ERR((unsigned long)-12) != 12 || ZS_MAX_ALLOC_SIZE != 4096;
    bad |= ZS_MM_RW != 0 || ZS_MM_RO != 1 || ZS_MM_WO != 2 || ZS_LAYOUT_DENSE != 0;
    printf("header: zsmalloc %s (%d.%d.%d) %s\n", ZSMALLOC_VERSION_STRING, ZSMALLOC_VERSION_MAJOR,
           ZSMALLOC_VERSION_MINOR, ZSMALLOC_VERSION_PATCH, bad ? "FAILED" : "ok");
    return bad;
}
