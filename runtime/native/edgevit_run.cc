// edgevit-run: `python -m runtime` without Python, a thin user of edgevit.h. Same commands,
// arguments, output lines and --json keys (runtime/__main__.py, bench.py, evaluate.py).
#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgevit.h"

#ifndef EDGEVIT_VERSION
#define EDGEVIT_VERSION "0.1.0"
#endif
#ifndef EDGEVIT_TVM_VERSION
#define EDGEVIT_TVM_VERSION "unknown"
#endif

namespace {

constexpr const char *kUsage =
    "usage: edgevit-run [--threads N] [--json] {run BUNDLE IMAGE... [--save FILE.npy] | eval BUNDLE --images DIR --labels CSV "
    "[--skip N] [--limit N] | bench BUNDLE [--warmup N] [--repeat N]}";

// A failure a user can act on: main prints "error: <what>" on stderr and exits 2.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command, bundle, images, labels, save;
  std::vector<std::string> positional;  // after the bundle: images, or the hidden commands' operands
  std::optional<int> threads;
  bool json = false;
  long skip = 0, warmup = 10, repeat = 50;
  std::optional<long> limit;
};

long parse_int(const std::string &flag, const char *text) {
  char *end = nullptr;
  errno = 0;
  long value = std::strtol(text, &end, 10);
  if (!*text || *end || errno) throw UserError("argument " + flag + ": invalid int value: '" + text + "'");
  return value;
}

Args parse(int argc, char **argv) {
  Args a;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) throw UserError("argument " + arg + ": expected one argument");
      return argv[++i];
    };
    if (arg == "--json") a.json = true;
    else if (arg == "--threads") a.threads = int(parse_int(arg, value()));
    else if (arg == "--images") a.images = value();
    else if (arg == "--labels") a.labels = value();
    else if (arg == "--save") a.save = value();
    else if (arg == "--skip") a.skip = parse_int(arg, value());
    else if (arg == "--limit") a.limit = parse_int(arg, value());
    else if (arg == "--warmup") a.warmup = parse_int(arg, value());
    else if (arg == "--repeat") a.repeat = parse_int(arg, value());
    else if (arg == "-h" || arg == "--help") { std::puts(kUsage); std::exit(0); }
    else if (arg.size() > 1 && arg[0] == '-') throw UserError("unrecognized argument: " + arg + " (" + kUsage + ")");
    else rest.push_back(arg);
  }
  if (rest.empty()) throw UserError(std::string("a command is required (") + kUsage + ")");
  a.command = rest[0];
  static const char *commands[] = {"run", "eval", "bench", "preprocess"};
  if (std::none_of(std::begin(commands), std::end(commands), [&](const char *c) { return a.command == c; }))
    throw UserError("invalid command '" + a.command + "' (choose from run, eval, bench)");
  if (rest.size() < 2) throw UserError(a.command + ": the BUNDLE argument is required");
  a.bundle = rest[1];
  a.positional.assign(rest.begin() + 2, rest.end());
  bool images_wanted = a.command == "run" || a.command == "preprocess";
  if (images_wanted && a.positional.empty()) throw UserError(a.command + ": at least one IMAGE is required");
  if (!images_wanted && !a.positional.empty()) throw UserError("unrecognized arguments: " + a.positional[0]);
  if (a.command == "eval" && (a.images.empty() || a.labels.empty()))
    throw UserError("eval: the arguments --images and --labels are required");
  if (a.command == "bench" && (a.warmup < 0 || a.repeat < 1)) throw UserError("--warmup must be >= 0 and --repeat >= 1");
  if (a.threads && *a.threads < 1) throw UserError("--threads must be at least 1, got " + std::to_string(*a.threads));
  return a;
}

int threads_of(const Args &a) {
  if (a.threads) return *a.threads;
  cpu_set_t set;
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

// The model, closed when it goes out of scope; a failed open is a UserError.
struct Model {
  edgevit_model *m;
  explicit Model(const Args &a) : m(edgevit_open(a.bundle.c_str(), threads_of(a))) {
    if (!m) throw UserError(edgevit_last_error());
  }
  ~Model() { edgevit_close(m); }
  const edgevit_info &info() const { return *edgevit_get_info(m); }
  void check(int status) const {
    if (status != 0) throw UserError(edgevit_last_error());
  }
};

std::string json_string(const std::string &s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += char(c);
    else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof(buf), "\\u%04x", c); out += buf; }
    else out += char(c);
  }
  return out + "\"";
}

