// Plain comma-separated cells, one row per line (a trailing '\r' dropped), as runtime/evaluate.py reads the
// labels CSV with Python's csv module for files without quoting.
#include "csv.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>

namespace edgevit {
namespace {

std::vector<std::string> split(std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> cells;
  size_t at = 0;
  while (!line.empty()) {
    size_t end = line.find(',', at);
    cells.push_back(line.substr(at, end == std::string::npos ? std::string::npos : end - at));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return cells;
}

}  // namespace

std::vector<std::pair<std::string, long>> parse_labels_csv(const std::string &text, const std::string &name) {
  std::vector<std::string> lines;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    lines.push_back(text.substr(at, end == std::string::npos ? std::string::npos : end - at));
    at = end == std::string::npos ? text.size() : end + 1;
  }
  std::vector<std::string> header = lines.empty() ? std::vector<std::string>{} : split(lines[0]);
  const size_t file_col = std::find(header.begin(), header.end(), "file") - header.begin();
  const size_t label_col = std::find(header.begin(), header.end(), "label") - header.begin();
  if (file_col == header.size() || label_col == header.size())
    throw std::runtime_error("labels " + name + ": needs a header with columns 'file,label'");
  std::vector<std::pair<std::string, long>> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> cells = split(lines[i]);
    if (cells.empty()) continue;
    std::string label = label_col < cells.size() ? cells[label_col] : "";
    char *end = nullptr;
    errno = 0;
    long value = std::strtol(label.c_str(), &end, 10);
    if (label.empty() || end != label.c_str() + label.size() || errno) throw std::runtime_error("labels " + name + ": label is not an integer ('" + label + "')");
    rows.emplace_back(file_col < cells.size() ? cells[file_col] : "", value);
  }
  return rows;
}

}  // namespace edgevit
