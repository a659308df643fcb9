// manifest.json -> the fields the core uses, every other field of schema 1 checked for presence and type
// (as runtime/manifest.py's Manifest.from_dict does), and labels.txt -> its lines.
#include <algorithm>
#include <cmath>
#include <optional>

#include <tvm/ffi/extra/json.h>

#include "internal.h"

namespace ffi = tvm::ffi;

namespace edgevit {
namespace {

// Reads one JSON object of the manifest, naming the field in every complaint, and refuses fields
// that schema 1 does not have (as Manifest.from_dict does).
class Fields {
 public:
  Fields(const ffi::Any &value, std::string where, std::string bundle)
      : where_(std::move(where)), bundle_(std::move(bundle)) {
    auto object = value.as<ffi::json::Object>();
    if (!object) fail("is not an object");
    object_ = *object;
  }

  void allow(std::initializer_list<const char *> required, std::initializer_list<const char *> optional = {}) {
    for (const char *name : required)
      if (object_.find(ffi::String(name)) == object_.end()) fail(std::string("has no field '") + name + "'");
    for (const auto &kv : object_) {
      auto key = kv.first.as<ffi::String>();
      std::string name = key ? std::string(*key) : "?";
      bool known = std::any_of(required.begin(), required.end(), [&](const char *n) { return name == n; }) ||
                   std::any_of(optional.begin(), optional.end(), [&](const char *n) { return name == n; });
      if (!known) fail("has an unknown field '" + name + "'");
    }
  }

  bool has(const char *name) const { return object_.find(ffi::String(name)) != object_.end(); }
  ffi::Any get(const char *name) const { return object_.at(ffi::String(name)); }

  std::string text(const char *name) const {
    auto v = get(name).as<ffi::String>();
    if (!v) fail(std::string("field '") + name + "' is not a string");
    return std::string(*v);
  }
  // An integer in [lo, hi]: sizes the core allocates by are bounded before they are used.
  int64_t integer(const char *name, int64_t lo, int64_t hi) const { return bounded(get(name), name, lo, hi); }
  std::vector<int64_t> integers(const char *name, int64_t lo, int64_t hi) const {
    std::vector<int64_t> out;
    for (const ffi::Any &v : array(name)) out.push_back(bounded(v, name, lo, hi));
    return out;
  }
  double number(const char *name) const {
    ffi::Any v = get(name);
    if (auto i = v.as<int64_t>()) return double(*i);
    if (auto d = v.as<double>()) return *d;
    fail(std::string("field '") + name + "' is not a number");
  }
  ffi::json::Array array(const char *name) const {
    auto v = get(name).as<ffi::json::Array>();
    if (!v) fail(std::string("field '") + name + "' is not a list");
    return *v;
  }
  std::vector<double> numbers(const char *name) const {
    std::vector<double> out;
    for (const ffi::Any &v : array(name)) {
      if (auto i = v.as<int64_t>()) out.push_back(double(*i));
      else if (auto d = v.as<double>()) out.push_back(*d);
      else fail(std::string("field '") + name + "' is not a list of numbers");
    }
    return out;
  }
  std::vector<std::string> texts(const char *name) const {
    std::vector<std::string> out;
    for (const ffi::Any &v : array(name)) {
      auto s = v.as<ffi::String>();
      if (!s) fail(std::string("field '") + name + "' is not a list of strings");
      out.emplace_back(*s);
    }
    return out;
  }
  Fields object(const char *name) const { return Fields(get(name), where_ + "." + name, bundle_); }
  const ffi::json::Object &raw() const { return object_; }

  int64_t bounded(const ffi::Any &value, const char *name, int64_t lo, int64_t hi) const {
    auto v = value.as<int64_t>();
    if (!v) fail(std::string("field '") + name + "' is not an integer");
    if (*v < lo || *v > hi)
      fail(std::string("field '") + name + "' holds " + std::to_string(*v) + ", outside " + std::to_string(lo) + ".." +
           std::to_string(hi));
    return *v;
  }

  [[noreturn]] void fail(const std::string &what) const {
    throw Error("bundle " + bundle_ + ": manifest does not match schema 1 (" + where_ + " " + what + ")");
  }