// A JSON number that reads back as exactly `v`, or as Python's round(v, digits) when digits >= 0.
std::string json_number(double v, int digits = -1) {
  if (digits >= 0) v = std::round(v * std::pow(10, digits)) / std::pow(10, digits);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

double l2_norm(const float *v, size_t n) {
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += double(v[i]) * v[i];
  return std::sqrt(total);
}

// The outputs as .npy (float32, [D] for one image, [n, D] for several) in a temp file renamed over `path` last.
void save_npy(const std::string &path, const std::vector<float> &values, size_t rows) {
  size_t cols = values.size() / rows;
  std::string shape = rows == 1 ? "(" + std::to_string(cols) + ",)" : "(" + std::to_string(rows) + ", " +
                                                                          std::to_string(cols) + ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  header.append(63 - (10 + header.size()) % 64, ' ').push_back('\n');  // 10 + header: a multiple of 64
  std::string tmp = path + ".tmp";
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw UserError("--save " + path + ": cannot write it");
  uint16_t length = uint16_t(header.size());
  bool ok = std::fwrite("\x93NUMPY\x01\x00", 1, 8, f) == 8 && std::fwrite(&length, 2, 1, f) == 1 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(values.data(), sizeof(float), values.size(), f) == values.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw UserError("--save " + path + ": cannot write it");
  }
}

void cmd_run(const Args &a) {
  Model model(a);
  bool features = std::strcmp(model.info().output, "features") == 0;
  std::string json;
  std::vector<float> outputs;
  for (const std::string &image : a.positional) {
    model.check(edgevit_run_file(model.m, image.c_str()));
    json += (json.empty() ? "" : ", ") + json_string(image) + ": ";
    size_t count;
    const float *values = edgevit_output(model.m, &count);
    outputs.insert(outputs.end(), values, values + count);
    if (features) {
      double norm = l2_norm(values, count);
      std::printf("%s: embedding of %zu values, L2 norm %.4f\n", image.c_str(), count, norm);
      json += "{\"size\": " + std::to_string(count) + ", \"l2_norm\": " + json_number(norm, 6) + "}";
      continue;
    }
    edgevit_class best[5];
    int n = edgevit_top_k(model.m, 5, best);
    std::printf("%s:\n", image.c_str());
    json += "[";
    for (int r = 0; r < n; ++r) {
      const char *label = edgevit_label(model.m, best[r].index);
      std::printf("  %d. %s (%d) %.4f\n", r + 1, label, best[r].index, best[r].probability);
      json += std::string(r ? ", " : "") + "{\"class\": " + std::to_string(best[r].index) + ", \"label\": " +
              json_string(label) + ", \"score\": " + json_number(best[r].probability, 6) + "}";
    }
    json += "]";
  }
  if (!a.save.empty()) save_npy(a.save, outputs, a.positional.size());
  if (a.json) std::printf("{%s}\n", json.c_str());
}

// Rows `file,label` of the labels CSV after --skip / --limit (runtime/evaluate.py read_labels).
std::vector<std::pair<std::string, long>> read_labels(const Args &a) {
  std::ifstream in(a.labels);
  if (!in) throw UserError("labels file not found: " + a.labels);
  auto split = [](std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> cells;
    std::stringstream s(line);
    for (std::string cell; std::getline(s, cell, ',');) cells.push_back(cell);
    return cells;
  };
  std::string line;
  std::vector<std::string> header = std::getline(in, line) ? split(line) : std::vector<std::string>{};
  auto file_col = std::find(header.begin(), header.end(), "file") - header.begin();
  auto label_col = std::find(header.begin(), header.end(), "label") - header.begin();
  if (file_col == long(header.size()) || label_col == long(header.size()))
    throw UserError("labels " + a.labels + ": needs a header with columns 'file,label'");
  std::vector<std::pair<std::string, long>> rows;
  while (std::getline(in, line)) {
    std::vector<std::string> cells = split(line);
    if (cells.empty()) continue;
    std::string label = size_t(label_col) < cells.size() ? cells[label_col] : "";
    char *end = nullptr;
    long value = std::strtol(label.c_str(), &end, 10);
    if (label.empty() || *end) throw UserError("labels " + a.labels + ": label is not an integer ('" + label + "')");
    rows.emplace_back(size_t(file_col) < cells.size() ? cells[file_col] : "", value);
  }
  size_t from = std::min(rows.size(), size_t(std::max(a.skip, 0L)));
  size_t to = a.limit ? std::min(rows.size(), from + size_t(std::max(*a.limit, 0L))) : rows.size();
  rows = {rows.begin() + from, rows.begin() + to};
  if (rows.empty())
    throw UserError("labels " + a.labels + ": no rows to evaluate (skip=" + std::to_string(a.skip) +
                    ", limit=" + (a.limit ? std::to_string(*a.limit) : "None") + ")");
  return rows;
}

