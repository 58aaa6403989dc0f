// Error checking and RAII owners for CUDA runtime and cuBLASLt resources.
//
// The kernels layer does not use exceptions or absl::Status: a failing call becomes a
// `CudaStatus` (empty message = OK) that names the failed expression, the status name
// (e.g. "cudaErrorMemoryAllocation") and where it happened. Engines convert it to
// absl::Status at their boundary.
//
//   CudaStatus Upload(...) {
//     BERT_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));
//     BERT_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(...));
//     return CudaStatus::Ok();
//   }
//
// The RAII types are move-only and not thread-safe; each owns exactly one resource and
// releases it in its destructor (errors on release are ignored: there is nothing to do).
#ifndef BERT_KERNELS_CUDA_CUDA_UTILS_H_
#define BERT_KERNELS_CUDA_CUDA_UTILS_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>

namespace bert {
namespace cuda {

// The result of a CUDA/cuBLAS operation: OK, or a message saying what failed.
class CudaStatus {
 public:
  static CudaStatus Ok() { return CudaStatus(); }
  static CudaStatus Error(std::string message, bool out_of_memory = false) {
    CudaStatus s;
    s.message_ = message.empty() ? "unknown CUDA error" : std::move(message);
    s.out_of_memory_ = out_of_memory;
    return s;
  }
  // cuBLASLt refused the operation as asked (no algorithm for it, or NOT_SUPPORTED) before
  // enqueuing anything: the caller may do the same work another way.
  static CudaStatus Unsupported(std::string message) {
    CudaStatus s = Error(std::move(message));
    s.unsupported_ = true;
    return s;
  }

  bool ok() const { return message_.empty(); }
  const std::string& message() const { return message_; }
  // True for cudaErrorMemoryAllocation / CUBLAS_STATUS_ALLOC_FAILED.
  bool out_of_memory() const { return out_of_memory_; }
  bool unsupported() const { return unsupported_; }
  // This error (its kind kept) with `suffix` appended to its message; OK stays OK.
  CudaStatus WithContext(const std::string& suffix) const {
    CudaStatus s = *this;
    if (!s.ok()) s.message_ += suffix;
    return s;
  }

 private:
  std::string message_;
  bool out_of_memory_ = false;
  bool unsupported_ = false;
};

inline CudaStatus MakeCudaStatus(cudaError_t error, const char* expr, const char* file, int line) {
  if (error == cudaSuccess) return CudaStatus::Ok();
  return CudaStatus::Error(std::string(expr) + " failed: " + cudaGetErrorName(error) + " (" +
                               cudaGetErrorString(error) + ") at " + file + ":" +
                               std::to_string(line),
                           error == cudaErrorMemoryAllocation);
}

inline CudaStatus MakeCublasStatus(cublasStatus_t status, const char* expr, const char* file,
                                   int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return CudaStatus::Ok();
  return CudaStatus::Error(std::string(expr) + " failed: " + cublasLtGetStatusName(status) + " (" +
                               cublasLtGetStatusString(status) + ") at " + file + ":" +
                               std::to_string(line),
                           status == CUBLAS_STATUS_ALLOC_FAILED);
}

}  // namespace cuda
}  // namespace bert

#define BERT_CUDA_CONCAT_INNER_(a, b) a##b
#define BERT_CUDA_CONCAT_(a, b) BERT_CUDA_CONCAT_INNER_(a, b)

