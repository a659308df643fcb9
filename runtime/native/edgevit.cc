// The C API of edgevit.h on the TVM runtime C++ API: a bundle verified before anything of it is loaded
// (signature, sha256, architecture, CPU features), its Relax VM with the pooled allocator, and input / output
// buffers allocated once at open.
#include "edgevit.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
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
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include "internal.h"

#ifndef EDGEVIT_VERSION
#define EDGEVIT_VERSION "0.1.0"
#endif
#ifndef EDGEVIT_TVM_VERSION
#define EDGEVIT_TVM_VERSION "unknown"
#endif

namespace ffi = tvm::ffi;
using edgevit::Error;
using edgevit::Manifest;

namespace {

thread_local std::string last_error;

std::string first_line(const std::string &text) { return text.substr(0, text.find('\n')); }

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
    std::string path = dir + "/device/" + edgevit::sha256_hex(source.data(), source.size()) + ".fatbin";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("bundle " + dir + " has no precompiled kernel for a CUDA module (rebuild the bundle)");
    std::ostringstream data;
    data << in.rdbuf();
    return ffi::Bytes(data.str());
  }), true);
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
  std::string signed_by;
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

// The bundle's manifest.json, verified: signed by a trusted key when a trust store is configured (the
// exact bytes the signature covers are the ones parsed), every listed file with its sha256, this machine.
Manifest verified_manifest(edgevit_model &m, const char *trusted_keys) {
  std::string path = m.dir + "/manifest.json";
  struct stat info;
  if (stat(path.c_str(), &info) != 0) throw Error(m.dir + " is not an edgevit bundle (no manifest.json)");
  std::string text = edgevit::read_file(path);
  std::string store = edgevit::trust_store_path(trusted_keys);
  if (!store.empty()) {
    std::string keys;
    try {
      keys = edgevit::read_file(store);
    } catch (const Error &) {
      throw Error("cannot read the trust store " + store);
    }
    m.signed_by = edgevit::verify_signature(m.dir, text, edgevit::parse_trust_store(keys, store)).shown();
  }
  Manifest manifest = edgevit::parse_manifest(text, m.dir);
  verify(m.dir, manifest);
  return manifest;
}

void open_model(edgevit_model &m, const char *bundle_dir, const edgevit_options &options) {
  m.dir = bundle_dir;
  while (m.dir.size() > 1 && m.dir.back() == '/') m.dir.pop_back();
  struct stat info;
  if (stat(m.dir.c_str(), &info) != 0) throw Error("bundle not found: " + m.dir);
  if (!S_ISDIR(info.st_mode)) throw Error("bundle " + m.dir + ": the native core takes a bundle directory (unpack the .tar first)");
  if (options.num_threads < 0)
    throw Error("threads must be at least 1 (0: every CPU), got " + std::to_string(options.num_threads));
  m.manifest = verified_manifest(m, options.trusted_keys);
  const Manifest &man = m.manifest;
  m.labels = edgevit::parse_labels(edgevit::read_file(m.dir + "/labels.txt"));
  auto &p = m.preprocess;
  float mean[3], std[3];
  for (int c = 0; c < 3; ++c) mean[c] = float(man.mean[c]), std[c] = float(man.std[c]);
  try {
    p.configure(int(man.size), int(man.resize), mean, std, man.interpolation, man.dtype);
  } catch (const Error &e) {
    throw Error("bundle " + m.dir + ": manifest input: " + e.what());
  }
  m.output.assign(size_t(man.output == "logits" ? man.num_classes : man.embed_dim), 0.0f);
  m.info = {man.model.c_str(), man.preset.c_str(), man.quant.c_str(), man.output.c_str(), man.dtype.c_str(),
            man.tome.data(), int(man.tome.size()), p.size, int(m.output.size()), int(m.labels.size()),
            m.signed_by.c_str(), EDGEVIT_VERSION, EDGEVIT_TVM_VERSION};

  // TVM reads TVM_NUM_THREADS when it starts its pool, at the first parallel kernel.
  setenv("TVM_NUM_THREADS", std::to_string(options.num_threads ? options.num_threads : default_threads()).c_str(), 1);
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
  m.input_bytes = p.output_bytes();
  if (cuda) {
    m.staging.assign(m.input_bytes, 0);
    m.copy_from_bytes = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
    m.copy_to_bytes = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  }
}

void *input_data(edgevit_model *m) { return m->on_device() ? m->staging.data() : m->input->data_ptr(); }

// A fixed pseudo-random input of the model's dtype (pixels for uint8, standard normal for float32).
void fill_example(edgevit_model *m) {
  void *data = input_data(m);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; };
  if (m->preprocess.raw_uint8) {
    for (size_t i = 0; i < m->input_bytes; ++i) static_cast<uint8_t *>(data)[i] = uint8_t(next() >> 56);
    return;
  }
  for (size_t i = 0; i < m->input_bytes / 4; ++i) {  // Box-Muller
    double u = (double(next() >> 11) + 1.0) / 9007199254740993.0, v = double(next() >> 11) / 9007199254740992.0;
    static_cast<float *>(data)[i] = float(std::sqrt(-2.0 * std::log(u)) * std::cos(2 * M_PI * v));
  }
}

