#include "server/engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace bert {
namespace {

using Json = nlohmann::json;

// Header sizes above this are treated as corrupt (the format's own reference caps at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

absl::Status FileError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status TensorError(const std::string& path, const std::string& name,
                         const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", what));
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

int64_t SafetensorsView::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t SafetensorsDTypeSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2") {
    return 1;
  }
  return 0;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {  // inf / nan
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    bits = sign;
  } else {  // subnormal: renormalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    bits = sign | ((113u - shift) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { Unmap(); }

void SafetensorsFile::Unmap() {
  if (map_ != nullptr) munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
  tensors_.clear();
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string what = absl::StrCat("cannot open: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": ", what));
    return FileError(path, what);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return FileError(path, absl::StrCat("truncated: ", file_size,
                                        " bytes, shorter than the 8-byte header length"));
  }
  void* map = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return FileError(path, absl::StrCat("mmap: ", std::strerror(errno)));

  SafetensorsFile file;
  file.path_ = path;
  file.map_ = map;
  file.map_size_ = file_size;
  const uint8_t* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len;
  std::memcpy(&header_len, bytes, sizeof(header_len));
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return FileError(path, absl::StrCat("corrupt or truncated header: header length ", header_len,
                                        " but the file has ", file_size, " bytes"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  Json header = Json::parse(header_begin, header_begin + header_len, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return FileError(path, "corrupt header: not a JSON object");
  }
  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::string> range_names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return FileError(path, "corrupt header: __metadata__ not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return FileError(path, absl::StrCat("corrupt header: __metadata__ value '", m.key(),
                                              "' is not a string"));
        }
        file.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) return TensorError(path, name, "header entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return TensorError(path, name, "missing or non-string dtype");
    }
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return TensorError(path, name, "missing or non-array shape");
    }
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return TensorError(path, name, "data_offsets must be an array of two integers");
    }
    SafetensorsView view;
    view.dtype = dtype_it->get<std::string>();
    const size_t elem = SafetensorsDTypeSize(view.dtype);
    if (elem == 0) return TensorError(path, name, absl::StrCat("unknown dtype '", view.dtype, "'"));
    // Element count with an overflow guard: any count past 2^62 is corrupt anyway.
    uint64_t count = 1;
    for (const Json& d : *shape_it) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return TensorError(path, name, "shape entries must be non-negative integers");
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && count > (uint64_t{1} << 62) / dim) {
        return TensorError(path, name, "shape too large");
      }
      count *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const Json& b = (*offsets_it)[0];
    const Json& e = (*offsets_it)[1];
    if (!b.is_number_integer() || !e.is_number_integer() || b.get<int64_t>() < 0 ||
        e.get<int64_t>() < 0) {
      return TensorError(path, name, "data_offsets must be non-negative integers");
    }
    const uint64_t begin = b.get<uint64_t>();
    const uint64_t end = e.get<uint64_t>();
    if (begin > end || end > data_size) {
      return TensorError(path, name,
                         absl::StrCat("data_offsets [", begin, ", ", end, ") out of range of the ",
                                      data_size, "-byte data section (truncated file?)"));
    }
    if (count > (uint64_t{1} << 62) / elem || end - begin != count * elem) {
      return TensorError(path, name,
                         absl::StrCat("data_offsets span ", end - begin, " bytes but dtype ",
                                      view.dtype, " and shape need ", count * elem));
    }
    view.data = data + begin;
    view.nbytes = end - begin;
    if (view.nbytes > 0) {
      ranges.emplace_back(begin, end);
      range_names.push_back(name);
    }
    file.tensors_.emplace(name, std::move(view));
  }
  // No two tensors may share bytes.
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return ranges[a].first < ranges[b].first; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (ranges[order[i]].first < ranges[order[i - 1]].second) {
      return TensorError(path, range_names[order[i]],
                         absl::StrCat("data overlaps tensor '", range_names[order[i - 1]], "'"));
    }
  }
  return file;
}

