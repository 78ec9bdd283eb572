/*
 * nbdkit-zsmalloc-plugin: a compressed RAM disk served from a zsmalloc pool, in the
 * manner of the kernel's zram.
 *
 * The disk is cut into units (4 KiB by default, a page as in zram; 32 KiB with zstd,
 * see ZSTD_UNIT). Each unit is one entry of a table: a kind and a 64-bit value.
 *
 *   EMPTY  never written, trimmed or zeroed whole: reads as zeros, holds nothing
 *   ZERO   written with zeros: zram's same-filled page of word 0, holds nothing
 *   FILL   written with one repeated 8-byte word (the value): holds nothing
 *   COMP   the unit compressed, in a pool object (the value is its handle); the
 *          object's size is the compressed length (zs_obj_size)
 *   RAW    the unit as it was, in an object of exactly one unit: it did not
 *          compress below the raw threshold (zram's huge pages)
 *   SPLIT  the unit compressed, in two pool objects: the first 15/16 of its
 *          compressed bytes and the last 1/16 (units over 4 KiB, see SPLIT_MIN):
 *          the value is the first object's handle, whose last 8 bytes are the
 *          second's handle
 *
 * Concurrency. nbdkit calls in parallel from every connection's threads; there is no
 * global lock. Units map onto nstripes stripes (unit index modulo nstripes), and each
 * stripe has two locks:
 *   - `swap`, a reader-writer lock: readers hold it shared while they read an entry
 *     and the object it names; a writer holds it exclusively only to swap an entry.
 *     So a reader sees a unit's old or new contents, never a mix, and an object is
 *     never freed while a reader uses it: the writer frees the old object after the
 *     swap, when no reader can reach it any more.
 *   - `write`, a mutex held by a writer from reading a unit's old contents to the
 *     swap, so two writes of one unit (a partial one merging with the old contents
 *     in particular) are applied one after the other and neither is lost. Readers
 *     never take it, so they do not wait for a writer's compression.
 * Lock order: a compressor context (see struct ctx), then `write`, then `swap`.
 * Compression and pool allocation of a whole-unit write happen before either stripe
 * lock is taken.
 *
 * Statistics follow zram's mm_stat (Documentation/admin-guide/blockdev/zram.rst).
 * They are kept per stripe, changed under the stripe's locks and read without them
 * (relaxed atomics: each figure is exact, a set of them is not a snapshot).
 */

#define NBDKIT_API_VERSION 2
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
/* ZSTD_c_format and ZSTD_d_format, to store frames without zstd's magic number. */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#include <nbdkit-plugin.h>
#include <zsmalloc.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Stripes of locks. Units are spread over them in turn, so a request over several
 * units and requests on neighbouring units take different locks. A thread holds a
 * stripe's lock while it holds a compressor context (but for a whole-unit write's
 * short exchange), so no more threads than contexts (twice the CPUs) hold them at
 * once: STRIPES_PER_CTX stripes a context keep two of them apart with high
 * probability (4 contexts on 256 stripes: 2%), at 128 bytes a stripe, and nbdkit's
 * threads (16 per connection) wait for a context before they can meet on a stripe.
 * At most MAX_STRIPES (128 KiB), from 8 CPUs on. */
#define STRIPES_PER_CTX 64
#define MAX_STRIPES 1024

/* Smallest unit: a page, zram's unit, and lz4's default. */
#define MIN_UNIT 4096u

/* zstd's default unit. zstd finds more to share in a larger unit (on an ext4 image of
 * real files, level 3: ratio 2.46 at 4 KiB, 2.73 at 32 KiB, 2.78 at 64 KiB), and a
 * unit's compression has a fixed cost that larger units spread: copies run about half
 * as fast again. 32 KiB is where the ratio stops gaining much; 64 KiB units double the
 * read-modify-write of small random writes for under 1% of memory, as the pool
 * packs objects of up to 64 KiB less tightly than those of up to 32 KiB. */
#define ZSTD_UNIT 32768u

/* lz4's default acceleration (level=). zram passes lz4 its default, 1; here a copy
 * into the disk is bound by lz4's compression (half the server's CPU or more). On the
 * benchmark's image of real files (docs/nbdkit.md), lz4 runs 27% fewer instructions
 * at 6 than at 1 and 8% fewer than at 4, for 15% more bytes stored than at 1 (336
 * against 291 MiB of objects, 5% more than at 4): the disk takes 62% of the memory of
 * an uncompressed one. At 8 it would take 64% (358 against 561 MiB of RSS), at the
 * edge of the 65% it is held to. level=1 gives zram's choice back. */
#define LZ4_ACCELERATION 6

/* The frame of a pool of units over a page, up to 32 KiB (zstd's default among them),
 * where the machine's page is smaller. The pool keeps a word of metadata a frame (its
 * side table) and packs objects into zspages of 64 KiB whatever the frame: 16 KiB
 * frames take a quarter of the side table of 4 KiB ones (0.3 MiB less for the
 * benchmark's image in 32 KiB zstd units, docs/nbdkit.md) for the same packing. A
 * zspage is freed whole, so compaction frees as much. 64 KiB units keep the page: the
 * pool gives an object of over 60 KiB a zspage of 17 frames of 4 KiB, which a larger
 * frame cannot cut as finely. */
#define LARGE_UNIT_FRAME 16384u

/* What auto-compaction waits for by default: 1 MiB that compaction could free in a
 * class, in frames. */
#define AUTO_COMPACT_BYTES (1u << 20)

/* liblz4's name to dlopen: the plugin opens it for lz4 disks only (load_lz4). */
#ifndef LZ4_SONAME
#define LZ4_SONAME "liblz4.so.1"
#endif

enum compressor { COMP_LZ4, COMP_ZSTD, COMP_NONE };
static const char *const compressor_names[] = { "lz4", "zstd", "none" };

enum kind { K_EMPTY = 0, K_ZERO, K_FILL, K_COMP, K_RAW, K_SPLIT };

/* Compressed units over 4 KiB of at least this length are stored as two objects
 * (split=, on by default for such units). A zspage of the pool's dense layout holds
 * objects end to end and none across its end: objects of up to 32 KiB leave about 1%
 * of the frames' bytes in tails that no object arriving later is small enough to
 * fill. A small piece of each unit fills them: the second object takes the last
 * 1/SPLIT_TAIL of the compressed bytes (64 bytes to 2 KiB), the first the rest, and
 * the benchmark's image leaves 0.11% of its frames unused, where halves of up to 16
 * KiB left 0.50% (docs/nbdkit.md, "The zstd RSS after the fill"). Below SPLIT_MIN a
 * second handle and its 8 bytes gain nothing. */
#define SPLIT_MIN 1024u
#define SPLIT_TAIL 16u

/* ---- configuration ------------------------------------------------------------------ */

