/* edgevit.h: run an edgevit bundle from C, C++ or any language with a C FFI (the Python binding is one).
 *
 * The core, lib/libedgevit.so of every bundle, verifies a bundle directory before any model code is loaded:
 * its Ed25519 signature when a trust store is configured, the sha256 of every file the manifest lists,
 * architecture and CPU features. Every buffer is allocated by edgevit_open, so steady-state inference
 * allocates no tensor memory (the Relax VM still makes its small tensor headers each run: about 140 for
 * DeiT-tiny). A handle is used by one thread at a time. Functions returning int give 0 on success and -1 on
 * failure; edgevit_last_error() then holds one line saying why (per thread).
 *
 *     edgevit_model *m = edgevit_open("bundle", 0);
 *     if (!m || edgevit_run_file(m, "cat.jpg") != 0) { fprintf(stderr, "%s\n", edgevit_last_error()); }
 *     edgevit_class best[5];
 *     int n = edgevit_top_k(m, 5, best);   // best[i].index, best[i].probability, edgevit_label(m, ...)
 *     edgevit_close(m);
 */
#ifndef EDGEVIT_H_
#define EDGEVIT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The core is built with hidden visibility: these are the only symbols libedgevit.so exports. */
#define EDGEVIT_API __attribute__((visibility("default")))

typedef struct edgevit_model edgevit_model;
typedef struct edgevit_preprocessor edgevit_preprocessor;

/* One class of a top-k answer: its index in the logits and its softmax probability. */
typedef struct {
  int index;
  float probability;
} edgevit_class;

/* Channel order of interleaved 8-bit pixels (OpenCV delivers BGR). */
typedef enum { EDGEVIT_RGB = 0, EDGEVIT_BGR = 1 } edgevit_pixel_order;

/* What the manifest says about the model, valid until edgevit_close. */
typedef struct {
  const char *model;          /* model.name (timm name) */
  const char *target;         /* target.preset */
  const char *quant;          /* quant.mode: fp32 | int8 | int8-full */
  const char *output;         /* model.output: "logits" (a classifier) or "features" (an embedding) */
  const char *input_dtype;    /* input.dtype: "float32" (normalized) or "uint8" (raw pixels) */
  const int *tome_schedule;   /* tome.schedule, tome_depth entries */
  int tome_depth;
  int input_size;             /* H == W of the model input [1, 3, H, W] */
  int num_outputs;            /* logits (model.num_classes) or embedding width */
  int num_labels;             /* lines of labels.txt */
  const char *signed_by;      /* "<name> (<key id>)" of the verified signature; "" without a trust store */
  const char *edgevit_version;
  const char *tvm_version;    /* of the TVM runtime this core was built against */
} edgevit_info;

/* How to open a bundle (zero-initialise, then set what you need). */
typedef struct {
  int num_threads;            /* TVM worker threads; 0 = every CPU this process may run on */
  const char *trusted_keys;   /* trust store file; NULL: $EDGEVIT_TRUSTED_KEYS, else /etc/edgevit/trusted_keys
                                 when it exists, else none (then an unsigned bundle runs) */
} edgevit_options;

/* The input transform alone (no model, no TVM), as a manifest's `input` describes it. */
typedef struct {
  int size;                   /* crop H == W */
  int resize;                 /* the short side is resized to this first */
  float mean[3], std[3];      /* per channel, on [0, 1] pixels */
  const char *interpolation;  /* "bicubic" | "bilinear" */
  const char *dtype;          /* "float32" (normalized) | "uint8" (raw pixels) */
} edgevit_input_spec;

/* Latency statistics of edgevit_bench (milliseconds) and the process's peak resident memory. */
typedef struct {
  double median_ms, p90_ms, p99_ms, mean_ms, min_ms;
  int n;
  double peak_rss_mb;         /* VmHWM of this process */
} edgevit_bench_result;

/* The last failure of this thread as one line ("" when none). */
EDGEVIT_API const char *edgevit_last_error(void);