 private:
  ffi::json::Object object_;
  std::string where_, bundle_;
};

}  // namespace

Manifest parse_manifest(const std::string &json, const std::string &dir) {
  ffi::String parse_error;
  ffi::json::Value root;
  try {
    root = ffi::json::Parse(json, &parse_error);
  } catch (const ffi::Error &e) {
    throw Error("bundle " + dir + ": manifest.json is corrupt (" + std::string(e.message()) + ")");
  }
  if (!parse_error.empty()) throw Error("bundle " + dir + ": manifest.json is corrupt (" + std::string(parse_error) + ")");
  auto object = root.as<ffi::json::Object>();
  auto version = object && object->count(ffi::String("schema_version"))
                     ? object->at(ffi::String("schema_version")).as<int64_t>() : std::nullopt;
  if (version != 1) {
    std::string shown = version ? std::to_string(*version) : "?";
    throw Error("bundle " + dir + ": manifest schema " + shown + " is not the supported version 1");
  }
  Fields top(root, "manifest", dir);
  top.allow({"schema_version", "model", "input", "tome", "quant", "target", "versions", "created_utc"}, {"files"});
  Manifest m;
  Fields model = top.object("model");
  model.allow({"name", "num_classes", "embed_dim", "depth"}, {"output"});
  m.model = model.text("name");
  m.num_classes = model.integer("num_classes", 0, 1 << 24);
  m.embed_dim = model.integer("embed_dim", 1, 1 << 20);
  if (model.has("output")) m.output = model.text("output");
  if (m.output != "logits" && m.output != "features") model.fail("output '" + m.output + "' is not logits or features");

  Fields input = top.object("input");
  input.allow({"shape", "dtype", "layout", "mean", "std", "resize", "crop_pct", "interpolation"});
  std::vector<int64_t> shape = input.integers("shape", 1, 4096);
  if (shape.size() != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] != shape[3])
    input.fail("shape is not [1, 3, H, H]");
  m.size = shape[2];
  m.dtype = input.text("dtype");
  if (m.dtype != "float32" && m.dtype != "uint8") input.fail("dtype '" + m.dtype + "' is not float32 or uint8");
  if (input.text("layout") != "NCHW") input.fail("layout is not NCHW");
  m.mean = input.numbers("mean");
  m.std = input.numbers("std");
  if (m.mean.size() != 3 || m.std.size() != 3) input.fail("mean / std do not have 3 channels");
  for (double v : {m.mean[0], m.mean[1], m.mean[2], m.std[0], m.std[1], m.std[2]})
    if (!(std::fabs(v) <= 1e6)) input.fail("mean / std hold a value that is not a number within +-1e6");
  m.resize = input.integer("resize", 1, 65536);
  if (m.resize < m.size) input.fail("resize is smaller than the crop");
  input.number("crop_pct");
  m.interpolation = input.text("interpolation");
  if (m.interpolation != "bicubic" && m.interpolation != "bilinear")
    input.fail("interpolation '" + m.interpolation + "' is not bicubic or bilinear");

  Fields tome = top.object("tome");
  tome.allow({"schedule", "tokens_per_block", "gflops"});
  for (int64_t r : tome.integers("schedule", 0, 1 << 20)) m.tome.push_back(int(r));
  Fields quant = top.object("quant");
  quant.allow({"mode"}, {"recipe", "layers"});
  m.quant = quant.text("mode");
  Fields target = top.object("target");
  target.allow({"preset", "tvm_target", "arch", "device", "required_cpu_features"});
  m.preset = target.text("preset");
  m.arch = target.text("arch");
  m.device = target.text("device");
  m.features = target.texts("required_cpu_features");
  if (top.has("files")) {
    Fields files = top.object("files");
    for (const auto &kv : files.raw()) {
      auto name = kv.first.as<ffi::String>();
      auto digest = kv.second.as<ffi::String>();
      if (!name || !digest) files.fail("is not a map of file name -> sha256");
      m.files.emplace_back(std::string(*name), std::string(*digest));
    }
  }
  return m;
}

std::vector<std::string> parse_labels(const std::string &text) {
  std::vector<std::string> labels;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(std::move(line));
    at = end == std::string::npos ? text.size() : end + 1;
  }
  return labels;
}

}  // namespace edgevit
