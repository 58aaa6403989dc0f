// Device memory in use on the current CUDA device (total - free, as the driver reports it;
// includes other processes' allocations). Returns -1 where it cannot be read: builds
// without CUDA (--config=nocuda), no GPU, or a driver error. Thread-safe.
#ifndef BERT_SERVER_UTIL_DEVICE_MEMORY_H_
#define BERT_SERVER_UTIL_DEVICE_MEMORY_H_

#include <cstdint>

namespace bert {

int64_t DeviceMemoryInUseBytes();

}  // namespace bert

#endif  // BERT_SERVER_UTIL_DEVICE_MEMORY_H_
