// libFuzzer: the core's line readers: labels.txt and a trust store's `.pub` lines.
#include <string>

#include "internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string text(reinterpret_cast<const char *>(data), size);
  edgevit::parse_labels(text);
  try {
    edgevit::parse_trust_store(text, "fuzz");
  } catch (const edgevit::Error &) {
  }
  return 0;
}
