// The C API of edgevit.h on the TVM runtime C++ API: a bundle verified as runtime/bundle.py verifies
// it, its Relax VM with the pooled allocator, and input / output buffers allocated once at open.
#include "edgevit.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <dlfcn.h>
#include <sys/stat.h>

#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include "internal.h"

namespace ffi = tvm::ffi;
using edgevit::Error;

namespace {

thread_local std::string last_error;

std::string first_line(const std::string &text) { return text.substr(0, text.find('\n')); }

// ---- the manifest (runtime/manifest.py, docs/manifest.md) -------------------------------------

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
  int64_t integer(const char *name) const {
    auto v = get(name).as<int64_t>();
    if (!v) fail(std::string("field '") + name + "' is not an integer");
    return *v;
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

  [[noreturn]] void fail(const std::string &what) const {
    throw Error("bundle " + bundle_ + ": manifest does not match schema 1 (" + where_ + " " + what + ")");
  }

 private:
  ffi::json::Object object_;
  std::string where_, bundle_;
};

struct Manifest {
  std::string model, output = "logits", dtype, interpolation, preset, quant, arch, device;
  int64_t num_classes = 0, embed_dim = 0, size = 0, resize = 0;
  std::vector<double> mean, std;
  std::vector<int> tome;
  std::vector<std::string> features;
  std::vector<std::pair<std::string, std::string>> files;  // name -> sha256, manifest order
};

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Manifest read_manifest(const std::string &dir) {
  std::string path = dir + "/manifest.json";
  struct stat info;
  if (stat(path.c_str(), &info) != 0) throw Error(dir + " is not an edgevit bundle (no manifest.json)");
  ffi::String parse_error;
  ffi::json::Value root = ffi::json::Parse(read_file(path), &parse_error);
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
  m.num_classes = model.integer("num_classes");
  m.embed_dim = model.integer("embed_dim");
  if (model.has("output")) m.output = model.text("output");
  if (m.output != "logits" && m.output != "features") model.fail("output '" + m.output + "' is not logits or features");

  Fields input = top.object("input");
  input.allow({"shape", "dtype", "layout", "mean", "std", "resize", "crop_pct", "interpolation"});
  std::vector<double> shape = input.numbers("shape");
  if (shape.size() != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] != shape[3] || shape[2] < 1)
    input.fail("shape is not [1, 3, H, H]");
  m.size = int64_t(shape[2]);
  m.dtype = input.text("dtype");
  if (m.dtype != "float32" && m.dtype != "uint8") input.fail("dtype '" + m.dtype + "' is not float32 or uint8");
  if (input.text("layout") != "NCHW") input.fail("layout is not NCHW");
  m.mean = input.numbers("mean");
  m.std = input.numbers("std");
  if (m.mean.size() != 3 || m.std.size() != 3) input.fail("mean / std do not have 3 channels");
  m.resize = input.integer("resize");
  if (m.resize < m.size) input.fail("resize is smaller than the crop");
  input.number("crop_pct");
  m.interpolation = input.text("interpolation");
  if (m.interpolation != "bicubic" && m.interpolation != "bilinear")
    input.fail("interpolation '" + m.interpolation + "' is not bicubic or bilinear");

