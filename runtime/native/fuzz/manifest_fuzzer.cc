// libFuzzer: manifest.json's text through the core's manifest reader (the schema checks after TVM's JSON parser).
#include <string>

#include "internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  try {
    edgevit::parse_manifest(std::string(reinterpret_cast<const char *>(data), size), "fuzz");
  } catch (const edgevit::Error &) {
  }
  return 0;
}
