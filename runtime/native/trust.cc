// Signed bundles: the board's trust store (`.pub` lines) and the Ed25519 signature of manifest.json in
// manifest.json.sig, verified with libsodium before anything of the bundle is read (README, "Signed bundles").
#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>

#include "internal.h"

namespace edgevit {
namespace {

constexpr const char *kSystemStore = "/etc/edgevit/trusted_keys";

std::vector<std::string> split_spaces(const std::string &line) {
  std::vector<std::string> fields;
  size_t at = 0;
  while (true) {
    size_t end = line.find(' ', at);
    fields.push_back(line.substr(at, end == std::string::npos ? std::string::npos : end - at));
    if (end == std::string::npos) return fields;
    at = end + 1;
  }
}

// Standard base64 (with padding) of exactly `bytes` bytes into `out`; false otherwise.
bool from_base64(const std::string &text, unsigned char *out, size_t bytes) {
  size_t length = 0;
  const char *end = nullptr;
  return sodium_base642bin(out, bytes, text.data(), text.size(), nullptr, &length, &end,
                           sodium_base64_VARIANT_ORIGINAL) == 0 &&
         length == bytes && end == text.data() + text.size();
}

TrustedKey make_key(const unsigned char *key, const std::string &name) {
  TrustedKey out;
  std::copy(key, key + sizeof(out.key), out.key);
  out.name = name;
  out.id = sha256_hex(key, sizeof(out.key)).substr(0, 16);
  return out;
}

bool exists(const std::string &path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

}  // namespace

std::string trust_store_path(const char *option) {
  if (option && *option) return option;
  const char *env = std::getenv("EDGEVIT_TRUSTED_KEYS");
  if (env && *env) return env;
  return exists(kSystemStore) ? kSystemStore : "";
}

std::vector<TrustedKey> parse_trust_store(const std::string &text, const std::string &where) {
  if (sodium_init() < 0) throw Error("libsodium cannot be initialised");
  std::vector<TrustedKey> keys;
  size_t at = 0;
  for (int number = 1; at < text.size(); ++number) {
    size_t end = text.find('\n', at);
    std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? text.size() : end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields = split_spaces(line);
    unsigned char key[crypto_sign_PUBLICKEYBYTES];
    if (fields.size() != 3 || fields[0] != "ed25519" || fields[2].empty() || !from_base64(fields[1], key, sizeof(key)))
      throw Error("trust store " + where + " line " + std::to_string(number) +
                  " is not 'ed25519 <base64 public key> <name>'");
    keys.push_back(make_key(key, fields[2]));
  }
  return keys;
}

TrustedKey verify_signature(const std::string &dir, const std::string &manifest, const std::vector<TrustedKey> &store) {
  if (sodium_init() < 0) throw Error("libsodium cannot be initialised");
  const std::string path = dir + "/manifest.json.sig";
  if (!exists(path)) {
    std::string names;
    for (const TrustedKey &k : store) names += (names.empty() ? "" : ", ") + k.shown();
    throw Error("bundle " + dir + " is not signed; trusted keys: " + (names.empty() ? "none" : names));
  }
  std::string line = read_file(path);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  std::vector<std::string> fields = split_spaces(line);
  unsigned char key[crypto_sign_PUBLICKEYBYTES], signature[crypto_sign_BYTES];
  if (fields.size() != 4 || fields[0] != "ed25519" || fields[3].empty() || line.find('\n') != std::string::npos ||
      !from_base64(fields[1], key, sizeof(key)) || !from_base64(fields[2], signature, sizeof(signature)))
    throw Error("bundle " + dir + ": manifest.json.sig is not 'ed25519 <base64 public key> <base64 signature> <name>'");
  const TrustedKey signer = make_key(key, fields[3]);
  bool trusted = false;
  for (const TrustedKey &k : store) trusted = trusted || sodium_memcmp(k.key, key, sizeof(key)) == 0;
  if (!trusted) throw Error("bundle " + dir + " is signed by " + signer.shown() + ", which is not a trusted key");
  if (crypto_sign_verify_detached(signature, reinterpret_cast<const unsigned char *>(manifest.data()), manifest.size(),
                                  key) != 0)
    throw Error("bundle " + dir + ": signature by " + signer.shown() + " does not match manifest.json");
  return signer;
}

}  // namespace edgevit