  Fields tome = top.object("tome");
  tome.allow({"schedule", "tokens_per_block", "gflops"});
  for (double r : tome.numbers("schedule")) m.tome.push_back(int(r));
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

// ---- the checks before any model code is loaded (runtime/bundle.py) ---------------------------

void verify(const std::string &dir, const Manifest &m) {
  for (const auto &[name, expected] : m.files) {
    std::string path = dir + "/" + name;
    struct stat info;
    if (stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) throw Error("bundle " + dir + ": " + name + " is missing");
    if (edgevit::sha256_file(path) != expected)
      throw Error("bundle " + dir + ": " + name + " is corrupt or truncated (sha256 mismatch)");
  }
  std::string arch = edgevit::machine_arch();
  if (m.arch != arch)
    throw Error("bundle " + dir + " was built for " + m.arch + " (target " + m.preset + "); this machine is " + arch);
  std::set<std::string> have = edgevit::cpu_features();
  std::set<std::string> missing;
  for (const auto &f : m.features) if (!have.count(f)) missing.insert(f);
  if (!missing.empty()) {
    std::string names;
    for (const auto &f : missing) names += (names.empty() ? "" : ", ") + f;
    throw Error("bundle " + dir + " (target " + m.preset + ") needs CPU feature(s) " + names +
                " that this CPU does not have; compile for a matching target (e.g. rpi4 or aarch64 instead of rpi5)");
  }
  if (m.device != "cpu" && m.device != "cuda")
    throw Error("bundle " + dir + " (target " + m.preset + ") runs on " + m.device + ", which this runner does not know");
}

// TVM's CUDA device API lives in the bundle's lib/libtvm_runtime_cuda.so, which links the CUDA runtime
// and driver; a board without them gets their name in one line instead of a loader error.
void load_cuda_runtime(const std::string &dir, const std::string &preset) {
  std::string path = dir + "/lib/libtvm_runtime_cuda.so";
  struct stat info;
  if (stat(path.c_str(), &info) != 0)
    throw Error("bundle " + dir + " (target " + preset + ") has no lib/libtvm_runtime_cuda.so; rebuild it without --no-native");
  if (dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) != nullptr) return;
  std::string why = dlerror();
  // "<dir>/lib/libtvm_runtime_cuda.so: libcudart.so.13: cannot open shared object file: ..."
  size_t missing = why.find(": cannot open shared object file");
  if (missing != std::string::npos) {
    std::string head = why.substr(0, missing);
    std::string library = head.substr(head.rfind(": ") == std::string::npos ? 0 : head.rfind(": ") + 2);
    throw Error("bundle " + dir + " (target " + preset + ") needs " + library +
                " (linked by TVM's libtvm_runtime_cuda.so; part of the NVIDIA driver or CUDA runtime), which this machine does not have");
  }
  throw Error("bundle " + dir + ": cannot load lib/libtvm_runtime_cuda.so (" + first_line(why) + ")");
}

// TVM's CUDA module asks this global for the binary of each kernel source when model.so loads: the
// bundle's nvcc-built device/<sha256 of the source>.fatbin (runtime/cuda_kernels.py does the same).
void serve_precompiled_kernels(const std::string &dir) {
  ffi::Function::SetGlobal("tvm_callback_cuda_compile", ffi::Function::FromTyped([dir](ffi::String source) {
    std::string path = dir + "/device/" + edgevit::sha256_hex(std::string(source)) + ".fatbin";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("bundle " + dir + " has no precompiled kernel for a CUDA module (rebuild the bundle)");
    std::ostringstream data;
    data << in.rdbuf();
    return ffi::Bytes(data.str());
  }), true);
}

std::vector<std::string> read_labels(const std::string &dir) {
  std::vector<std::string> labels;
  std::ifstream in(dir + "/labels.txt");
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  return labels;
}

int default_threads() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

}  // namespace

struct edgevit_model {
  std::string dir;
  Manifest manifest;
  std::vector<std::string> labels;
  edgevit_info info{};
  edgevit::Preprocess preprocess;
  edgevit::DecodedImage decoded;
  std::optional<ffi::Module> library, vm;  // set by open_model (no default constructors)
  std::optional<ffi::Function> main;
  std::optional<ffi::Tensor> input;
  size_t input_bytes = 0;
  std::vector<uint8_t> staging;  // CUDA bundles: the host copy of the input, sent to the device per run
  std::optional<ffi::Function> copy_from_bytes, copy_to_bytes;  // CUDA bundles: host <-> device
  std::vector<float> output;

  bool on_device() const { return !staging.empty(); }

