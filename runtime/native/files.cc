// Whole files and their SHA-256 (libsodium's crypto_hash_sha256, the same digest as Python's hashlib).
#include <sodium.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "internal.h"

namespace edgevit {
namespace {

std::string hex(const unsigned char *digest) {
  static const char digits[] = "0123456789abcdef";
  std::string out(crypto_hash_sha256_BYTES * 2, '0');
  for (size_t i = 0; i < crypto_hash_sha256_BYTES; ++i) {
    out[2 * i] = digits[digest[i] >> 4];
    out[2 * i + 1] = digits[digest[i] & 15];
  }
  return out;
}

}  // namespace

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string sha256_hex(const void *data, size_t bytes) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, static_cast<const unsigned char *>(data), bytes);
  return hex(digest);
}

std::string sha256_file(const std::string &path) {
  FILE *file = std::fopen(path.c_str(), "rb");
  if (!file) throw Error("cannot read " + path + ": " + std::strerror(errno));
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  unsigned char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), file)) > 0) crypto_hash_sha256_update(&state, chunk, got);
  bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) throw Error("cannot read " + path);
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state, digest);
  return hex(digest);
}

}  // namespace edgevit
