// libFuzzer: a file's bytes through the JPEG / PNG decoder and the preprocessing of a bundle's input spec (the
// spec picked by the file's last byte), as edgevit_run_file does. Limits as the default but 16 megapixels / 256
// MiB, so a header that claims a large image is refused and one within them decodes in the fuzzer's memory.
#include <cstdio>

#include "internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  edgevit::image_limits() = {16'000'000, 256u << 20};
  FILE *file = fmemopen(const_cast<uint8_t *>(data), size, "rb");
  if (!file) return 0;
  static edgevit::DecodedImage decoded;
  static edgevit::Preprocess preprocess;
  static std::vector<uint8_t> out;
  const uint8_t pick = size ? data[size - 1] : 0;
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  const int crop = pick & 1 ? 224 : 16;
  preprocess.configure(crop, crop + (pick & 2 ? 32 : pick >> 4), mean, std,
                       pick & 4 ? "bilinear" : "bicubic", pick & 8 ? "uint8" : "float32");
  try {
    edgevit::decode_image(file, "fuzz", decoded);
    out.resize(preprocess.output_bytes());
    preprocess.apply(decoded.view(), out.data());
  } catch (const edgevit::Error &) {
  }
  std::fclose(file);
  return 0;
}