  void run() {
    if (on_device()) (*copy_from_bytes)(*input, static_cast<void *>(staging.data()), staging.size());
    ffi::Tensor result = (*main)(*input).cast<ffi::Tensor>();
    const DLTensor *t = result.GetDLTensorPtr();
    int64_t n = 1;
    for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
    if (t->dtype.code != kDLFloat || t->dtype.bits != 32 || size_t(n) != output.size())
      throw Error("bundle " + dir + ": model.so returns " + std::to_string(n) + " values, the manifest says " +
                  std::to_string(output.size()) + " float32");
    if (t->device.device_type == kDLCPU)
      std::memcpy(output.data(), static_cast<const char *>(t->data) + t->byte_offset, output.size() * sizeof(float));
    else
      (*copy_to_bytes)(result, static_cast<void *>(output.data()), output.size() * sizeof(float));
  }
};

namespace {

// Runs `body` and turns any failure into -1 plus last_error (C callers never see an exception).
template <typename Body>
int guarded(Body body) {
  try {
    body();
    last_error.clear();
    return 0;
  } catch (const Error &e) {
    last_error = e.what();
  } catch (const ffi::Error &e) {
    last_error = "TVM runtime: " + first_line(std::string(e.message()));
  } catch (const std::exception &e) {
    last_error = e.what();
  }
  return -1;
}

void open_model(edgevit_model &m, const char *bundle_dir, int num_threads) {
  m.dir = bundle_dir;
  while (m.dir.size() > 1 && m.dir.back() == '/') m.dir.pop_back();
  struct stat info;
  if (stat(m.dir.c_str(), &info) != 0) throw Error("bundle not found: " + m.dir);
  if (!S_ISDIR(info.st_mode)) throw Error("bundle " + m.dir + ": the native runner takes a bundle directory (unpack the .tar first)");
  if (num_threads < 0) throw Error("threads must be at least 1 (0: every CPU), got " + std::to_string(num_threads));
  m.manifest = read_manifest(m.dir);
  verify(m.dir, m.manifest);
  const Manifest &man = m.manifest;
  m.labels = read_labels(m.dir);
  auto &p = m.preprocess;
  p.size = int(man.size);
  p.resize = int(man.resize);
  p.bicubic = man.interpolation == "bicubic";
  p.raw_uint8 = man.dtype == "uint8";
  for (int c = 0; c < 3; ++c) p.mean[c] = float(man.mean[c]), p.std[c] = float(man.std[c]);
  m.output.assign(size_t(man.output == "logits" ? man.num_classes : man.embed_dim), 0.0f);
  m.info = {man.model.c_str(), man.preset.c_str(), man.quant.c_str(), man.output.c_str(), man.dtype.c_str(),
            man.tome.data(), int(man.tome.size()), p.size, int(m.output.size())};

  // TVM reads TVM_NUM_THREADS when it starts its pool, at the first parallel kernel.
  setenv("TVM_NUM_THREADS", std::to_string(num_threads ? num_threads : default_threads()).c_str(), 1);
  const bool cuda = man.device == "cuda";
  if (cuda) {
    load_cuda_runtime(m.dir, man.preset);
    serve_precompiled_kernels(m.dir);
  }
  try {
    m.library = ffi::Module::LoadFromFile(m.dir + "/model.so");
  } catch (const ffi::Error &e) {
    throw Error("bundle " + m.dir + ": cannot load model.so (" + first_line(std::string(e.message())) + ")");
  }
  auto load = (*m.library)->GetFunction("vm_load_executable");
  if (!load) throw Error("bundle " + m.dir + ": model.so is not a Relax VM executable");
  m.vm = (*load)().cast<ffi::Module>();
  constexpr int kPooled = 2;
  const DLDevice device{cuda ? kDLCUDA : kDLCPU, 0};
  (*m.vm)->GetFunction("vm_initialization").value()(int(device.device_type), 0, kPooled, int(kDLCPU), 0, kPooled);
  m.main = (*m.vm)->GetFunction("main").value();
  DLDataType dtype = p.raw_uint8 ? DLDataType{kDLUInt, 8, 1} : DLDataType{kDLFloat, 32, 1};
  m.input = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope")(
                ffi::Shape({1, 3, man.size, man.size}), dtype, device, ffi::String("global"))
                .cast<ffi::Tensor>();
  m.input_bytes = size_t(3) * man.size * man.size * (p.raw_uint8 ? 1 : 4);
  if (cuda) {
    m.staging.assign(m.input_bytes, 0);
    m.copy_from_bytes = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
    m.copy_to_bytes = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  }
}

