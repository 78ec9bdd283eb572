/*
 * lz4 at one acceleration over an image, unit by unit, as the nbdkit plugin
 * compresses it: every `every`-th 4 KiB unit that is not one 8-byte word repeated,
 * LZ4_compress_fast_extState into 4095 bytes (a unit that does not fit is stored raw).
 * Prints the units, those stored raw and the bytes stored, scaled back to the whole
 * image. Acceleration 0 runs the same loop without compressing: the baseline to
 * subtract from an instruction count. `make lz4-accel` runs it under cachegrind,
 * whose counts repeat to the instruction whatever else the machine runs:
 *
 *     lz4_accel IMAGE ACCELERATION EVERY
 */

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lz4.h>

#define UNIT 4096

static int
same_filled (const unsigned char *p)
{
  uint64_t w, v;
  memcpy (&w, p, 8);
  for (int i = 8; i < UNIT; i += 8) {
    memcpy (&v, p + i, 8);
    if (v != w)
      return 0;
  }
  return 1;
}

int
main (int argc, char **argv)
{
  if (argc != 4) {
    fprintf (stderr, "usage: %s IMAGE ACCELERATION EVERY\n", argv[0]);
    return 2;
  }
  int acc = atoi (argv[2]);
  size_t every = (size_t) atol (argv[3]);
  int fd = open (argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) != 0 || every == 0) {
    perror (argv[1]);
    return 1;
  }
  const unsigned char *img = mmap (NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  void *state = malloc ((size_t) LZ4_sizeofState ());
  if (img == MAP_FAILED || !state) {
    perror ("mmap");
    return 1;
  }
  static char dst[UNIT];
  size_t units = (size_t) st.st_size / UNIT;
  unsigned long n = 0, raw = 0;
  unsigned long long stored = 0;
  for (size_t i = 0; i < units; i += every) {
    const unsigned char *p = img + i * UNIT;
    if (same_filled (p))
      continue;
    n++;
    if (acc == 0)
      continue;
    int r = LZ4_compress_fast_extState (state, (const char *) p, dst, UNIT, UNIT - 1, acc);
    if (r > 0)
      stored += (unsigned) r;
    else {
      raw++;
      stored += UNIT;
    }
  }
  printf ("acceleration %d: %lu units, %lu raw, %.1f MiB stored (every %zu-th unit, scaled)\n",
          acc, n, raw, (double) stored * (double) every / (1 << 20), every);
  return 0;
}
