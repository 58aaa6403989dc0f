// How many CPUs this process may run on.
#ifndef BERT_SERVER_UTIL_AVAILABLE_CORES_H_
#define BERT_SERVER_UTIL_AVAILABLE_CORES_H_

namespace bert {

// The CPUs in this process's affinity mask (what `taskset` or a container's cpuset allow),
// else the machine's hardware threads; at least 1.
int AvailableCores();

}  // namespace bert

#endif  // BERT_SERVER_UTIL_AVAILABLE_CORES_H_
