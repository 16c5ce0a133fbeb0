// What the translation units of native/distributed/ share: the process group's accessors, the exact option
// readers and the agreement step before a collective (all defined in process_group.cpp). No c10d
// header here (store_ops.cpp includes this without them): c10d's types are only named.
#pragma once

#include "residual.h"

#include <memory>
#include <string>
#include <vector>

namespace c10d {
class ProcessGroup;
class Work;
}  // namespace c10d

namespace residual {

class StoreServer;

namespace dist {

// The default process group; throws "<what>: no process group" when there is none.
c10::intrusive_ptr<c10d::ProcessGroup> currentPg(const char* what);
// Whether every rank is residual's, so the agreement step runs before collectives.
bool checksEnabled();
// The store server this process hosts for its group (null when another process hosts it, or no group).
std::shared_ptr<StoreServer> hostedStore();
// Waits for a collective; a timeout or a lost peer says what it means for the job.
void waitWork(const c10::intrusive_ptr<c10d::Work>& work);

// ---- exact options ------------------------------------------------------------------------------

bool has(const Napi::Object& o, const char* k);
// An integer option in [lo, hi] (exactInt: a fraction is a TypeError; NaN, Infinity, beyond 2^53 and
// outside the range are RangeErrors naming the value as given).
int64_t intOpt(const Napi::Object& o, const char* k, int64_t d, int64_t lo, int64_t hi);
bool boolOpt(const Napi::Object& o, const char* k, bool d);
std::string optStr(const Napi::Object& o, const char* k, const std::string& d);

// The largest timeout: 2^31 - 1 ms (about 24.8 days), as Node's timers. Larger values would overflow
// the int milliseconds libtorch's sockets poll with, and chrono's nanosecond deadlines further on.
constexpr int64_t kMaxTimeoutMs = 2147483647;
constexpr int64_t kMaxRanks = 2147483647;  // c10d's ranks and sizes are int

// ---- agreement across ranks before a collective ----------------------------------------------------

enum CallKind : int64_t { kAllReduce = 1, kBroadcast, kAllGather, kBarrier, kDdp };
// A rank's own refusal, sent in the header so that every rank fails with it.
enum Refusal : int64_t { kOk = 0, kNotContiguous, kWrongDevice, kNotDense, kAvgInteger, kBadSrc, kMixedDevices };

// The agreement step of a call: a header per rank, then (only when they differ) each tensor's
// description. Every rank reaches the same verdict from the same data and throws the same error.
// `sizesMatter`: the shapes must agree (allGather, DDP), not only the element counts.
void agree(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, int64_t kind, int64_t param, const std::vector<at::Tensor>& ts,
           int64_t refusal, bool sizesMatter, const std::vector<std::string>& names = {}, const std::vector<int64_t>& extra = {});

}  // namespace dist
}  // namespace residual
