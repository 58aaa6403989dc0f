// Testing the server's reaction to a lost device without a device: an Engine that forwards
// to another until it meets a batch holding a chosen word id. That batch and every later one
// fail, and Health() reports the fault from then on, as a CUDA engine does after a fault that
// leaves its GPU context unusable (bert_server --debug_engine_fault_word_id).
#ifndef BERT_SERVER_ENGINE_FAULT_INJECTION_H_
#define BERT_SERVER_ENGINE_FAULT_INJECTION_H_

#include <cstdint>
#include <memory>

#include "server/engine/engine.h"

namespace bert {

// Wraps `engine`. The first batch containing `trigger_word_id` fails with INTERNAL; later
// batches fail with UNAVAILABLE, and Health() returns that UNAVAILABLE error. Same threading
// contract as Engine.
std::unique_ptr<Engine> InjectEngineFault(std::unique_ptr<Engine> engine, int32_t trigger_word_id);

}  // namespace bert

#endif  // BERT_SERVER_ENGINE_FAULT_INJECTION_H_
