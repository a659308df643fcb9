#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edgevit.h"

/* glibc's allocator under its own names: the definitions below take malloc & co. for the whole process
   (the TVM runtime and its thread pool included) and count the calls made while `counting` is set. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static int counting;
static long small_calls, large_calls;

static void count(size_t bytes) {
  if (__atomic_load_n(&counting, __ATOMIC_RELAXED)) __atomic_fetch_add(bytes >= 4096 ? &large_calls : &small_calls, 1, __ATOMIC_RELAXED);
}
void *malloc(size_t n) { count(n); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { count(k * n); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { count(n); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(n); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(n); return __libc_memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n) { count(n); *p = __libc_memalign(a, n); return *p ? 0 : ENOMEM; }

/* argv: BUNDLE IMAGE RUNS. Prints "small large": allocations below / from 4 KiB during RUNS steady-state runs. */
int main(int argc, char **argv) {
  edgevit_model *m = edgevit_open(argv[1], 2);
  if (!m || edgevit_run_file(m, argv[2]) != 0) return 3;
  size_t bytes;
  void *tensor = malloc(edgevit_input(m, &bytes) ? bytes : 0);
  memcpy(tensor, edgevit_input(m, NULL), bytes);
  for (int i = 0; i < 3; ++i)
    if (edgevit_run_tensor(m, tensor, bytes) != 0) return 4;
  int runs = atoi(argv[3]);
  __atomic_store_n(&counting, 1, __ATOMIC_SEQ_CST);
  for (int i = 0; i < runs; ++i)
    if (edgevit_run_tensor(m, tensor, bytes) != 0) return 5;
  __atomic_store_n(&counting, 0, __ATOMIC_SEQ_CST);
  printf("%ld %ld\n", small_calls, large_calls);
  edgevit_close(m);
  free(tensor);
  return 0;
}
