// libFuzzer: the labels CSV reader of edgevit-run's eval.
#include <stdexcept>
#include <string>

#include "csv.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try {
    edgevit::parse_labels_csv(std::string(reinterpret_cast<const char *>(data), size), "fuzz");
  } catch (const std::runtime_error &) {
  }
  return 0;
}
