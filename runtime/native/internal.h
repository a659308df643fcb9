// Pieces of the native runtime shared between its files (not part of the C API).
#ifndef EDGEVIT_INTERNAL_H_
#define EDGEVIT_INTERNAL_H_

#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgevit {

// A failure caused by input (files, bundle, image): its message is the one line a user sees.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Hex sha256 (FIPS 180-4) of a file; throws Error when it cannot be read.
std::string sha256_file(const std::string &path);
std::string sha256_hex(const std::string &data);  // of bytes in memory

// "x86_64" / "aarch64", and this CPU's features in the kernel's /proc/cpuinfo names
// (runtime/cpu_features.py uses the same names).
std::string machine_arch();
std::set<std::string> cpu_features();

// An RGB image, HWC uint8, rows `stride` bytes apart.
struct Rgb {
  const uint8_t *data;
  int width, height, stride;
};

// A decoded file; `pixels` keeps its capacity between calls.
struct DecodedImage {
  std::vector<uint8_t> pixels;
  std::vector<uint8_t *> rows;  // libpng's row pointers
  int width = 0, height = 0;
  Rgb view() const { return {pixels.data(), width, height, width * 3}; }
};

// Decode a JPEG or PNG into RGB as Pillow's Image.open(...).convert("RGB") does.
void decode_image(const std::string &path, DecodedImage &out);

// The manifest's input transform (runtime/preprocess.py), with its scratch buffers.
struct Preprocess {
  int size = 224, resize = 256;
  bool bicubic = true, raw_uint8 = false;
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
  // Pillow's resampling taps of one axis: output pixel i reads `count[i]` inputs from `first[i]`,
  // weights k[i * ksize ...] in 22-bit fixed point.
  struct Taps {
    std::vector<int> first, count;
    std::vector<double> weights;
    std::vector<int32_t> k;
    int ksize = 0;
  };
  Taps horizontal, vertical;
  std::vector<uint8_t> pass1, pass2;  // resampling intermediates, kept between calls

  // Resize the short side to `resize`, center crop `size`, write CHW uint8 or normalized float32.
  void apply(const Rgb &image, void *out);
};

}  // namespace edgevit

#endif  // EDGEVIT_INTERNAL_H_
