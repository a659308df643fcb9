/* edgevit.h: run an edgevit bundle from C or C++ without Python.
 *
 * A bundle directory (model.so + manifest.json + labels.txt) is verified exactly as `python -m runtime`
 * verifies it (sha256 of every listed file, architecture, CPU features) before any model code is
 * loaded. Every buffer is allocated by edgevit_open, so steady-state inference allocates no tensor memory
 * (the Relax VM still makes its small tensor headers each run: about 140 for DeiT-tiny).
 * A handle is used by one thread at a time. Functions returning int give 0 on success and -1 on
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

typedef struct edgevit_model edgevit_model;

/* One class of a top-k answer: its index in the logits and its softmax probability. */
typedef struct {
  int index;
  float probability;
} edgevit_class;

/* What the manifest says about the model, valid until edgevit_close. */
typedef struct {
  const char *model;         /* model.name (timm name) */
  const char *target;        /* target.preset */
  const char *quant;         /* quant.mode: fp32 | int8 | int8-full */
  const char *output;        /* model.output: "logits" (a classifier) or "features" (an embedding) */
  const char *input_dtype;   /* input.dtype: "float32" (normalized) or "uint8" (raw pixels) */
  const int *tome_schedule;  /* tome.schedule, tome_depth entries */
  int tome_depth;
  int input_size;            /* H == W of the model input [1, 3, H, W] */
  int num_outputs;           /* logits (model.num_classes) or embedding width */
} edgevit_info;

/* The last failure of this thread as one line ("" when none). */
const char *edgevit_last_error(void);

/* Verify and load a bundle directory. num_threads: TVM worker threads, 0 = every CPU this process
 * may run on (sched_getaffinity); it takes effect only before the runtime has started its pool, i.e.
 * for the first model a process opens. NULL on failure. */
edgevit_model *edgevit_open(const char *bundle_dir, int num_threads);
void edgevit_close(edgevit_model *model);

const edgevit_info *edgevit_get_info(const edgevit_model *model);

/* Preprocess an RGB image (HWC uint8, `stride` bytes per row, any size) as the manifest says
 * (short side resized with Pillow's filter, center crop, normalized or raw) and run the model. */
int edgevit_run_image(edgevit_model *model, const uint8_t *rgb, int width, int height, int stride);

/* Decode a JPEG or PNG file (converted to RGB as Pillow's convert("RGB") does) and run it. */
int edgevit_run_file(edgevit_model *model, const char *path);

/* Run an already preprocessed input: [1, 3, H, W] of the manifest's dtype, `bytes` must equal its size. */
int edgevit_run_tensor(edgevit_model *model, const void *data, size_t bytes);

/* Only preprocess (image or file) into the input buffer, without running: for checking the input
 * against another implementation. */
int edgevit_preprocess_image(edgevit_model *model, const uint8_t *rgb, int width, int height, int stride);
int edgevit_preprocess_file(edgevit_model *model, const char *path);

/* The model's input buffer ([1, 3, H, W] of the manifest's dtype; *bytes receives its size). Writing
 * it and calling edgevit_run() runs on what was written. */
void *edgevit_input(edgevit_model *model, size_t *bytes);
int edgevit_run(edgevit_model *model);

/* The last run's output row (num_outputs floats); *count receives num_outputs. */
const float *edgevit_output(const edgevit_model *model, size_t *count);

/* The k best classes of the last run, best first, with softmax probabilities; returns how many
 * were written (min(k, classes)), -1 for a bundle whose output is "features". */
int edgevit_top_k(const edgevit_model *model, int k, edgevit_class *out);

/* labels.txt line `index` ("" when out of range). */
const char *edgevit_label(const edgevit_model *model, int index);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVIT_H_ */
