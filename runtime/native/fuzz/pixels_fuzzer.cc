// libFuzzer: the C API's image entry point (edgevit_preprocessor_image, what edgevit_run_image and the Python
// binding's arrays go through) with arbitrary sizes, strides (negative too), channel orders and input specs.
// Input: a 16-byte header, then the pixel buffer; the image must fit the buffer, as it does for a real caller.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "edgevit.h"

namespace {

template <typename T>
T take(const uint8_t *&data) {
  T value;
  std::memcpy(&value, data, sizeof(T));
  data += sizeof(T);
  return value;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  constexpr size_t kHeader = 16;
  if (size < kHeader) return 0;
  const uint8_t *at = data;
  const int width = take<uint16_t>(at), height = take<uint16_t>(at);
  const int pad = take<int16_t>(at);  // stride = sign(pad) * (width * 3 + |pad| % 64)
  const uint8_t flags = take<uint8_t>(at), crop = take<uint8_t>(at);
  const uint16_t resize = take<uint16_t>(at);
  at += kHeader - 10;
  const ptrdiff_t magnitude = ptrdiff_t(width) * 3 + std::abs(pad) % 64;
  const ptrdiff_t stride = pad < 0 ? -magnitude : magnitude;
  const size_t pixels = size - kHeader;
  if (height == 0 || size_t(magnitude) * (height - 1) + size_t(width) * 3 > pixels) {
    if (width != 0) return 0;  // width 0 still goes through: it must be refused
  }
  edgevit_input_spec spec{1 + crop % 64, 1 + crop % 64 + resize % 300, {0.5f, 0.4f, 0.3f}, {0.2f, 0.3f, 0.4f},
                          flags & 1 ? "bilinear" : "bicubic", flags & 2 ? "uint8" : "float32"};
  edgevit_preprocessor *p = edgevit_preprocessor_new(&spec);
  if (!p) return 0;
  std::vector<uint8_t> out(edgevit_preprocessor_bytes(p));
  const uint8_t *first_row = pad < 0 && height > 0 ? at + magnitude * (height - 1) : at;
  edgevit_preprocessor_image(p, width ? first_row : nullptr, width, height, stride,
                             flags & 4 ? EDGEVIT_BGR : EDGEVIT_RGB, out.data());
  edgevit_preprocessor_free(p);
  return 0;
}