static int64_t disk_size = -1;
static enum compressor compressor = COMP_LZ4;
static int level;
static bool level_set;
static uint32_t unit;                  /* 0 until set: the compressor's default */
static uint64_t mem_limit;             /* bytes; 0: no limit */
static enum zs_layout layout = ZS_LAYOUT_DENSE;
static unsigned int chain;             /* 0: the layout's default */
static int split = -1;                 /* split=: -1 until set, then 0 or 1 */
static uint32_t frame;                 /* bytes of the pool's frames; 0 until set: the default */
/* The pool's automatic compaction (see README): on by default, so that trimmed and
 * rewritten space goes back to the system without the client having to flush. */
static unsigned long ac_pages;         /* frames; set with the frame: 1 MiB of them */
static bool ac_pages_set;
static unsigned long ac_rate;          /* frames per second; 0: no bound */
static unsigned int ac_interval = 1000;
static char *stats_path;

/* Fault injection for the tests: `-D zsmalloc.fail_compress=N` makes the next N
 * compressions fail as a broken compressor would. */
NBDKIT_DLL_PUBLIC int zsmalloc_debug_fail_compress;

/* ---- state ---------------------------------------------------------------------------- */

/* liblz4's functions, from load_lz4. A disk of another compressor does not load the
 * library: its pages (80 KiB resident, its text mapped around its constructor's
 * call) would be held for nothing. Their types are lz4.h's. */
static struct {
  __typeof__ (LZ4_sizeofState) *sizeofState;
  __typeof__ (LZ4_compress_fast_extState) *compress_fast_extState;
  __typeof__ (LZ4_decompress_safe) *decompress_safe;
  __typeof__ (LZ4_versionString) *versionString;
} lz4;

/* Opens liblz4 and finds its functions; -1 (reported) if it cannot. */
static int
load_lz4 (void)
{
  if (lz4.versionString)
    return 0;
  void *h = dlopen (LZ4_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    nbdkit_error ("compressor=lz4: %s", dlerror ());
    return -1;
  }
  if (!(lz4.sizeofState = (__typeof__ (lz4.sizeofState)) dlsym (h, "LZ4_sizeofState")) ||
      !(lz4.compress_fast_extState =
            (__typeof__ (lz4.compress_fast_extState)) dlsym (h, "LZ4_compress_fast_extState")) ||
      !(lz4.decompress_safe = (__typeof__ (lz4.decompress_safe)) dlsym (h, "LZ4_decompress_safe")) ||
      !(lz4.versionString = (__typeof__ (lz4.versionString)) dlsym (h, "LZ4_versionString"))) {
    nbdkit_error ("compressor=lz4: %s: %s", LZ4_SONAME, dlerror ());
    memset (&lz4, 0, sizeof lz4);
    dlclose (h);
    return -1;
  }
  /* Kept open: the functions are called until the plugin is unloaded. */
  return 0;
}

static struct zs_pool *pool;
static long page_size;
static uint64_t nunits;
static uint64_t *values;               /* per unit: the handle (COMP, RAW) or the word (FILL) */
static unsigned char *kinds;           /* per unit: enum kind, accessed atomically (extents) */
static size_t table_bytes;
/* A compressed unit is stored raw from this length on: where compression would save
 * nothing (the unit's size), or for one-page units where the pool would give the
 * object a frame to itself anyway (its huge class size, zram's rule). */
static uint32_t raw_at;
static unsigned long mem_used_max_pages;

struct stripe {
  pthread_mutex_t write;
  pthread_rwlock_t swap;
  /* Units of the stripe stored (not EMPTY), same-filled (ZERO, FILL), stored raw. */
  uint64_t stored, same, huge;
} __attribute__ ((aligned (64)));

static struct stripe *stripes;
static size_t nstripes;                /* a power of two */

static struct stripe *
stripe_of (uint64_t u)
{
  return &stripes[u & (nstripes - 1)];
}

/* Bytes of unit `u` inside the disk (the last unit may be cut short). */
static uint32_t
unit_len (uint64_t u)
{
  uint64_t left = (uint64_t) disk_size - u * unit;
  return left < unit ? (uint32_t) left : unit;
}

/* ---- compressor contexts and buffers ------------------------------------------------ */

/* What encoding and decoding a unit needs. A few are shared by all threads, each
 * taken for one unit at a time: nbdkit runs 16 threads per connection, and a zstd
 * context per thread (with its decompression context, about 180 KiB for 4 KiB units
 * and 620 KiB for 32 KiB ones) would cost more memory than many disks' metadata.
 * Twice as many as CPUs, so that a thread preempted while holding one rarely makes
 * another wait. Taken before any stripe lock, never while holding one. */
struct ctx {
  pthread_mutex_t lock;
  bool ready;            /* the members below are allocated */
  unsigned char *ubuf;   /* one unit: a partial unit merged, or decoded for a read */
  unsigned char *cbuf;   /* compressed output, below raw_at bytes */
  unsigned char *lbuf;   /* zs_obj_read_begin's local copy: one unit */
  void *lz4;             /* LZ4_compress_fast_extState's state */
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
} __attribute__ ((aligned (64)));

static struct ctx *ctxs;
static unsigned int nctxs;
/* Where this thread found a free context last time: it usually is free again. */
static __thread unsigned int ctx_hint;

static void
ctx_free (struct ctx *c)
{
  free (c->ubuf);
  c->ubuf = NULL;
  free (c->lz4);
  c->lz4 = NULL;
  ZSTD_freeCCtx (c->cctx);
  ZSTD_freeDCtx (c->dctx);
  c->cctx = NULL;
  c->dctx = NULL;
  c->ready = false;
}

