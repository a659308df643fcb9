// edgevit-run: `python -m runtime` without Python, a thin program on the core's C API (edgevit.h). Same
// commands, arguments, output lines and --json keys (runtime/__main__.py).
#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "csv.h"
#include "edgevit.h"

namespace {

constexpr const char *kUsage =
    "usage: edgevit-run [--threads N] [--json] [--trusted-keys FILE] [--max-pixels N] {run BUNDLE IMAGE... "
    "[--save FILE.npy] | eval BUNDLE --images DIR --labels CSV [--skip N] [--limit N] | bench BUNDLE [--warmup N] "
    "[--repeat N]}";

// A failure a user can act on: main prints "error: <what>" on stderr and exits 2.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command, bundle, images, labels, save, trusted_keys;
  std::vector<std::string> positional;  // after the bundle: the images of run
  std::optional<int> threads;
  std::optional<long> max_pixels;
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
    else if (arg == "--save") a.save = value();
    else if (arg == "--trusted-keys") a.trusted_keys = value();
    else if (arg == "--max-pixels") a.max_pixels = parse_int(arg, value());
    else if (arg == "--labels") a.labels = value();
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
  static const char *commands[] = {"run", "eval", "bench"};
  if (std::none_of(std::begin(commands), std::end(commands), [&](const char *c) { return a.command == c; }))
    throw UserError("invalid command '" + a.command + "' (choose from run, eval, bench)");
  if (rest.size() < 2) throw UserError(a.command + ": the BUNDLE argument is required");
  a.bundle = rest[1];
  a.positional.assign(rest.begin() + 2, rest.end());
  bool images_wanted = a.command == "run";
  if (images_wanted && a.positional.empty()) throw UserError(a.command + ": at least one IMAGE is required");
  if (!images_wanted && !a.positional.empty()) throw UserError("unrecognized arguments: " + a.positional[0]);
  if (a.command == "eval" && (a.images.empty() || a.labels.empty()))
    throw UserError("eval: the arguments --images and --labels are required");
  if (a.command == "bench" && (a.warmup < 0 || a.repeat < 1)) throw UserError("--warmup must be >= 0 and --repeat >= 1");
  if (a.threads && *a.threads < 1) throw UserError("--threads must be at least 1, got " + std::to_string(*a.threads));
  if (a.max_pixels && *a.max_pixels < 1) throw UserError("--max-pixels must be at least 1, got " + std::to_string(*a.max_pixels));
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
  explicit Model(const Args &a) : m(open(a)) {
    if (!m) throw UserError(edgevit_last_error());
  }
  static edgevit_model *open(const Args &a) {
    edgevit_options options{};
    options.num_threads = threads_of(a);
    options.trusted_keys = a.trusted_keys.empty() ? nullptr : a.trusted_keys.c_str();
    edgevit_set_image_limits(uint64_t(a.max_pixels.value_or(0)), 0);
    return edgevit_open_with(a.bundle.c_str(), &options);
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

// outputs [n, d] float32 as a .npy file ([d] for one image), written to a temp file renamed over `path`.
void save_npy(const std::string &path, const std::vector<float> &outputs, size_t n, size_t d) {
  std::string shape = n == 1 ? "(" + std::to_string(d) + ",)" : "(" + std::to_string(n) + ", " + std::to_string(d) + ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // data starts on a 64-byte boundary
  header += '\n';
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  FILE *out = std::fopen(tmp.c_str(), "wb");
  if (!out) throw UserError("--save " + path + ": cannot write (" + std::strerror(errno) + ")");
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  const unsigned char length[2] = {uint8_t(header.size() & 0xff), uint8_t(header.size() >> 8)};
  bool ok = std::fwrite(magic, 1, 8, out) == 8 && std::fwrite(length, 1, 2, out) == 2 &&
            std::fwrite(header.data(), 1, header.size(), out) == header.size() &&
            std::fwrite(outputs.data(), sizeof(float), outputs.size(), out) == outputs.size();
  if (std::fclose(out) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw UserError("--save " + path + ": cannot write");
  }
}

void cmd_run(const Args &a) {
  Model model(a);
  bool features = std::strcmp(model.info().output, "features") == 0;
  std::string json;
  std::vector<float> outputs;
  for (const std::string &image : a.positional) {
    model.check(edgevit_run_file(model.m, image.c_str()));
    size_t n;
    const float *v = edgevit_output(model.m, &n);
    outputs.insert(outputs.end(), v, v + n);
    json += (json.empty() ? "" : ", ") + json_string(image) + ": ";
    if (features) {
      double norm = l2_norm(v, n);
      std::printf("%s: embedding of %zu values, L2 norm %.4f\n", image.c_str(), n, norm);
      json += "{\"size\": " + std::to_string(n) + ", \"l2_norm\": " + json_number(norm, 6) + "}";
      continue;
    }
    edgevit_class best[5];
    int k = edgevit_top_k(model.m, 5, best);
    std::printf("%s:\n", image.c_str());
    json += "[";
    for (int r = 0; r < k; ++r) {
      const char *label = edgevit_label(model.m, best[r].index);
      std::printf("  %d. %s (%d) %.4f\n", r + 1, label, best[r].index, best[r].probability);
      json += std::string(r ? ", " : "") + "{\"class\": " + std::to_string(best[r].index) + ", \"label\": " +
              json_string(label) + ", \"score\": " + json_number(best[r].probability, 6) + "}";
    }
    json += "]";
  }
  if (!a.save.empty()) save_npy(a.save, outputs, a.positional.size(), size_t(model.info().num_outputs));
  if (a.json) std::printf("{%s}\n", json.c_str());
}

// Rows `file,label` of the labels CSV after --skip / --limit (runtime/evaluate.py read_labels).
std::vector<std::pair<std::string, long>> read_labels(const Args &a) {
  std::ifstream in(a.labels, std::ios::binary);
  if (!in) throw UserError("labels file not found: " + a.labels);
  std::stringstream text;
  text << in.rdbuf();
  auto rows = edgevit::parse_labels_csv(text.str(), a.labels);
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

void cmd_bench(const Args &a) {
  Model model(a);
  int threads = threads_of(a);
  edgevit_bench_result r;
  model.check(edgevit_bench(model.m, int(a.warmup), int(a.repeat), &r));
  std::printf("median %.2f ms  p90 %.2f ms  p99 %.2f ms  mean %.2f ms  n=%d  threads=%d  peak RSS %.1f MB\n", r.median_ms,
              r.p90_ms, r.p99_ms, r.mean_ms, r.n, threads, r.peak_rss_mb);
  if (!a.json) return;
  const edgevit_info &info = model.info();
  std::string tome = "[";
  for (int i = 0; i < info.tome_depth; ++i) tome += (i ? ", " : "") + std::to_string(info.tome_schedule[i]);
  struct utsname host;
  uname(&host);
  std::printf(
      "{\"median_ms\": %s, \"p90_ms\": %s, \"p99_ms\": %s, \"mean_ms\": %s, \"min_ms\": %s, \"n\": %d, "
      "\"peak_rss_mb\": %s, \"threads\": %d, \"model\": %s, \"target\": %s, \"quant\": %s, \"tome\": %s], "
      "\"edgevit_version\": %s, \"tvm_version\": %s, \"machine\": %s, \"cpu\": %s, \"hostname\": %s, "
      "\"python\": null, \"runtime\": \"native\", \"tvm_libraries\": %s}\n",
      json_number(r.median_ms).c_str(), json_number(r.p90_ms).c_str(), json_number(r.p99_ms).c_str(),
      json_number(r.mean_ms).c_str(), json_number(r.min_ms).c_str(), r.n, json_number(r.peak_rss_mb).c_str(), threads,
      json_string(info.model).c_str(), json_string(info.target).c_str(), json_string(info.quant).c_str(),
      tome.c_str(), json_string(info.edgevit_version).c_str(), json_string(info.tvm_version).c_str(),
      json_string(host.machine).c_str(), json_string(cpu_name(host.machine)).c_str(),
      json_string(host.nodename).c_str(), mapped_tvm_libraries().c_str());
}

}  // namespace

int main(int argc, char **argv) {
  try {
    Args a = parse(argc, argv);
    if (a.command == "run") cmd_run(a);
    else if (a.command == "eval") cmd_eval(a);
    else cmd_bench(a);
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const std::runtime_error &e) {  // UserError, and the CSV reader's one-line errors
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
