/*
 * Built by `make test-install` against an installed copy of the library, with the
 * flags from `pkg-config --cflags --libs zsmalloc`: the quick start of the README.
 */
#include <stdio.h>
#include <string.h>
#include <zsmalloc.h>

int main(void)
{
    struct zs_pool *pool = zs_create_pool("quickstart");
    if (!pool)
        return 1;
    const char msg[] = "hello, zsmalloc";
    unsigned long h = zs_malloc(pool, sizeof msg, 0);
    if (ZS_IS_ERR(h))
        return 1;
    zs_obj_write(pool, h, msg, sizeof msg);

    char local[sizeof msg];
    const char *p = zs_obj_read_begin(pool, h, sizeof msg, local);
    int ok = p && strcmp(p, msg) == 0;
    zs_obj_read_end(pool, h, sizeof msg, (void *)p);

    printf("%s (zsmalloc %s, %lu frame)\n", ok ? msg : "MISMATCH", ZSMALLOC_VERSION_STRING, zs_get_total_pages(pool));
    zs_free(pool, h);
    zs_destroy_pool(pool);
    return !ok;
}
