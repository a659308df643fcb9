// Pieces of the native core shared between its files (not part of the C API; the fuzz harnesses call them).
#ifndef EDGEVIT_INTERNAL_H_
#define EDGEVIT_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace edgevit {

// A failure caused by input (files, bundle, image): its message is the one line a user sees.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- files and hashes (libsodium's SHA-256) ----------------------------------------------------

std::string read_file(const std::string &path);                // whole file; Error when unreadable
std::string sha256_file(const std::string &path);              // hex; Error when unreadable
std::string sha256_hex(const void *data, size_t bytes);        // hex, of bytes in memory

// ---- this machine ------------------------------------------------------------------------------

// "x86_64" / "aarch64", and this CPU's features in the kernel's /proc/cpuinfo names (the names manifests list).
std::string machine_arch();
std::set<std::string> cpu_features();

// ---- the manifest (docs/manifest.md; runtime/manifest.py is the typed definition compile writes) --------

struct Manifest {
  std::string model, output = "logits", dtype, interpolation, preset, quant, arch, device;
  int64_t num_classes = 0, embed_dim = 0, size = 0, resize = 0;
  std::vector<double> mean, std;
  std::vector<int> tome;
  std::vector<std::string> features;
  std::vector<std::pair<std::string, std::string>> files;  // name -> sha256, manifest order
};

// Parse manifest.json's text; `dir` names the bundle in messages. Error on anything schema 1 does not say.
Manifest parse_manifest(const std::string &json, const std::string &dir);

// labels.txt: one label per line (a trailing '\r' dropped).
std::vector<std::string> parse_labels(const std::string &text);

// ---- signatures (docs/signing.md) --------------------------------------------------------------

struct TrustedKey {
  std::string name, id;  // id: first 16 hex digits of sha256(public key)
  unsigned char key[32];
  std::string shown() const { return name + " (" + id + ")"; }
};

// The trust store to use: `option` when given, else $EDGEVIT_TRUSTED_KEYS, else /etc/edgevit/trusted_keys when
// it exists; "" when none is configured.
std::string trust_store_path(const char *option);
// `.pub` lines of a trust store file (`where` names it in messages); Error naming the line of a malformed one.
std::vector<TrustedKey> parse_trust_store(const std::string &text, const std::string &where);
// Refuse bundle `dir` unless manifest.json.sig holds a valid signature of `manifest` by a key of `store`;
// returns that key.
TrustedKey verify_signature(const std::string &dir, const std::string &manifest, const std::vector<TrustedKey> &store);

// ---- images ------------------------------------------------------------------------------------

// Interleaved 8-bit pixels, rows `stride` bytes apart (negative: bottom-up), RGB or BGR.
struct Pixels {
  const uint8_t *data;
  int width, height;
  ptrdiff_t stride;
  bool bgr = false;
};

// Bounds on decoding, checked from the header before any large allocation (edgevit_set_image_limits).
struct ImageLimits {
  uint64_t max_pixels = 100'000'000;
  uint64_t max_bytes = uint64_t(1) << 30;
};
ImageLimits &image_limits();

// A decoded file; `pixels` keeps its capacity between calls.
struct DecodedImage {
  std::vector<uint8_t> pixels;
  std::vector<uint8_t *> rows;  // libpng's row pointers
  int width = 0, height = 0;
  Pixels view() const { return {pixels.data(), width, height, ptrdiff_t(width) * 3}; }
};

// Decode a JPEG or PNG into RGB as Pillow's Image.open(...).convert("RGB") does; `name` is used in messages.
void decode_image(const std::string &path, DecodedImage &out);
void decode_image(FILE *file, const std::string &name, DecodedImage &out);

// The manifest's input transform, with its scratch buffers.
struct Preprocess {
  int size = 224, resize = 256;
  bool bicubic = true, raw_uint8 = false;
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
  // Pillow's resampling taps of the output range of one axis: output pixel first_out + i reads `count[i]`
  // inputs from `first[i]`, weights k[i * ksize ...] in 22-bit fixed point.
  struct Taps {
    std::vector<int> first, count;
    std::vector<double> weights;
    std::vector<int32_t> k;
    int ksize = 0, first_out = 0;
  };
  Taps horizontal, vertical;
  std::vector<uint8_t> pass1, pass2;  // resampling intermediates, kept between calls

  // The spec's fields, checked (Error on a size, mean / std or name no transform has).
  void configure(int size, int resize, const float mean[3], const float std[3], const std::string &interpolation,
                 const std::string &dtype);
  size_t output_bytes() const { return size_t(3) * size * size * (raw_uint8 ? 1 : 4); }
  // Resize the short side to `resize`, center crop `size`, write CHW uint8 or normalized float32.
  void apply(const Pixels &image, void *out);
};

}  // namespace edgevit

#endif  // EDGEVIT_INTERNAL_H_