// Evaluates a cudaError_t expression; returns a CudaStatus from the enclosing function on
// failure.
#define BERT_CUDA_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                \
    const cudaError_t _bert_cuda_err = (expr);                                        \
    if (_bert_cuda_err != cudaSuccess) {                                              \
      return ::bert::cuda::MakeCudaStatus(_bert_cuda_err, #expr, __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)

// Same for a cublasStatus_t expression.
#define BERT_CUBLAS_RETURN_IF_ERROR(expr)                                                \
  do {                                                                                   \
    const cublasStatus_t _bert_cublas_st = (expr);                                       \
    if (_bert_cublas_st != CUBLAS_STATUS_SUCCESS) {                                      \
      return ::bert::cuda::MakeCublasStatus(_bert_cublas_st, #expr, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)

// Propagates a non-OK CudaStatus.
#define BERT_CUDA_RETURN_IF_NOT_OK(expr)             \
  do {                                               \
    ::bert::cuda::CudaStatus _bert_cuda_st = (expr); \
    if (!_bert_cuda_st.ok()) return _bert_cuda_st;   \
  } while (0)

namespace bert {
namespace cuda {

// Owns `count` elements of T in device memory (cudaMalloc: 256-byte aligned).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Frees any previous allocation, then allocates `count` elements (uninitialised).
  CudaStatus Allocate(size_t count) {
    Reset();
    if (count == 0) return CudaStatus::Ok();
    void* p = nullptr;
    BERT_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, count * sizeof(T)));
    data_ = static_cast<T*>(p);
    count_ = count;
    return CudaStatus::Ok();
  }
  void Reset() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    count_ = 0;
  }

  T* get() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// Owns `count` elements of page-locked host memory (for asynchronous copies).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  CudaStatus Allocate(size_t count) {
    Reset();
    if (count == 0) return CudaStatus::Ok();
    void* p = nullptr;
    BERT_CUDA_RETURN_IF_ERROR(cudaMallocHost(&p, count * sizeof(T)));
    data_ = static_cast<T*>(p);
    count_ = count;
    return CudaStatus::Ok();
  }
  void Reset() {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = nullptr;
    count_ = 0;
  }

  T* get() const { return data_; }
  size_t size() const { return count_; }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// A non-blocking CUDA stream.
class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  CudaStream(CudaStream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  CudaStream& operator=(CudaStream&& other) noexcept {
    if (this != &other) {
      if (stream_ != nullptr) cudaStreamDestroy(stream_);
      stream_ = std::exchange(other.stream_, nullptr);
    }
    return *this;
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  CudaStatus Create() {
    cudaStream_t s = nullptr;
    BERT_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = s;
    return CudaStatus::Ok();
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// A CUDA event (timing enabled).
class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& other) noexcept {
    if (this != &other) {
      if (event_ != nullptr) cudaEventDestroy(event_);
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  // flags: cudaEventDefault, or e.g. cudaEventDisableTiming for events that only order streams.
  CudaStatus Create(unsigned int flags = cudaEventDefault) {
    cudaEvent_t e = nullptr;
    BERT_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, flags));
    if (event_ != nullptr) cudaEventDestroy(event_);
    event_ = e;
    return CudaStatus::Ok();
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// An instantiated CUDA graph (cudaGraphExec_t). Adopt() takes ownership of one.
class CudaGraphExec {
 public:
  CudaGraphExec() = default;
  ~CudaGraphExec() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }
  CudaGraphExec(CudaGraphExec&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  CudaGraphExec& operator=(CudaGraphExec&& other) noexcept {
    if (this != &other) {
      if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
      exec_ = std::exchange(other.exec_, nullptr);
    }
    return *this;
  }
  CudaGraphExec(const CudaGraphExec&) = delete;
  CudaGraphExec& operator=(const CudaGraphExec&) = delete;

  void Adopt(cudaGraphExec_t exec) {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    exec_ = exec;
  }
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

// A cuBLASLt handle.
class CublasLtHandle {
 public:
  CublasLtHandle() = default;
  ~CublasLtHandle() {
    if (handle_ != nullptr) cublasLtDestroy(handle_);
  }
  CublasLtHandle(CublasLtHandle&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)) {}
  CublasLtHandle& operator=(CublasLtHandle&& other) noexcept {
    if (this != &other) {
      if (handle_ != nullptr) cublasLtDestroy(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  CublasLtHandle(const CublasLtHandle&) = delete;
  CublasLtHandle& operator=(const CublasLtHandle&) = delete;

  CudaStatus Create() {
    cublasLtHandle_t h = nullptr;
    BERT_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&h));
    if (handle_ != nullptr) cublasLtDestroy(handle_);
    handle_ = h;
    return CudaStatus::Ok();
  }
  cublasLtHandle_t get() const { return handle_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
};

// The number of visible CUDA devices, or an error saying why there are none usable
// (no driver, no device, driver too old...). Never crashes without a GPU.
inline CudaStatus CountDevices(int* count) {
  *count = 0;
  const cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) {
    *count = 0;
    cudaGetLastError();  // Clear the sticky-free error so later calls start clean.
    return CudaStatus::Error(std::string("no usable CUDA GPU: cudaGetDeviceCount failed: ") +
                             cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
  if (*count == 0) return CudaStatus::Error("no CUDA GPU present (cudaGetDeviceCount = 0)");
  return CudaStatus::Ok();
}

}  // namespace cuda
}  // namespace bert

#endif  // BERT_KERNELS_CUDA_CUDA_UTILS_H_