void *input_data(edgevit_model *m) { return m->on_device() ? m->staging.data() : m->input->data_ptr(); }

}  // namespace

extern "C" {

const char *edgevit_last_error(void) { return last_error.c_str(); }

edgevit_model *edgevit_open(const char *bundle_dir, int num_threads) {
  auto m = std::make_unique<edgevit_model>();
  if (guarded([&] { open_model(*m, bundle_dir ? bundle_dir : "", num_threads); }) != 0) return nullptr;
  return m.release();
}

void edgevit_close(edgevit_model *model) { delete model; }

const edgevit_info *edgevit_get_info(const edgevit_model *model) { return &model->info; }

int edgevit_preprocess_image(edgevit_model *m, const uint8_t *rgb, int width, int height, int stride) {
  return guarded([&] { m->preprocess.apply({rgb, width, height, stride}, input_data(m)); });
}

int edgevit_preprocess_file(edgevit_model *m, const char *path) {
  return guarded([&] {
    edgevit::decode_image(path, m->decoded);
    m->preprocess.apply(m->decoded.view(), input_data(m));
  });
}

int edgevit_run(edgevit_model *m) { return guarded([&] { m->run(); }); }

int edgevit_run_image(edgevit_model *m, const uint8_t *rgb, int width, int height, int stride) {
  return edgevit_preprocess_image(m, rgb, width, height, stride) == 0 ? edgevit_run(m) : -1;
}

int edgevit_run_file(edgevit_model *m, const char *path) {
  return edgevit_preprocess_file(m, path) == 0 ? edgevit_run(m) : -1;
}

int edgevit_run_tensor(edgevit_model *m, const void *data, size_t bytes) {
  return guarded([&] {
    if (bytes != m->input_bytes)
      throw Error("input of " + std::to_string(bytes) + " bytes; the model takes " + std::to_string(m->input_bytes));
    std::memcpy(input_data(m), data, bytes);
    m->run();
  });
}

void *edgevit_input(edgevit_model *m, size_t *bytes) {
  if (bytes) *bytes = m->input_bytes;
  return input_data(m);
}

const float *edgevit_output(const edgevit_model *m, size_t *count) {
  if (count) *count = m->output.size();
  return m->output.data();
}

int edgevit_top_k(const edgevit_model *m, int k, edgevit_class *out) {
  if (m->manifest.output != "logits") {
    last_error = "bundle " + m->dir + ": its model outputs features, top-k needs a classifier";
    return -1;
  }
  const std::vector<float> &row = m->output;
  const int n = std::min<int>(std::max(k, 0), int(row.size()));
  if (n == 0) return 0;
  double peak = *std::max_element(row.begin(), row.end()), total = 0.0;
  for (float v : row) total += std::exp(double(v) - peak);
  // The k best indices, ties by lower index; a fixed-size selection (no allocation).
  for (int i = 0; i < n; ++i) out[i] = {-1, 0.0f};
  for (int c = 0; c < int(row.size()); ++c) {
    int pos = n;
    while (pos > 0 && (out[pos - 1].index < 0 || row[c] > row[out[pos - 1].index])) --pos;
    if (pos == n) continue;
    for (int j = n - 1; j > pos; --j) out[j] = out[j - 1];
    out[pos] = {c, 0.0f};
  }
  for (int i = 0; i < n; ++i) out[i].probability = float(std::exp(double(row[out[i].index]) - peak) / total);
  return n;
}

const char *edgevit_label(const edgevit_model *m, int index) {
  return index >= 0 && index < int(m->labels.size()) ? m->labels[index].c_str() : "";
}

}  // extern "C"
