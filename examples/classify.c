/* Classify one image with an edgevit bundle and print its top-5 labels: edgevit.h (runtime/native/) is all it uses.
 *
 *     classify BUNDLE IMAGE   (built into BUNDLE/bin/ so it finds BUNDLE/lib/, see README)
 */
#include <stdio.h>

#include "edgevit.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s BUNDLE IMAGE\n", argv[0]);
    return 2;
  }
  edgevit_model *model = edgevit_open(argv[1], 0);
  if (!model) {
    fprintf(stderr, "error: %s\n", edgevit_last_error());
    return 2;
  }
  edgevit_class best[5];
  int n = edgevit_run_file(model, argv[2]) == 0 ? edgevit_top_k(model, 5, best) : -1;
  if (n < 0) {
    fprintf(stderr, "error: %s\n", edgevit_last_error());
    edgevit_close(model);
    return 2;
  }
  for (int i = 0; i < n; ++i)
    printf("%d. %s (%d) %.4f\n", i + 1, edgevit_label(model, best[i].index), best[i].index, best[i].probability);
  edgevit_close(model);
  return 0;
}
