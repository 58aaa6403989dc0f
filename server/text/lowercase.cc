#include "server/text/lowercase.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace bert {

absl::StatusOr<bool> ResolveLowercase(const std::string& setting, const std::string& model_dir,
                                      const std::string& vocab_path) {
  if (setting == "true") return true;
  if (setting == "false") return false;
  if (setting != "auto") return absl::InvalidArgumentError("--lowercase: auto, true or false");
  std::ifstream config_file(model_dir + "/tokenizer_config.json", std::ios::binary);
  if (config_file) {
    std::stringstream buffer;
    buffer << config_file.rdbuf();
    const std::string config = buffer.str();
    const size_t pos = config.find("\"do_lower_case\"");
    if (pos != std::string::npos) {
      const size_t colon = config.find(':', pos);
      const std::string rest = config.substr(colon + 1, 16);
      if (absl::StrContains(rest, "false")) return false;
      if (absl::StrContains(rest, "true")) return true;
    }
  }
  std::ifstream vocab(vocab_path);
  if (!vocab) return absl::NotFoundError(absl::StrCat("cannot read ", vocab_path));
  std::string line;
  int upper = 0;
  while (std::getline(vocab, line)) {
    if (line.size() > 1 && line.front() == '[' && line.back() == ']') continue;  // [CLS]...
    for (char c : line) {
      if (absl::ascii_isupper(static_cast<unsigned char>(c))) {
        ++upper;
        break;
      }
    }
  }
  return upper < 10;
}

}  // namespace bert