const SafetensorsView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void SafetensorsFile::DropPages(const SafetensorsView& view) const {
  if (view.nbytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(view.data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(view.data) + view.nbytes;
  // Advice only: failure changes nothing but memory use.
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat32(const std::string& name,
                                                                std::vector<int64_t>* shape) const {
  const SafetensorsView* view = Find(name);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": tensor '", name, "' is missing"));
  }
  absl::StatusOr<std::vector<float>> out = ReadFloat32(*view, name);
  if (out.ok() && shape) *shape = view->shape;
  return out;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat32(const SafetensorsView& view,
                                                                const std::string& name) const {
  const int64_t n = view.num_elements();
  std::vector<float> out(n);
  if (view.dtype == "F32") {
    std::memcpy(out.data(), view.data, n * sizeof(float));
  } else if (view.dtype == "F16") {
    for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(LoadU16(view.data + 2 * i));
  } else if (view.dtype == "BF16") {
    for (int64_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(LoadU16(view.data + 2 * i));
  } else {
    return TensorError(
        path_, name,
        absl::StrCat("unsupported dtype ", view.dtype, " (expected F32, F16 or BF16)"));
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> SafetensorsFile::ReadInt32(const std::string& name,
                                                                std::vector<int64_t>* shape) const {
  const SafetensorsView* view = Find(name);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": tensor '", name, "' is missing"));
  }
  const int64_t n = view->num_elements();
  std::vector<int32_t> out(n);
  if (view->dtype == "I32") {
    std::memcpy(out.data(), view->data, n * sizeof(int32_t));
  } else if (view->dtype == "I64") {
    for (int64_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, view->data + 8 * i, sizeof(v));
      if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
        return TensorError(path_, name, absl::StrCat("value ", v, " does not fit int32"));
      }
      out[i] = static_cast<int32_t>(v);
    }
  } else {
    return TensorError(path_, name,
                       absl::StrCat("unsupported dtype ", view->dtype, " (expected I32 or I64)"));
  }
  if (shape) *shape = view->shape;
  return out;
}

void SafetensorsWriter::AddFloat32(const std::string& name, std::vector<int64_t> shape,
                                   absl::Span<const float> values) {
  Entry& e = entries_[name];
  e.dtype = "F32";
  e.shape = std::move(shape);
  e.floats.clear();
  e.bytes.resize(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
}

void SafetensorsWriter::AddFloat32(const std::string& name, std::vector<int64_t> shape,
                                   std::vector<float>&& values) {
  Entry& e = entries_[name];
  e.dtype = "F32";
  e.shape = std::move(shape);
  e.bytes.clear();
  e.floats = std::move(values);
}

void SafetensorsWriter::AddInt32(const std::string& name, std::vector<int64_t> shape,
                                 absl::Span<const int32_t> values) {
  Entry& e = entries_[name];
  e.dtype = "I32";
  e.shape = std::move(shape);
  e.floats.clear();
  e.bytes.resize(values.size() * sizeof(int32_t));
  if (!values.empty()) std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
}

void SafetensorsWriter::AddRaw(const std::string& name, const std::string& dtype,
                               std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  Entry& e = entries_[name];
  e.dtype = dtype;
  e.shape = std::move(shape);
  e.floats.clear();
  e.bytes = std::move(bytes);
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

absl::Status SafetensorsWriter::Write(const std::string& path) const {
  Json header = Json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& [name, e] : entries_) {
    header[name] = {
        {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.size()}}};
    offset += e.size();
  }
  std::string text = header.dump();
  // Pad with spaces so that the data section starts 8-byte aligned.
  while ((text.size() % 8) != 0) text.push_back(' ');
  const uint64_t header_len = text.size();

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open for writing"));
  out.write(reinterpret_cast<const char*>(&header_len), sizeof(header_len));
  out.write(text.data(), text.size());
  for (const auto& [name, e] : entries_) {
    out.write(e.data(), e.size());
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace bert
