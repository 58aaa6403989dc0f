// Reading and writing the safetensors format: an 8-byte little-endian header length N,
// N bytes of JSON (name -> {dtype, shape, data_offsets}), then the raw little-endian data.
//
// SafetensorsFile maps a file read-only (mmap) and validates the whole header at Open:
// every entry's dtype, shape and offsets are checked against each other and against the
// file size, and entries may not overlap, so that a view handed out afterwards is always
// inside the mapping. It owns the mapping (RAII, move-only); views are valid while it
// lives. Const methods are thread-safe.
//
// SafetensorsWriter collects tensors in memory and writes one file.
#ifndef BERT_SERVER_ENGINE_SAFETENSORS_H_
#define BERT_SERVER_ENGINE_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bert {

// One tensor inside a mapped file.
struct SafetensorsView {
  std::string dtype;           // As written: "F32", "F16", "BF16", "I32", "I64", ...
  std::vector<int64_t> shape;  // Empty for a scalar.
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t num_elements() const;
};

// Bytes per element of a safetensors dtype name, or 0 when the name is not one of the
// format's dtypes.
size_t SafetensorsDTypeSize(const std::string& dtype);

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors name the file and, where it applies, the tensor.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Null when absent.
  const SafetensorsView* Find(const std::string& name) const;

  // Tells the kernel that the pages holding `view` (one this file handed out) are not needed
  // any more (a loader that has copied a tensor calls it so that the mapping and the copies
  // are not both resident). The data stays readable: pages come back from the file if
  // touched again.
  void DropPages(const SafetensorsView& view) const;

  // The tensor converted to float32 (from F32, F16 or BF16); NOT_FOUND when absent,
  // INVALID_ARGUMENT for another dtype.
  absl::StatusOr<std::vector<float>> ReadFloat32(const std::string& name,
                                                 std::vector<int64_t>* shape) const;
  // The same for a view this file handed out (from Find or tensors()), so that a caller that
  // has already looked the tensor up need not do it again; `name` is used in errors only.
  absl::StatusOr<std::vector<float>> ReadFloat32(const SafetensorsView& view,
                                                 const std::string& name) const;
  // The tensor as int32 (from I32, or I64 within int32's range).
  absl::StatusOr<std::vector<int32_t>> ReadInt32(const std::string& name,
                                                 std::vector<int64_t>* shape) const;

 private:
  SafetensorsFile() = default;
  void Unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, SafetensorsView> tensors_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  void AddFloat32(const std::string& name, std::vector<int64_t> shape,
                  absl::Span<const float> values);
  // Takes the values without copying them.
  void AddFloat32(const std::string& name, std::vector<int64_t> shape, std::vector<float>&& values);
  void AddInt32(const std::string& name, std::vector<int64_t> shape,
                absl::Span<const int32_t> values);
  // Any dtype, bytes as they are stored (little-endian); the writer does not check that
  // `bytes` fits `shape` and `dtype`, so that tests can write defective files too.
  void AddRaw(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
              std::vector<uint8_t> bytes);
  void SetMetadata(const std::string& key, const std::string& value);

  // Writes all tensors (in name order) to `path`, replacing it.
  absl::Status Write(const std::string& path) const;

 private:
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;  // the data, unless `floats` holds it
    std::vector<float> floats;

    const char* data() const {
      return floats.empty() ? reinterpret_cast<const char*>(bytes.data())
                            : reinterpret_cast<const char*>(floats.data());
    }
    size_t size() const { return floats.empty() ? bytes.size() : floats.size() * sizeof(float); }
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Float conversions used by the reader (exposed for tests).
float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_SAFETENSORS_H_