// numpy.percentile's default (linear between the closest ranks) of sorted values.
double percentile(const std::vector<double> &sorted, double q) {
  double pos = q / 100.0 * double(sorted.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo));
}

// Peak resident set of this process: VmHWM, which starts afresh at exec (getrusage's ru_maxrss keeps the
// parent's RSS when a large process such as pytest spawns this one).
double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  return 0.0;
}

void bench(edgevit_model *m, int warmup, int repeat, edgevit_bench_result *out) {
  if (warmup < 0 || repeat < 1) throw Error("--warmup must be >= 0 and --repeat >= 1");
  fill_example(m);
  for (int i = 0; i < warmup; ++i) m->run();
  std::vector<double> times_ms(static_cast<size_t>(repeat));
  for (double &t : times_ms) {
    auto start = std::chrono::steady_clock::now();
    m->run();
    t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  double mean = 0.0;
  for (double t : times_ms) mean += t / double(times_ms.size());
  std::sort(times_ms.begin(), times_ms.end());
  *out = {percentile(times_ms, 50), percentile(times_ms, 90), percentile(times_ms, 99), mean, times_ms.front(),
          repeat, peak_rss_mb()};
}

}  // namespace

struct edgevit_preprocessor {
  edgevit::Preprocess preprocess;
  edgevit::DecodedImage decoded;
};

extern "C" {

const char *edgevit_last_error(void) { return last_error.c_str(); }

void edgevit_set_image_limits(uint64_t max_pixels, uint64_t max_bytes) {
  if (max_pixels) edgevit::image_limits().max_pixels = max_pixels;
  if (max_bytes) edgevit::image_limits().max_bytes = max_bytes;
}

edgevit_model *edgevit_open_with(const char *bundle_dir, const edgevit_options *options) {
  auto m = std::make_unique<edgevit_model>();
  const edgevit_options defaults{};
  if (guarded([&] { open_model(*m, bundle_dir ? bundle_dir : "", options ? *options : defaults); }) != 0) return nullptr;
  return m.release();
}

edgevit_model *edgevit_open(const char *bundle_dir, int num_threads) {
  edgevit_options options{};
  options.num_threads = num_threads;
  return edgevit_open_with(bundle_dir, &options);
}

void edgevit_close(edgevit_model *model) { delete model; }

const edgevit_info *edgevit_get_info(const edgevit_model *model) { return &model->info; }

int edgevit_preprocess_image(edgevit_model *m, const uint8_t *pixels, int width, int height, ptrdiff_t stride,
                             edgevit_pixel_order order) {
  return guarded([&] { m->preprocess.apply({pixels, width, height, stride, order == EDGEVIT_BGR}, input_data(m)); });
}

int edgevit_preprocess_file(edgevit_model *m, const char *path) {
  return guarded([&] {
    edgevit::decode_image(path, m->decoded);
    m->preprocess.apply(m->decoded.view(), input_data(m));
  });
}

int edgevit_run(edgevit_model *m) { return guarded([&] { m->run(); }); }

int edgevit_run_image(edgevit_model *m, const uint8_t *pixels, int width, int height, ptrdiff_t stride,
                      edgevit_pixel_order order) {
  return edgevit_preprocess_image(m, pixels, width, height, stride, order) == 0 ? edgevit_run(m) : -1;
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

int edgevit_bench(edgevit_model *m, int warmup, int repeat, edgevit_bench_result *out) {
  return guarded([&] { bench(m, warmup, repeat, out); });
}

edgevit_preprocessor *edgevit_preprocessor_new(const edgevit_input_spec *spec) {
  auto p = std::make_unique<edgevit_preprocessor>();
  int status = guarded([&] {
    if (!spec) throw Error("no input spec");
    p->preprocess.configure(spec->size, spec->resize, spec->mean, spec->std, spec->interpolation ? spec->interpolation : "",
                            spec->dtype ? spec->dtype : "");
  });
  return status == 0 ? p.release() : nullptr;
}

void edgevit_preprocessor_free(edgevit_preprocessor *p) { delete p; }

size_t edgevit_preprocessor_bytes(const edgevit_preprocessor *p) { return p->preprocess.output_bytes(); }

int edgevit_preprocessor_image(edgevit_preprocessor *p, const uint8_t *pixels, int width, int height, ptrdiff_t stride,
                               edgevit_pixel_order order, void *out) {
  return guarded([&] { p->preprocess.apply({pixels, width, height, stride, order == EDGEVIT_BGR}, out); });
}

int edgevit_preprocessor_file(edgevit_preprocessor *p, const char *path, void *out) {
  return guarded([&] {
    edgevit::decode_image(path, p->decoded);
    p->preprocess.apply(p->decoded.view(), out);
  });
}

}  // extern "C"