/* Bounds on decoding image files, process-wide, checked against the file's header before any large
 * allocation (a file over them is refused with one line). 0 keeps a bound as it is. Defaults: 100
 * megapixels, 1 GiB of decoder memory. */
EDGEVIT_API void edgevit_set_image_limits(uint64_t max_pixels, uint64_t max_bytes);

/* Verify and load a bundle directory. num_threads takes effect only before the runtime has started its
 * pool, i.e. for the first model a process opens. NULL on failure. */
EDGEVIT_API edgevit_model *edgevit_open(const char *bundle_dir, int num_threads);
EDGEVIT_API edgevit_model *edgevit_open_with(const char *bundle_dir, const edgevit_options *options);
EDGEVIT_API void edgevit_close(edgevit_model *model);

EDGEVIT_API const edgevit_info *edgevit_get_info(const edgevit_model *model);

/* Preprocess interleaved 8-bit pixels (H x W x 3, rows `stride` bytes apart: any stride whose magnitude holds
 * a row, negative for bottom-up rows) as the manifest says (short side resized with Pillow's filter, center
 * crop, normalized or raw) and run the model. */
EDGEVIT_API int edgevit_run_image(edgevit_model *model, const uint8_t *pixels, int width, int height, ptrdiff_t stride,
                      edgevit_pixel_order order);

/* Decode a JPEG or PNG file (converted to RGB as Pillow's convert("RGB") does) and run it. */
EDGEVIT_API int edgevit_run_file(edgevit_model *model, const char *path);

/* Run an already preprocessed input: [1, 3, H, W] of the manifest's dtype, `bytes` must equal its size. */
EDGEVIT_API int edgevit_run_tensor(edgevit_model *model, const void *data, size_t bytes);

/* Only preprocess (pixels or file) into the input buffer, without running. */
EDGEVIT_API int edgevit_preprocess_image(edgevit_model *model, const uint8_t *pixels, int width, int height, ptrdiff_t stride,
                             edgevit_pixel_order order);
EDGEVIT_API int edgevit_preprocess_file(edgevit_model *model, const char *path);

/* The model's input buffer ([1, 3, H, W] of the manifest's dtype; *bytes receives its size). Writing
 * it and calling edgevit_run() runs on what was written. */
EDGEVIT_API void *edgevit_input(edgevit_model *model, size_t *bytes);
EDGEVIT_API int edgevit_run(edgevit_model *model);

/* The last run's output row (num_outputs floats); *count receives num_outputs. */
EDGEVIT_API const float *edgevit_output(const edgevit_model *model, size_t *count);

/* The k best classes of the last run, best first, with softmax probabilities; returns how many
 * were written (min(k, classes)), -1 for a bundle whose output is "features". */
EDGEVIT_API int edgevit_top_k(const edgevit_model *model, int k, edgevit_class *out);

/* labels.txt line `index` ("" when out of range). */
EDGEVIT_API const char *edgevit_label(const edgevit_model *model, int index);

/* `warmup` untimed and `repeat` timed runs on a fixed pseudo-random input written into the input buffer. */
EDGEVIT_API int edgevit_bench(edgevit_model *model, int warmup, int repeat, edgevit_bench_result *out);

/* The input transform without a model: `out` receives [3, size, size] of the spec's dtype
 * (edgevit_preprocessor_bytes). NULL / -1 on failure, as above. */
EDGEVIT_API edgevit_preprocessor *edgevit_preprocessor_new(const edgevit_input_spec *spec);
EDGEVIT_API void edgevit_preprocessor_free(edgevit_preprocessor *preprocessor);
EDGEVIT_API size_t edgevit_preprocessor_bytes(const edgevit_preprocessor *preprocessor);
EDGEVIT_API int edgevit_preprocessor_image(edgevit_preprocessor *preprocessor, const uint8_t *pixels, int width, int height,
                               ptrdiff_t stride, edgevit_pixel_order order, void *out);
EDGEVIT_API int edgevit_preprocessor_file(edgevit_preprocessor *preprocessor, const char *path, void *out);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVIT_H_ */
