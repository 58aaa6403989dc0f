// How much more memory this process may take before the kernel refuses it or kills it.
#ifndef BERT_SERVER_UTIL_AVAILABLE_MEMORY_H_
#define BERT_SERVER_UTIL_AVAILABLE_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>

namespace bert {

// The least of the machine's MemAvailable and, where the process's memory cgroup (v2, or v1's
// memory controller) has a limit, that limit less the cgroup's usage. nullopt where neither
// can be read (not Linux, /proc or /sys not mounted).
std::optional<int64_t> AvailableMemoryBytes();

// The pieces, for tests. Each returns nullopt when the text holds no such value.
// MemAvailable from /proc/meminfo's text, in bytes.
std::optional<int64_t> ParseMemAvailable(const std::string& meminfo);
// The memory cgroup's path from /proc/self/cgroup's text (v1's "memory" controller line, else
// v2's "0::" line) and whether it is v2.
std::optional<std::string> ParseMemoryCgroup(const std::string& proc_cgroup, bool* v2);
// A limit file's value (memory.max, memory.limit_in_bytes); nullopt for "max" and for v1's
// "no limit" (values of 2^62 and more).
std::optional<int64_t> ParseCgroupLimit(const std::string& text);

}  // namespace bert

#endif  // BERT_SERVER_UTIL_AVAILABLE_MEMORY_H_