void cmd_eval(const Args &a) {
  auto rows = read_labels(a);
  Model model(a);
  if (std::strcmp(model.info().output, "logits") != 0)
    throw UserError("eval needs a classifier; " + a.bundle + " is a --output features bundle");
  long top1 = 0, top5 = 0, done = 0;
  bool interactive = isatty(STDERR_FILENO);
  for (const auto &[file, label] : rows) {
    model.check(edgevit_run_file(model.m, (a.images + "/" + file).c_str()));
    edgevit_class best[5];
    int n = edgevit_top_k(model.m, 5, best);
    top1 += n > 0 && best[0].index == label;
    top5 += std::any_of(best, best + n, [&](const edgevit_class &c) { return c.index == label; });
    if (interactive && (++done % 20 == 0 || done == long(rows.size())))
      std::fprintf(stderr, "\r%ld/%zu images%s", done, rows.size(), done == long(rows.size()) ? "\n" : "");
  }
  double n = double(rows.size());
  std::printf("top-1 %.2f%%  top-5 %.2f%%  n=%zu\n", top1 / n * 100, top5 / n * 100, rows.size());
  if (a.json)
    std::printf("{\"top1\": %s, \"top5\": %s, \"n\": %zu}\n", json_number(top1 / n).c_str(),
                json_number(top5 / n).c_str(), rows.size());
}

// numpy.percentile's default (linear between the closest ranks) of sorted values.
double percentile(const std::vector<double> &sorted, double q) {
  double pos = q / 100.0 * double(sorted.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo));
}

std::string cpu_name(const std::string &machine) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    std::string lower = line;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower.rfind("model name", 0) == 0 || lower.rfind("hardware", 0) == 0 || lower.rfind("cpu part", 0) == 0) {
      std::string value = line.substr(line.find(':') + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      value.erase(value.find_last_not_of(" \t") + 1);
      return value;
    }
  }
  return machine;
}

// Peak resident set of this program: VmHWM, which starts afresh at exec. getrusage's ru_maxrss (what
// runtime/bench.py reads) is the same when a shell starts the runner, but keeps the parent's RSS when a
// large process (pytest, a Python harness) spawns it with vfork.
double peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr);
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss);
}

// The TVM shared libraries this process has mapped, by file name, as a JSON list (runtime.bench.mapped_tvm_libraries).
std::string mapped_tvm_libraries() {
  std::set<std::string> names;
  std::ifstream in("/proc/self/maps");
  for (std::string line; std::getline(in, line);) {
    size_t slash = line.rfind('/');
    if (slash == std::string::npos) continue;
    std::string name = line.substr(slash + 1);
    if (name.rfind("libtvm", 0) == 0 && name.find(".so") != std::string::npos) names.insert(name);
  }
  std::string out = "[";
  for (const auto &name : names) out += (out.size() > 1 ? ", " : "") + json_string(name);
  return out + "]";
}

// A fixed pseudo-random input of the model's dtype (pixels for uint8), as session.example_input.
void fill_example(edgevit_model *m) {
  size_t bytes;
  void *data = edgevit_input(m, &bytes);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; };
  if (std::strcmp(edgevit_get_info(m)->input_dtype, "uint8") == 0) {
    for (size_t i = 0; i < bytes; ++i) static_cast<uint8_t *>(data)[i] = uint8_t(next() >> 56);
    return;
  }
  for (size_t i = 0; i < bytes / 4; ++i) {  // Box-Muller: standard normal
    double u = (double(next() >> 11) + 1.0) / 9007199254740993.0, v = double(next() >> 11) / 9007199254740992.0;
    static_cast<float *>(data)[i] = float(std::sqrt(-2.0 * std::log(u)) * std::cos(2 * M_PI * v));
  }
}

