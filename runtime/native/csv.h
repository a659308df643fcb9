// The labels CSV of `eval` (columns file,label; any others ignored), for edgevit-run and its fuzz harness.
#ifndef EDGEVIT_CSV_H_
#define EDGEVIT_CSV_H_

#include <string>
#include <utility>
#include <vector>

namespace edgevit {

// Rows (file, label) of CSV text; `name` names it in messages. Throws std::runtime_error (one line) on a
// missing header or a label that is not an integer.
std::vector<std::pair<std::string, long>> parse_labels_csv(const std::string &text, const std::string &name);

}  // namespace edgevit

#endif  // EDGEVIT_CSV_H_