/* Allocates a context's members on its first use; false (ENOMEM) if they cannot be. */
static bool
ctx_prepare (struct ctx *c)
{
  if (c->ready)
    return true;
  c->ubuf = malloc (3 * (size_t) unit);
  if (!c->ubuf)
    goto fail;
  c->cbuf = c->ubuf + unit;
  c->lbuf = c->cbuf + unit;
  if (compressor == COMP_LZ4 && !(c->lz4 = malloc ((size_t) lz4.sizeofState ())))
    goto fail;
  if (compressor == COMP_ZSTD) {
    c->cctx = ZSTD_createCCtx ();
    c->dctx = ZSTD_createDCtx ();
    if (!c->cctx || !c->dctx)
      goto fail;
    /* The unit's length is known to the reader: the frame need not carry it. Nor
     * its magic number: every frame of the disk is read by this process, by a
     * context set up here, so the 4 bytes of each unit tell nothing (a frame's
     * header is then 2 bytes: its descriptor and the window's). */
    if (ZSTD_isError (ZSTD_CCtx_setParameter (c->cctx, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError (ZSTD_CCtx_setParameter (c->cctx, ZSTD_c_contentSizeFlag, 0)) ||
        ZSTD_isError (ZSTD_CCtx_setParameter (c->cctx, ZSTD_c_format, ZSTD_f_zstd1_magicless)) ||
        ZSTD_isError (ZSTD_DCtx_setParameter (c->dctx, ZSTD_d_format, ZSTD_f_zstd1_magicless)))
      goto fail;
  }
  c->ready = true;
  return true;
fail:
  ctx_free (c);
  return false;
}

/* A context, locked; NULL (ENOMEM) if its buffers cannot be allocated. */
static struct ctx *
ctx_get (void)
{
  unsigned int first = ctx_hint % nctxs;
  struct ctx *c = NULL;
  for (unsigned int i = 0; i < nctxs && !c; i++) {
    unsigned int k = (first + i) % nctxs;
    if (pthread_mutex_trylock (&ctxs[k].lock) == 0) {
      c = &ctxs[k];
      ctx_hint = k;
    }
  }
  if (!c) {
    c = &ctxs[first];
    pthread_mutex_lock (&c->lock);
  }
  if (!ctx_prepare (c)) {
    pthread_mutex_unlock (&c->lock);
    return NULL;
  }
  return c;
}

static void
ctx_put (struct ctx *c)
{
  pthread_mutex_unlock (&c->lock);
}

/* Frees the members of every context not in use; the next request that takes one
 * allocates them again. A zstd context for a 32 KiB unit at level 3 holds half a MiB
 * of tables, and there are twice as many as CPUs: as much as the pool's own
 * metadata, for nothing while the disk is idle. */
static void
ctx_release_idle (void)
{
  for (unsigned int i = 0; i < nctxs; i++) {
    if (pthread_mutex_trylock (&ctxs[i].lock) == 0) {
      ctx_free (&ctxs[i]);
      pthread_mutex_unlock (&ctxs[i].lock);
    }
  }
}

/* Frames the pool could free by compaction now, over its classes (whole zspages'
 * worth of free places in each). */
static unsigned long
pool_freeable (void)
{
  unsigned long freeable = 0;
  struct zs_class_info info;
  for (unsigned int i = 0;; i++) {
    memset (&info, 0, sizeof info);
    info.size = sizeof info;
    if (zs_class_info (pool, i, &info) != 0)
      break;
    freeable += info.pages_freeable;
  }
  return freeable;
}

/* Gives back, at most once per second, the memory that idle contexts and malloc's
 * arenas hold (see disk_flush): rebuilding a zstd context costs a few hundred
 * microseconds, which a client flushing after every write would pay each time.
 * `compacted` says whether the flush's compaction freed anything. */
static void
release_idle_memory (bool compacted)
{
  static uint64_t last_s;    /* seconds of CLOCK_MONOTONIC at the last release, + 1 */
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t) ts.tv_sec + 1;
  uint64_t last = __atomic_load_n (&last_s, __ATOMIC_RELAXED);
  /* Relaxed: the word only elects one flush per second to do the work; the work
   * itself takes each context's lock, and malloc_trim malloc's. */
  if (last == now ||
      !__atomic_compare_exchange_n (&last_s, &last, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    return;
  /* zs_compact returns at once, having done nothing, while another compaction runs:
   * the pool's background one, which is likely at work after the trims that a flush
   * often follows, and compacts only the classes over its threshold. Where the pool
   * still has frames to free, zs_defragment waits for that compaction to end (and
   * then brings the arena's top down into the free frames below), and compacting
   * again covers every class. */
  if (!compacted && pool_freeable () > 0) {
    long moved = zs_defragment (pool);
    unsigned long freed = zs_compact (pool);
    nbdkit_debug ("flush: after the running compaction, %ld frames moved down, %lu freed",
                  moved, freed);
  }
  ctx_release_idle ();
  malloc_trim (0);
  nbdkit_debug ("flush: idle contexts and malloc's free memory released");
}

/* ---- encoding and decoding one unit ------------------------------------------------- */

/* Whether the unit is one 8-byte word repeated (zram's same-filled page); the word. */
static bool
same_filled (const unsigned char *p, uint64_t *word)
{
  uint64_t w, v;
  memcpy (&w, p, 8);
  /* The last word first: a unit that differs usually differs there already. */
  memcpy (&v, p + unit - 8, 8);
  if (v != w)
    return false;
  for (uint32_t i = 8; i < unit - 8; i += 8) {
    memcpy (&v, p + i, 8);
    if (v != w)
      return false;
  }
  *word = w;
  return true;
}

/* Writes bytes [off, off + len) of a unit filled with `word`. */
static void
fill_range (unsigned char *dst, uint64_t word, uint32_t off, uint32_t len)
{
  unsigned char b[8];
  memcpy (b, &word, 8);
  if (word == 0 || memcmp (b, b + 1, 7) == 0) {
    memset (dst, b[0], len);
    return;
  }
  uint32_t k = 0;
  for (; k < len && ((off + k) & 7); k++)
    dst[k] = b[(off + k) & 7];
  for (; k + 8 <= len; k += 8)
    memcpy (dst + k, b, 8);
  for (; k < len; k++)
    dst[k] = b[(off + k) & 7];
}

/* Compresses one unit into c->cbuf: the compressed length, 0 where it does not fit
 * below raw_at (the unit is stored raw), -1 when the compressor fails. */
static long
compress_unit (struct ctx *c, const unsigned char *src)
{
  int inject = __atomic_load_n (&zsmalloc_debug_fail_compress, __ATOMIC_RELAXED);
  while (inject > 0) {
    if (__atomic_compare_exchange_n (&zsmalloc_debug_fail_compress, &inject, inject - 1, false,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return -1;
  }
  switch (compressor) {
  case COMP_NONE:
    return 0;
  case COMP_LZ4: {
    /* Each unit an independent block. The one-shot call clears its 16 KiB state
     * (about 100 ns) but, for a unit under 64 KiB, indexes it with 16-bit positions
     * and no dictionary checks; a stream reset with LZ4_resetStream_fast and
     * LZ4_compress_fast_continue skips the clearing but takes the streaming path,
     * 32-bit positions and a check of every candidate against the prefix: a quarter
     * to a half slower on 4 KiB units of real files. */
    int n = lz4.compress_fast_extState (c->lz4, (const char *) src, (char *) c->cbuf, (int) unit,
                                        (int) raw_at - 1, level);
    /* lz4 fails only by running out of room: then the unit is stored raw. */
    return n > 0 ? n : 0;
  }
  case COMP_ZSTD: {
    size_t n = ZSTD_compress2 (c->cctx, c->cbuf, raw_at - 1, src, unit);
    if (!ZSTD_isError (n))
      return (long) n;
    if (ZSTD_getErrorCode (n) == ZSTD_error_dstSize_tooSmall)
      return 0;
    nbdkit_debug ("zstd compression failed: %s", ZSTD_getErrorName (n));
    return -1;
  }
  }
  return -1;
}

/* Decompresses `n` bytes into a whole unit at dst; 0, or -1 on corrupt input. */
static int
decompress_unit (struct ctx *c, const void *src, size_t n, unsigned char *dst)
{
  switch (compressor) {
  case COMP_LZ4:
    return lz4.decompress_safe (src, (char *) dst, (int) n, (int) unit) == (int) unit ? 0 : -1;
  case COMP_ZSTD:
    return ZSTD_decompressDCtx (c->dctx, dst, unit, src, n) == unit ? 0 : -1;
  case COMP_NONE:
    break;
  }
  return -1;
}

struct entry {
  enum kind kind;
  uint64_t value;
};

/* Records the pool's size after a store, for mem_used_max. */
static void
note_mem_used (void)
{
  unsigned long now = zs_get_total_pages (pool);
  unsigned long max = __atomic_load_n (&mem_used_max_pages, __ATOMIC_RELAXED);
  while (now > max &&
         !__atomic_compare_exchange_n (&mem_used_max_pages, &max, now, true,
                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    ;
}

/* An object of `len` bytes holding `data`: its handle, or 0 with *err set (ENOSPC when
 * the pool is full, EIO for anything else). */
static unsigned long
store_object (const void *data, size_t len, int *err)
{
  unsigned long h = zs_malloc (pool, len, 0);
  if (ZS_IS_ERR (h) && ZS_ERR (h) == ENOMEM && zs_compact (pool) > 0)
    /* At the page limit, compaction may have made room. */
    h = zs_malloc (pool, len, 0);
  if (ZS_IS_ERR (h)) {
    *err = ZS_ERR (h) == ENOMEM ? ENOSPC : EIO;
    if (*err == EIO)
      nbdkit_debug ("zs_malloc(%zu): %s", len, strerror (ZS_ERR (h)));
    return 0;
  }
  errno = 0;
  zs_obj_write (pool, h, data, len);
  if (errno != 0) {
    nbdkit_debug ("zs_obj_write: %m");
    zs_free (pool, h);
    *err = EIO;
    return 0;
  }
  return h;
}

/* A compressed unit of `n` bytes (at least SPLIT_MIN) in `buf` as two objects: the
 * second (its last n / SPLIT_TAIL bytes, at least 64) first, then the first part
 * followed by the second's handle, written over the second's first 8 bytes in `buf`.
 * The first's handle, or 0 with *err set as store_object does. */
static unsigned long
store_split (unsigned char *buf, size_t n, int *err)
{
  size_t first = n - n / SPLIT_TAIL;
  unsigned long second = store_object (buf + first, n - first, err);
  if (!second)
    return 0;
  /* The handle goes over the second part's first bytes, already stored. */
  uint64_t link = second;
  memcpy (buf + first, &link, 8);
  unsigned long h = store_object (buf, first + 8, err);
  if (!h)
    zs_free (pool, second);
  return h;
}

/* Copies an object of `n` bytes into `dst`. 0, or -1 (debug message given). */
static int
copy_object (struct ctx *c, unsigned long h, size_t n, unsigned char *dst)
{
  const void *p = n ? zs_obj_read_begin (pool, h, n, c->lbuf) : NULL;
  if (!p) {
    nbdkit_debug ("reading a split unit: %m");
    return -1;
  }
  memcpy (dst, p, n);
  zs_obj_read_end (pool, h, n, (void *) p);
  return 0;
}

/* Encodes one whole unit: a same-filled word, or a new object. 0, or an errno. */
static int
encode (struct ctx *c, const unsigned char *src, struct entry *e)
{
  uint64_t word;
  if (same_filled (src, &word)) {
    e->kind = word == 0 ? K_ZERO : K_FILL;
    e->value = word;
    return 0;
  }
  long n = compress_unit (c, src);
  if (n < 0)
    return EIO;
  int err = 0;
  if (n > 0 && split && (size_t) n >= SPLIT_MIN) {
    e->kind = K_SPLIT;
    e->value = store_split (c->cbuf, (size_t) n, &err);
  } else if (n > 0) {
    e->kind = K_COMP;
    e->value = store_object (c->cbuf, (size_t) n, &err);
  } else {
    e->kind = K_RAW;
    e->value = store_object (src, unit, &err);
  }
  return err;
}

/* Decodes bytes [off, off + len) of a unit into dst. Caller holds the unit's stripe
 * (`swap` shared, or `write`), which keeps its object alive. 0, or an errno. */
static int
decode_range (struct ctx *c, struct entry e, unsigned char *dst, uint32_t off, uint32_t len)
{
  switch (e.kind) {
  case K_EMPTY:
  case K_ZERO:
    memset (dst, 0, len);
    return 0;
  case K_FILL:
    fill_range (dst, e.value, off, len);
    return 0;
  case K_RAW: {
    const unsigned char *p = zs_obj_read_begin (pool, e.value, off + len, c->lbuf);
    if (!p) {
      nbdkit_debug ("zs_obj_read_begin: %m");
      return EIO;
    }
    memcpy (dst, p + off, len);
    zs_obj_read_end (pool, e.value, off + len, (void *) p);
    return 0;
  }
  case K_COMP: {
    size_t n = zs_obj_size (pool, e.value);
    const void *p = n ? zs_obj_read_begin (pool, e.value, n, c->lbuf) : NULL;
    if (!p) {
      nbdkit_debug ("reading a compressed unit: %m");
      return EIO;
    }
    bool whole = off == 0 && len == unit;
    int r = decompress_unit (c, p, n, whole ? dst : c->ubuf);
    zs_obj_read_end (pool, e.value, n, (void *) p);
    if (r < 0) {
      nbdkit_debug ("a stored unit did not decompress to %" PRIu32 " bytes", unit);
      return EIO;
    }
    if (!whole)
      memcpy (dst, c->ubuf + off, len);
    return 0;
  }
  case K_SPLIT: {
    /* Both objects into cbuf: the first with the link after it, which the second
     * then covers. */
    size_t na = zs_obj_size (pool, e.value);
    if (na <= 8 || na > raw_at || copy_object (c, e.value, na, c->cbuf) < 0)
      return EIO;
    uint64_t link;
    memcpy (&link, c->cbuf + na - 8, 8);
    size_t nb = zs_obj_size (pool, (unsigned long) link);
    if (nb == 0 || na - 8 + nb >= raw_at || copy_object (c, (unsigned long) link, nb, c->cbuf + na - 8) < 0)
      return EIO;
    bool whole = off == 0 && len == unit;
    if (decompress_unit (c, c->cbuf, na - 8 + nb, whole ? dst : c->ubuf) < 0) {
      nbdkit_debug ("a stored unit did not decompress to %" PRIu32 " bytes", unit);
      return EIO;
    }
    if (!whole)
      memcpy (dst, c->ubuf + off, len);
    return 0;
  }
  }
  return EIO;
}

static void
release (struct entry e)
{
  if (e.kind == K_SPLIT) {
    /* The second object's handle, from the first's last 8 bytes (a read-only
     * mapping needs no buffer of ours). */
    size_t n = zs_obj_size (pool, e.value);
    const unsigned char *p = n > 8 ? zs_map_object (pool, e.value, ZS_MM_RO) : NULL;
    if (p) {
      uint64_t link;
      memcpy (&link, p + n - 8, 8);
      zs_unmap_object (pool, e.value);
      release ((struct entry) { .kind = K_COMP, .value = (unsigned long) link });
    }
    else
      nbdkit_debug ("reading a split unit's link: %m");
  }
  if (e.kind == K_COMP || e.kind == K_RAW || e.kind == K_SPLIT) {
    errno = 0;
    zs_free (pool, e.value);
    if (errno != 0)
      nbdkit_debug ("zs_free: %m");
  }
}

/* ---- the table, under the stripe locks ------------------------------------------- */

static struct entry
entry_load (uint64_t u)
{
  struct entry e;
  e.kind = __atomic_load_n (&kinds[u], __ATOMIC_RELAXED);
  e.value = values[u];
  return e;
}

static void
count (struct stripe *s, struct entry e, uint64_t d)
{
  if (e.kind != K_EMPTY)
    __atomic_fetch_add (&s->stored, d, __ATOMIC_RELAXED);
  if (e.kind == K_ZERO || e.kind == K_FILL)
    __atomic_fetch_add (&s->same, d, __ATOMIC_RELAXED);
  if (e.kind == K_RAW)
    __atomic_fetch_add (&s->huge, d, __ATOMIC_RELAXED);
}

/* Installs `e` for unit `u`; returns the entry it replaces. Caller holds the stripe's
 * `write` lock; this takes `swap` exclusively for the exchange alone. */
static struct entry
swap_entry (struct stripe *s, uint64_t u, struct entry e)
{
  pthread_rwlock_wrlock (&s->swap);
  struct entry old = entry_load (u);
  values[u] = e.value;
  /* Relaxed: readers of entries hold `swap`; only extents reads kinds without it. */
  __atomic_store_n (&kinds[u], (unsigned char) e.kind, __ATOMIC_RELAXED);
  count (s, old, (uint64_t) -1);
  count (s, e, 1);
  pthread_rwlock_unlock (&s->swap);
  return old;
}

/* Replaces unit `u` with an encoded entry, and frees what it held. */
static void
put_unit (uint64_t u, struct entry e)
{
  struct stripe *s = stripe_of (u);
  pthread_mutex_lock (&s->write);
  struct entry old = swap_entry (s, u, e);
  pthread_mutex_unlock (&s->write);
  release (old);
}

/* Writes bytes [off, off + len) of unit `u` from src (zeros when src is NULL),
 * merging them with the unit's contents: the read-modify-write of a partial unit. */
static int
merge_unit (struct ctx *c, uint64_t u, const unsigned char *src, uint32_t off, uint32_t len)
{
  struct stripe *s = stripe_of (u);
  pthread_mutex_lock (&s->write);
  /* Holding `write`, no one else changes the entry: it can be read without `swap`. */
  struct entry old = entry_load (u);
  int err = decode_range (c, old, c->ubuf, 0, unit);
  struct entry e;
  if (!err) {
    if (src)
      memcpy (c->ubuf + off, src, len);
    else
      memset (c->ubuf + off, 0, len);
    err = encode (c, c->ubuf, &e);
  }
  if (!err)
    old = swap_entry (s, u, e);
  pthread_mutex_unlock (&s->write);
  if (!err)
    release (old);
  return err;
}

/* ---- nbdkit callbacks: configuration ----------------------------------------------- */

static void
disk_load (void)
{
  page_size = sysconf (_SC_PAGESIZE);
}

static int
parse_ulong (const char *key, const char *value, unsigned long *out)
{
  uint64_t v;
  if (nbdkit_parse_uint64_t (key, value, &v) == -1)
    return -1;
  if (v > ULONG_MAX) {
    nbdkit_error ("%s=%s is too large", key, value);
    return -1;
  }
  *out = (unsigned long) v;
  return 0;
}

/* The parameters, for the check that each is given at most once: of two values of
 * one key, which was meant cannot be told, so neither is taken. */
static const char *const config_keys[] = {
  "size", "compressor", "level", "unit", "mem_limit", "layout", "split", "frame", "chain",
  "auto_compact_pages", "auto_compact_max_pages_per_sec", "auto_compact_interval_ms", "stats",
};
static unsigned config_given;

static int
disk_config (const char *key, const char *value)
{
  for (size_t i = 0; i < sizeof config_keys / sizeof config_keys[0]; i++) {
    if (strcmp (key, config_keys[i]) != 0)
      continue;
    if (config_given & (1u << i)) {
      nbdkit_error ("%s=%s: %s is given twice", key, value, key);
      return -1;
    }
    config_given |= 1u << i;
  }
  if (strcmp (key, "size") == 0) {
    disk_size = nbdkit_parse_size (value);
    if (disk_size == -1)
      return -1;
    if (disk_size == 0) {
      nbdkit_error ("size=%s: the disk must not be empty", value);
      return -1;
    }
  }
  else if (strcmp (key, "compressor") == 0) {
    size_t i;
    for (i = 0; i < sizeof compressor_names / sizeof compressor_names[0]; i++)
      if (strcasecmp (value, compressor_names[i]) == 0)
        break;
    if (i == sizeof compressor_names / sizeof compressor_names[0]) {
      nbdkit_error ("compressor=%s: unknown compressor (lz4, zstd or none)", value);
      return -1;
    }
    compressor = (enum compressor) i;
  }
  else if (strcmp (key, "level") == 0) {
    if (nbdkit_parse_int (key, value, &level) == -1)
      return -1;
    level_set = true;
  }
  else if (strcmp (key, "unit") == 0) {
    int64_t v = nbdkit_parse_size (value);
    if (v == -1)
      return -1;
    if (v < MIN_UNIT || v > (1 << 30) || (v & (v - 1)) != 0) {
      nbdkit_error ("unit=%s: the unit must be a power of two of at least %u bytes", value, MIN_UNIT);
      return -1;
    }
    unit = (uint32_t) v;
  }
  else if (strcmp (key, "mem_limit") == 0) {
    int64_t v = nbdkit_parse_size (value);
    if (v == -1)
      return -1;
    mem_limit = (uint64_t) v;
  }
  else if (strcmp (key, "layout") == 0) {
    if (strcmp (value, "dense") == 0)
      layout = ZS_LAYOUT_DENSE;
    else if (strcmp (value, "kernel") == 0)
      layout = ZS_LAYOUT_KERNEL;
    else {
      nbdkit_error ("layout=%s: unknown layout (dense or kernel)", value);
      return -1;
    }
  }
  else if (strcmp (key, "split") == 0) {
    if ((split = nbdkit_parse_bool (value)) == -1)
      return -1;
  }
  else if (strcmp (key, "frame") == 0) {
    int64_t v = nbdkit_parse_size (value);
    if (v == -1)
      return -1;
    if (v < MIN_UNIT || v > 65536 || (v & (v - 1)) != 0 || v % page_size != 0) {
      nbdkit_error ("frame=%s: the frame must be a power of two from 4096 to 65536 bytes and "
                    "a multiple of the page size (%ld bytes)", value, page_size);
      return -1;
    }
    frame = (uint32_t) v;
  }
  else if (strcmp (key, "chain") == 0) {
    if (nbdkit_parse_unsigned (key, value, &chain) == -1)
      return -1;
  }
  else if (strcmp (key, "auto_compact_pages") == 0) {
    ac_pages_set = true;
    return parse_ulong (key, value, &ac_pages);
  }
  else if (strcmp (key, "auto_compact_max_pages_per_sec") == 0)
    return parse_ulong (key, value, &ac_rate);
  else if (strcmp (key, "auto_compact_interval_ms") == 0)
    return nbdkit_parse_unsigned (key, value, &ac_interval);
  else if (strcmp (key, "stats") == 0) {
    free (stats_path);
    stats_path = nbdkit_absolute_path (value);
    if (!stats_path)
      return -1;
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static int
disk_config_complete (void)
{
  if (disk_size == -1) {
    nbdkit_error ("you must give the disk's size: size=SIZE");
    return -1;
  }
  if (unit == 0)
    unit = compressor == COMP_ZSTD ? ZSTD_UNIT : MIN_UNIT;
  if (split == -1)
    split = unit > MIN_UNIT;
  if (frame == 0)
    frame = unit > MIN_UNIT && unit <= 32768 && page_size < LARGE_UNIT_FRAME ? LARGE_UNIT_FRAME
                                                                           : (uint32_t) page_size;
  if (mem_limit != 0 && mem_limit < frame) {
    nbdkit_error ("mem_limit=%" PRIu64 ": the limit must be 0 (none) or at least one frame "
                  "(%" PRIu32 " bytes)", mem_limit, frame);
    return -1;
  }
  if (!ac_pages_set)
    ac_pages = AUTO_COMPACT_BYTES / frame;
  switch (compressor) {
  case COMP_LZ4:
    if (load_lz4 () == -1)
      return -1;
    if (!level_set)
      level = LZ4_ACCELERATION;
    /* zram passes its level to lz4 as the acceleration. */
    if (level < 1 || level > 65537) {
      nbdkit_error ("level=%d: lz4's level is its acceleration, 1..65537", level);
      return -1;
    }
    break;
  case COMP_ZSTD:
    if (!level_set)
      level = 3;
    if (level < ZSTD_minCLevel () || level > ZSTD_maxCLevel ()) {
      nbdkit_error ("level=%d: zstd's levels are %d..%d", level, ZSTD_minCLevel (), ZSTD_maxCLevel ());
      return -1;
    }
    break;
  case COMP_NONE:
    if (level_set) {
      nbdkit_error ("level=%d: compressor=none takes no level", level);
      return -1;
    }
    break;
  }
  return 0;
}

static struct zs_pool_config
pool_config (void)
{
  struct zs_pool_config cfg;
  memset (&cfg, 0, sizeof cfg);
  cfg.size = sizeof cfg;
  cfg.max_pages = (unsigned long) (mem_limit / frame);
  cfg.chain_size = chain;
  cfg.layout = layout;
  cfg.auto_compact_pages = ac_pages;
  cfg.auto_compact_max_pages_per_sec = ac_rate;
  cfg.auto_compact_interval_ms = ac_interval;
  /* A unit that does not compress is stored whole: the pool takes objects of a unit
   * (up to 64 KiB; it refuses a larger limit, and so a larger unit, with EINVAL). */
  cfg.max_object_size = unit;
  cfg.frame_size = frame;
  /* lz4 stores a unit in a few microseconds, so a copy into the disk takes a page
   * fault on every new page of the pool's frames (17% of the server's time): the pool
   * faults them in 2 MiB at a time instead, for up to 2 MiB of memory ahead of use.
   * zstd spends ten times as long per byte, where the faults do not count, and its
   * disk is held to the memory of nbdkit's zstd allocator. */
  cfg.prefault = compressor == COMP_LZ4;
  return cfg;
}

/* Whether the pool takes objects of `size` bytes: it refuses larger ones than its
 * largest with ENOSPC, before looking for room (NOGROW: it takes no frame). */
static bool
pool_takes (struct zs_pool *p, size_t size)
{
  unsigned long h = zs_malloc (p, size, ZS_ALLOC_NOGROW);
  if (!ZS_IS_ERR (h)) {
    zs_free (p, h);
    return true;
  }
  return ZS_ERR (h) != ENOSPC;
}

/* The largest object the pool stores, as it answers (binary search below `above`,
 * which it refuses). */
static size_t
pool_largest_object (struct zs_pool *p, size_t above)
{
  size_t lo = 1, hi = above; /* lo taken, hi refused */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (pool_takes (p, mid))
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* Checks everything that can be checked before nbdkit forks (errors reach the user
 * here), with a pool made like the real one: the pool's configuration, and whether it
 * stores objects of a whole unit (a unit that does not compress is stored raw). The
 * probe's compactor thread, if any, is joined when it is destroyed, before the fork. */
static int
disk_get_ready (void)
{
  struct zs_pool_config cfg = pool_config ();
  struct zs_pool *probe = zs_create_pool_with ("nbdkit-zsmalloc-probe", &cfg);
  if (!probe) {
    nbdkit_error ("the pool refuses this configuration (unit=%" PRIu32 " frame=%" PRIu32 " layout=%s "
                  "chain=%u mem_limit=%" PRIu64 " auto_compact_pages=%lu "
                  "auto_compact_max_pages_per_sec=%lu auto_compact_interval_ms=%u): %m",
                  unit, frame, layout == ZS_LAYOUT_DENSE ? "dense" : "kernel", chain, mem_limit,
                  ac_pages, ac_rate, ac_interval);
    return -1;
  }
  bool takes_unit = pool_takes (probe, unit);
  size_t largest = takes_unit ? unit : pool_largest_object (probe, unit);
  size_t huge = zs_huge_class_size (probe);
  zs_destroy_pool (probe);
  if (!takes_unit) {
    nbdkit_error ("unit=%" PRIu32 ": the pool's largest object is %zu bytes, and a unit that "
                  "does not compress is stored whole: use unit=%zu or less",
                  unit, largest, largest);
    return -1;
  }
  raw_at = unit;
  if (unit == (uint32_t) page_size && huge > 0 && huge < raw_at)
    raw_at = (uint32_t) huge;

  nunits = ((uint64_t) disk_size + unit - 1) / unit;
  if (nunits > SIZE_MAX / (sizeof *values + sizeof *kinds)) {
    nbdkit_error ("size=%" PRIi64 " is too large for a table of %" PRIu32 "-byte units", disk_size, unit);
    return -1;
  }
  /* Reserved, not committed: a page of the table costs memory once a unit in it is
   * written. */
  table_bytes = (size_t) nunits * (sizeof *values + sizeof *kinds);
  void *t = mmap (NULL, table_bytes, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (t == MAP_FAILED) {
    nbdkit_error ("size=%" PRIi64 ": cannot reserve the unit table (%zu bytes): %m", disk_size, table_bytes);
    return -1;
  }
  values = t;
  kinds = (unsigned char *) (values + nunits);

  long cpus = sysconf (_SC_NPROCESSORS_ONLN);
  nctxs = cpus > 0 && cpus < 64 ? 2 * (unsigned int) cpus : 128;
  for (nstripes = 1; nstripes < MAX_STRIPES && nstripes < (size_t) STRIPES_PER_CTX * nctxs;)
    nstripes *= 2;
  stripes = calloc (nstripes, sizeof *stripes);
  if (!stripes) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init (&attr);
  /* A writer's swap is short; without this, a steady stream of readers of one stripe
   * could keep it waiting. */
  pthread_rwlockattr_setkind_np (&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  for (size_t i = 0; i < nstripes; i++) {
    pthread_mutex_init (&stripes[i].write, NULL);
    pthread_rwlock_init (&stripes[i].swap, &attr);
  }
  pthread_rwlockattr_destroy (&attr);

  ctxs = calloc (nctxs, sizeof *ctxs);
  if (!ctxs) {
    nbdkit_error ("calloc: %m");
    return -1;
  }
  for (unsigned int i = 0; i < nctxs; i++)
    pthread_mutex_init (&ctxs[i].lock, NULL);
  nbdkit_debug ("%u compressor contexts, %zu stripes of locks", nctxs, nstripes);
  nbdkit_debug ("pool frames of %" PRIu32 " bytes, auto-compaction at %lu frames", frame, ac_pages);
  return 0;
}

/* The pool is made after the fork: its automatic compactor is a thread. */
static int
disk_after_fork (void)
{
  struct zs_pool_config cfg = pool_config ();
  pool = zs_create_pool_with ("nbdkit-zsmalloc", &cfg);
  if (!pool) {
    nbdkit_error ("zs_create_pool_with: %m");
    return -1;
  }
  return 0;
}

/* ---- statistics ------------------------------------------------------------------------ */

struct mm_stat {
  uint64_t orig_data_size, compr_data_size, mem_used_total, mem_limit, mem_used_max;
  uint64_t same_pages, pages_compacted, huge_pages;
  uint64_t pool_meta_bytes, table_bytes, frame_bytes;
};

static struct mm_stat
mm_stat (void)
{
  struct mm_stat m;
  memset (&m, 0, sizeof m);
  uint64_t stored = 0;
  for (size_t i = 0; i < nstripes; i++) {
    stored += __atomic_load_n (&stripes[i].stored, __ATOMIC_RELAXED);
    m.same_pages += __atomic_load_n (&stripes[i].same, __ATOMIC_RELAXED);
    m.huge_pages += __atomic_load_n (&stripes[i].huge, __ATOMIC_RELAXED);
  }
  struct zs_pool_info info;
  memset (&info, 0, sizeof info);
  info.size = sizeof info;
  if (pool)
    zs_pool_info (pool, &info);
  m.orig_data_size = stored * unit;
  m.compr_data_size = info.requested_bytes;
  m.mem_used_total = (uint64_t) info.total_pages * frame;
  m.mem_limit = mem_limit;
  m.mem_used_max = (uint64_t) __atomic_load_n (&mem_used_max_pages, __ATOMIC_RELAXED) * frame;
  m.pages_compacted = info.pages_compacted;
  m.pool_meta_bytes = info.meta_bytes;
  m.table_bytes = table_bytes;
  m.frame_bytes = frame;
  return m;
}

#define MM_STAT_FIELDS(X)                                                 \
  X (orig_data_size) X (compr_data_size) X (mem_used_total) X (mem_limit) \
  X (mem_used_max) X (same_pages) X (pages_compacted) X (huge_pages)      \
  X (pool_meta_bytes) X (table_bytes) X (frame_bytes)

/* Replaces stats=FILE through a rename, so that a reader never sees half of it: one
 * "name value" line per field, zram's mm_stat fields first in zram's order. */
static void
write_stats_file (const struct mm_stat *m)
{
  char tmp[PATH_MAX];
  if (snprintf (tmp, sizeof tmp, "%s.tmp", stats_path) >= (int) sizeof tmp) {
    nbdkit_debug ("stats=%s: path too long", stats_path);
    return;
  }
  FILE *f = fopen (tmp, "w");
  if (!f) {
    nbdkit_debug ("stats: %s: %m", tmp);
    return;
  }
#define FILE_LINE(f) "%s %" PRIu64 "\n"
#define FILE_ARG(f) , #f, m->f
  fprintf (f, MM_STAT_FIELDS (FILE_LINE) MM_STAT_FIELDS (FILE_ARG));
  if (fclose (f) != 0 || rename (tmp, stats_path) != 0)
    nbdkit_debug ("stats: %s: %m", stats_path);
}

/* The statistics to nbdkit's debug output and, with stats=FILE, to FILE. Clients on
 * several connections may flush at once: one report at a time, so that two cannot
 * interleave in the temporary file, nor older figures replace newer ones. */
static void
report_stats (const char *when)
{
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  if (!stripes)
    return;
  pthread_mutex_lock (&lock);
  struct mm_stat m = mm_stat ();
#define DEBUG_FIELD(f) " " #f "=%" PRIu64
#define DEBUG_ARG(f) , m.f
  nbdkit_debug ("mm_stat (%s):" MM_STAT_FIELDS (DEBUG_FIELD), when MM_STAT_FIELDS (DEBUG_ARG));
  if (stats_path)
    write_stats_file (&m);
  pthread_mutex_unlock (&lock);
}

static void
disk_cleanup (void)
{
  report_stats ("unload");
  zs_destroy_pool (pool);
  pool = NULL;
}

static void
disk_unload (void)
{
  free (stats_path);
  stats_path = NULL;
  if (values)
    munmap (values, table_bytes);
  if (stripes) {
    for (size_t i = 0; i < nstripes; i++) {
      pthread_mutex_destroy (&stripes[i].write);
      pthread_rwlock_destroy (&stripes[i].swap);
    }
    free (stripes);
  }
  if (ctxs) {
    for (unsigned int i = 0; i < nctxs; i++) {
      ctx_free (&ctxs[i]);
      pthread_mutex_destroy (&ctxs[i].lock);
    }
    free (ctxs);
  }
}

static void
disk_dump_plugin (void)
{
  printf ("zsmalloc_version=%s\n", ZSMALLOC_VERSION_STRING);
  printf ("zsmalloc_compressors=lz4,zstd,none\n");
  if (load_lz4 () == 0)
    printf ("zsmalloc_lz4_version=%s\n", lz4.versionString ());
  printf ("zsmalloc_zstd_version=%s\n", ZSTD_versionString ());
}

/* ---- nbdkit callbacks: the connection ---------------------------------------------- */

static void *
disk_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
disk_get_size (void *handle)
{
  return disk_size;
}

static int
disk_block_size (void *handle, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  /* Any request works; whole units spare the read-modify-write. */
  *minimum = 1;
  *preferred = unit;
  *maximum = 0xffffffff;
  return 0;
}

static int
disk_true (void *handle)
{
  return 1;
}

static int
disk_can_fua (void *handle)
{
  /* A write is in its final place when it returns. */
  return NBDKIT_FUA_NATIVE;
}

/* The part of a request that lies in one unit. */
struct piece {
  uint64_t u;      /* the unit */
  uint32_t off;    /* where in the unit the part starts */
  uint32_t len;    /* its bytes */
};

/* The next piece of [*pos, end); advances *pos past it. */
static bool
next_piece (uint64_t *pos, uint64_t end, struct piece *p)
{
  if (*pos >= end)
    return false;
  p->u = *pos / unit;
  p->off = (uint32_t) (*pos % unit);
  uint64_t room = unit - p->off;
  p->len = (uint32_t) (end - *pos < room ? end - *pos : room);
  *pos += p->len;
  return true;
}

static int
fail (int err)
{
  nbdkit_set_error (err);
  return -1;
}

static int
disk_pread (void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  unsigned char *dst = buf;
  struct piece p;
  for (uint64_t pos = offset; next_piece (&pos, offset + count, &p); dst += p.len) {
    struct ctx *c = ctx_get ();
    if (!c)
      return fail (ENOMEM);
    struct stripe *s = stripe_of (p.u);
    pthread_rwlock_rdlock (&s->swap);
    int err = decode_range (c, entry_load (p.u), dst, p.off, p.len);
    pthread_rwlock_unlock (&s->swap);
    ctx_put (c);
    if (err)
      return fail (err);
  }
  return 0;
}

/* Whether a piece covers its whole unit (up to the end of the disk for the last). */
static bool
whole_unit (struct piece p)
{
  return p.off == 0 && p.len == unit_len (p.u);
}

/* Writes a piece from src (zeros when NULL); 0, or an errno. A whole unit is encoded
 * before any stripe lock is taken; a whole unit of zeros is freed. */
static int
write_piece (struct piece p, const unsigned char *src)
{
  if (whole_unit (p) && !src) {
    put_unit (p.u, (struct entry) { K_EMPTY, 0 });
    return 0;
  }
  struct ctx *c = ctx_get ();
  if (!c)
    return ENOMEM;
  int err;
  if (p.len == unit) {
    struct entry e;
    err = encode (c, src, &e);
    /* The encoded unit is in the pool or in `e`: the context is no longer needed. */
    ctx_put (c);
    if (!err)
      put_unit (p.u, e);
  }
  else {
    err = merge_unit (c, p.u, src, p.off, p.len);
    ctx_put (c);
  }
  if (!err && src)
    note_mem_used ();
  return err;
}

/* Writes [offset, offset + count) from buf, or zeros when buf is NULL. */
static int
write_range (const unsigned char *buf, uint32_t count, uint64_t offset)
{
  struct piece p;
  for (uint64_t pos = offset; next_piece (&pos, offset + count, &p);) {
    int err = write_piece (p, buf ? buf + (p.u * unit + p.off - offset) : NULL);
    if (err)
      return fail (err);
  }
  return 0;
}

static int
disk_pwrite (void *handle, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
  return write_range (buf, count, offset);
}

/* Zeroing frees whole units (they read as zeros and hold nothing, whatever
 * NBDKIT_FLAG_MAY_TRIM says) and rewrites the zeroed part of partial ones. */
static int
disk_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  return write_range (NULL, count, offset);
}

/* Trimming frees whole units, as zram's discard frees whole pages; the trimmed part of
 * a partial unit keeps its contents (a trim is a hint). */
static int
disk_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct piece p;
  for (uint64_t pos = offset; next_piece (&pos, offset + count, &p);)
    if (whole_unit (p))
      put_unit (p.u, (struct entry) { K_EMPTY, 0 });
  return 0;
}

/* A flush has nothing to write back. It gives memory back instead, which a client
 * flushing after a fill, or after deleting or trimming, expects to see in the memory
 * used: it compacts the pool, frees idle compressor contexts, and has malloc return
 * what its arenas hold free (nbdkit's request buffers, one arena per thread, up to
 * eight per CPU), the last two at most once per second, as is waiting for the pool's
 * background compaction where that kept the flush's own from running (see
 * release_idle_memory). Then it records the statistics. */
static int
disk_flush (void *handle, uint32_t flags)
{
  unsigned long freed = zs_compact (pool);
  if (freed)
    nbdkit_debug ("flush: compaction freed %lu frames", freed);
  release_idle_memory (freed > 0);
  report_stats ("flush");
  return 0;
}

/* Units that hold nothing read as zeros: holes. */
static int
disk_extents (void *handle, uint32_t count, uint64_t offset, uint32_t flags,
            struct nbdkit_extents *extents)
{
  uint64_t run_start = offset;
  uint32_t run_type = 0;
  struct piece p;
  for (uint64_t pos = offset; next_piece (&pos, offset + count, &p);) {
    /* Relaxed, without the stripe lock: a unit written meanwhile may be reported
     * either way, as NBD allows for a status racing a write. */
    unsigned char k = __atomic_load_n (&kinds[p.u], __ATOMIC_RELAXED);
    uint32_t type = k == K_EMPTY || k == K_ZERO ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;
    uint64_t here = p.u * unit + p.off;
    if (here > run_start && type != run_type) {
      if (nbdkit_add_extent (extents, run_start, here - run_start, run_type) == -1)
        return -1;
      if (flags & NBDKIT_FLAG_REQ_ONE)
        return 0;
      run_start = here;
    }
    run_type = type;
  }
  return nbdkit_add_extent (extents, run_start, offset + count - run_start, run_type);
}

static struct nbdkit_plugin plugin = {
  .name = "zsmalloc",
  .longname = "nbdkit zsmalloc plugin",
  .version = ZSMALLOC_VERSION_STRING,
  .description = "A compressed RAM disk: each unit compressed (lz4 or zstd) into a zsmalloc pool",
  .load = disk_load,
  .unload = disk_unload,
  .config = disk_config,
  .config_complete = disk_config_complete,
  .config_help =
    "size=<SIZE>                (required) Size of the disk.\n"
    "compressor=lz4|zstd|none   Compressor (default lz4).\n"
    "level=<N>                  zstd level (default 3), or lz4 acceleration (default 6).\n"
    "unit=<SIZE>                Compression unit (default 4096; 32768 with zstd).\n"
    "split=true|false           Store compressed units as two objects (default: with units over 4 KiB).\n"
    "mem_limit=<SIZE>           Most memory the pool may hold; then writes fail with ENOSPC.\n"
    "layout=dense|kernel        The pool's layout (default dense).\n"
    "frame=<SIZE>               The pool's frame, 4096..65536 (default: the page; 16384 for units of 8K to 32K).\n"
    "chain=<N>                  Most frames per zspage, 4..16 (default: the layout's).\n"
    "auto_compact_pages=<N>     Compact a class once this many frames could be freed (1 MiB of them; 0: off).\n"
    "auto_compact_max_pages_per_sec=<N>  Most frames auto-compaction frees per second (0: no bound).\n"
    "auto_compact_interval_ms=<N>        How often auto-compaction looks (default 1000).\n"
    "stats=<FILE>               Write zram's mm_stat fields to FILE on flush and at exit.",
  .magic_config_key = "size",
  .get_ready = disk_get_ready,
  .after_fork = disk_after_fork,
  .cleanup = disk_cleanup,
  .dump_plugin = disk_dump_plugin,
  .open = disk_open,
  .get_size = disk_get_size,
  .block_size = disk_block_size,
  .can_write = disk_true,
  .can_flush = disk_true,
  .can_trim = disk_true,
  .can_zero = disk_true,
  .can_fast_zero = disk_true,
  .can_multi_conn = disk_true,
  .can_extents = disk_true,
  .can_fua = disk_can_fua,
  .pread = disk_pread,
  .pwrite = disk_pwrite,
  .zero = disk_zero,
  .trim = disk_trim,
  .flush = disk_flush,
  .extents = disk_extents,
  .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN (plugin)