void cmd_bench(const Args &a) {
  Model model(a);
  int threads = threads_of(a);
  fill_example(model.m);
  for (long i = 0; i < a.warmup; ++i) model.check(edgevit_run(model.m));
  std::vector<double> times_ms(size_t(a.repeat));
  for (double &t : times_ms) {
    auto start = std::chrono::steady_clock::now();
    model.check(edgevit_run(model.m));
    t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  double mean = 0.0;
  for (double t : times_ms) mean += t / double(times_ms.size());
  std::vector<double> sorted = times_ms;
  std::sort(sorted.begin(), sorted.end());
  double median = percentile(sorted, 50), p90 = percentile(sorted, 90), p99 = percentile(sorted, 99);
  double peak_rss_mb = peak_rss_kib() / 1024.0;
  std::printf("median %.2f ms  p90 %.2f ms  p99 %.2f ms  mean %.2f ms  n=%ld  threads=%d  peak RSS %.1f MB\n", median,
              p90, p99, mean, a.repeat, threads, peak_rss_mb);
  if (!a.json) return;
  const edgevit_info &info = model.info();
  std::string tome = "[";
  for (int i = 0; i < info.tome_depth; ++i) tome += (i ? ", " : "") + std::to_string(info.tome_schedule[i]);
  struct utsname host;
  uname(&host);
  std::printf(
      "{\"median_ms\": %s, \"p90_ms\": %s, \"p99_ms\": %s, \"mean_ms\": %s, \"min_ms\": %s, \"n\": %ld, "
      "\"peak_rss_mb\": %s, \"threads\": %d, \"model\": %s, \"target\": %s, \"quant\": %s, \"tome\": %s], "
      "\"edgevit_version\": %s, \"tvm_version\": %s, \"machine\": %s, \"cpu\": %s, \"hostname\": %s, "
      "\"python\": null, \"runtime\": \"native\", \"tvm_libraries\": %s}\n",
      json_number(median).c_str(), json_number(p90).c_str(), json_number(p99).c_str(), json_number(mean).c_str(),
      json_number(sorted.front()).c_str(), a.repeat, json_number(peak_rss_mb).c_str(), threads,
      json_string(info.model).c_str(), json_string(info.target).c_str(), json_string(info.quant).c_str(),
      tome.c_str(), json_string(EDGEVIT_VERSION).c_str(), json_string(EDGEVIT_TVM_VERSION).c_str(),
      json_string(host.machine).c_str(), json_string(cpu_name(host.machine)).c_str(),
      json_string(host.nodename).c_str(), mapped_tvm_libraries().c_str());
}

// Hidden, for tests: the preprocessed inputs of IMAGE... written one after another to OUT
// (positional: OUT IMAGE...), to compare with runtime.preprocess.Preprocess.load.
void cmd_preprocess(const Args &a) {
  if (a.positional.size() < 2) throw UserError("preprocess: usage: preprocess BUNDLE OUT IMAGE...");
  Model model(a);
  FILE *out = std::fopen(a.positional[0].c_str(), "wb");
  if (!out) throw UserError("cannot write " + a.positional[0]);
  for (size_t i = 1; i < a.positional.size(); ++i) {
    if (edgevit_preprocess_file(model.m, a.positional[i].c_str()) != 0) {
      std::fclose(out);
      std::remove(a.positional[0].c_str());
      throw UserError(edgevit_last_error());
    }
    size_t bytes;
    const void *data = edgevit_input(model.m, &bytes);
    std::fwrite(data, 1, bytes, out);
  }
  if (std::fclose(out) != 0) throw UserError("cannot write " + a.positional[0]);
}

}  // namespace

int main(int argc, char **argv) {
  try {
    Args a = parse(argc, argv);
    if (a.command == "run") cmd_run(a);
    else if (a.command == "eval") cmd_eval(a);
    else if (a.command == "bench") cmd_bench(a);
    else cmd_preprocess(a);
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const UserError &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
