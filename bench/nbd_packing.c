/* How tightly a pool packs the nbdkit plugin's zstd objects, without nbdkit: the
 * figures of docs/nbdkit.md, "The zstd RSS after the fill". Each unit of an image is
 * compressed as the plugin does (zstd at a level, no content size, below one unit;
 * units of one repeated 8-byte word skipped, as the plugin stores no object for them,
 * and units that do not compress stored whole), and the objects are allocated, in the
 * image's order, from a pool of the unit as its largest object, by THREADS threads
 * taking every THREADS-th unit (the plugin's pool has a lane per CPU). With `split`,
 * a compressed unit of 1024 bytes or more takes two objects as the plugin's split=
 * does: the last 1/TAIL of its bytes, then the rest with the 8-byte link (TAIL 16,
 * the plugin's SPLIT_TAIL, unless given; 2 splits in halves).
 *
 *   cc -O2 -Iinclude -o build/nbd_packing bench/nbd_packing.c -Ltarget/release -lzsmalloc \
 *      -lzstd -pthread -Wl,-rpath,$PWD/target/release
 *   build/nbd_packing IMAGE [UNIT [LEVEL [THREADS [split|whole [LIMIT [TAIL]]]]]]
 *
 * (the image: nbd_fill.py's, /tmp/nbd-fill/image-736-500.ext4; LIMIT: the pool's
 * max_object_size, the unit by default, larger for 17-frame zspages) */

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zsmalloc.h>
#include <zstd.h>

#define SPLIT_MIN 1024 /* the plugin's */
#define SPLIT_TAIL 16  /* the plugin's */

static size_t *sizes; /* two a unit: the objects, in the order allocated; 0: none */
static size_t nsizes;
static struct zs_pool *pool;
static unsigned nthreads;

static void *
allocate (void *arg)
{
  size_t t = (size_t) arg;
  for (size_t i = 2 * t; i < nsizes; i += 2 * nthreads) {
    for (size_t k = i; k < i + 2 && sizes[k]; k++) {
      unsigned long h = zs_malloc (pool, sizes[k], 0);
      if (ZS_IS_ERR (h)) {
        fprintf (stderr, "zs_malloc(%zu) failed: %d\n", sizes[k], ZS_ERR (h));
        exit (1);
      }
    }
  }
  return NULL;
}


int
main (int argc, char **argv)
{
  if (argc < 2) {
    fprintf (stderr, "usage: %s IMAGE [UNIT [LEVEL [THREADS [split|whole [LIMIT [TAIL]]]]]]\n", argv[0]);
    return 2;
  }
  size_t unit = argc > 2 ? strtoul (argv[2], NULL, 0) : 32768;
  int level = argc > 3 ? atoi (argv[3]) : 3;
  nthreads = argc > 4 ? (unsigned) atoi (argv[4]) : 2;
  int split = argc > 5 ? strcmp (argv[5], "split") == 0 : 1;
  size_t limit = argc > 6 ? strtoul (argv[6], NULL, 0) : unit;
  size_t tail = argc > 7 ? strtoul (argv[7], NULL, 0) : SPLIT_TAIL;
  if (unit < 4096 || nthreads < 1 || nthreads > 64 || limit < unit || tail < 2 || tail > 128) {
    fprintf (stderr, "bad arguments\n");
    return 2;
  }
  int fd = open (argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) != 0) {
    perror (argv[1]);
    return 1;
  }
  const unsigned char *img = mmap (NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (img == MAP_FAILED) {
    perror ("mmap");
    return 1;
  }
  size_t nunits = st.st_size / unit;
  sizes = calloc (2 * nunits, sizeof *sizes);
  unsigned char *dst = malloc (unit);
  ZSTD_CCtx *cctx = ZSTD_createCCtx ();
  if (!sizes || !dst || !cctx)
    return 1;
  ZSTD_CCtx_setParameter (cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter (cctx, ZSTD_c_contentSizeFlag, 0);
  for (size_t u = 0; u < nunits; u++) {
    const unsigned char *src = img + u * unit;
    size_t j = 8;
    while (j < unit && memcmp (src + j, src, 8) == 0)
      j += 8;
    if (j >= unit)
      continue;
    size_t n = ZSTD_compress2 (cctx, dst, unit - 1, src, unit);
    if (ZSTD_isError (n))
      n = unit;
    /* As the plugin stores them: the second part first, then the first with the link. */
    int two = split && n < unit && n >= SPLIT_MIN;
    sizes[nsizes++] = two ? n / tail : n;
    sizes[nsizes++] = two ? n - n / tail + 8 : 0;
  }
  struct zs_pool_config cfg;
  memset (&cfg, 0, sizeof cfg);
  cfg.size = sizeof cfg;
  cfg.max_object_size = limit;
  pool = zs_create_pool_with ("nbd-packing", &cfg);
  if (!pool) {
    perror ("zs_create_pool_with");
    return 1;
  }
  pthread_t th[64];
  for (size_t t = 0; t < nthreads; t++)
    pthread_create (&th[t], NULL, allocate, (void *) t);
  for (size_t t = 0; t < nthreads; t++)
    pthread_join (th[t], NULL);
  struct zs_pool_info info;
  memset (&info, 0, sizeof info);
  info.size = sizeof info;
  zs_pool_info (pool, &info);
  double frames = (double) info.total_pages * (double) sysconf (_SC_PAGESIZE);
  printf ("objects %lu, %.2f MiB in %.2f MiB of frames (%.2f%% unused), metadata %.2f MiB\n",
          info.live_objects, info.requested_bytes / 1048576.0, frames / 1048576.0,
          100.0 * (frames - (double) info.requested_bytes) / frames, info.meta_bytes / 1048576.0);
  return 0;
}
