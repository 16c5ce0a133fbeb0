// Tensor handles: the per-environment handle table (ids that JS holds as plain numbers), memory
// accounting by storage and device, wrapping results, and the environment's lifecycle (its random tag,
// teardown). See Handle and EnvData in residual.h.
#include "residual.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>

namespace residual {

EnvData* envData(Napi::Env env) { return env.GetInstanceData<EnvData>(); }

void drainPending(Napi::Env env, EnvData* d) {
  if (!d->hasPending.load(std::memory_order_acquire)) return;
  std::vector<napi_ref> refs;
  {
    std::lock_guard<std::mutex> lk(d->pendingMu);
    refs.swap(d->pendingUnref);
    d->hasPending.store(false, std::memory_order_release);
  }
  for (auto r : refs) napi_delete_reference(env, r);
}

// ---- memory accounting -------------------------------------------------------------------------

static int deviceSlot(const at::Device& dev) {
  if (dev.is_cuda()) return 1 + std::max<int>(0, std::min<int>(15, dev.index()));
  return 0;
}

// Tells V8 about CPU memory held by tensors (so GC pressure reflects it), in steps of 1 MB.
static void reportBytes(napi_env env, EnvData* d, int64_t delta) {
  d->unreportedBytes += delta;
  if (d->unreportedBytes > (1 << 20) || d->unreportedBytes < -(1 << 20)) {
    int64_t ignored;
    napi_adjust_external_memory(env, d->unreportedBytes, &ignored);
    d->unreportedBytes = 0;
  }
}

static void track(Napi::Env env, EnvData* d, Handle* h) {
  d->liveTensors++;
  if (!h->t.has_storage()) return;
  c10::StorageImpl* s = h->t.storage().unsafeGetStorageImpl();
  if (!s) return;
  h->storage = s;
  auto it = d->storages.find(s);
  if (it != d->storages.end()) {
    it->second.refs++;
    return;
  }
  int64_t bytes = int64_t(s->nbytes());
  int slot = deviceSlot(h->t.device());
  d->storages.emplace(s, EnvData::StorageRec{1, bytes, slot});
  d->bytesBySlot[slot] += bytes;
  if (slot == 0) reportBytes(env, d, bytes);
}

void releaseHandle(napi_env env, EnvData* d, Handle* h) {
  if (!h->alive) return;
  h->alive = false;
  d->liveTensors--;
  if (h->storage) {
    auto it = d->storages.find(h->storage);
    if (it != d->storages.end() && --it->second.refs == 0) {
      d->bytesBySlot[it->second.slot] -= it->second.bytes;
      if (it->second.slot == 0 && env) reportBytes(env, d, -it->second.bytes);
      d->storages.erase(it);
    }
    h->storage = nullptr;
  }
  h->t.reset();
  // A slot whose generations are used up is retired, never reused: a wrapped generation would
  // reissue an old id, and a stale Tensor (or its GC finalizer, which may run long after dispose)
  // would then address, or dispose, a live tensor. The free list is LIFO, so a hot slot goes
  // through its 2^20 - 1 generations in about a million allocations; retiring it costs one table entry.
  if (++h->gen >= (1u << kGenBits)) return;
  d->freeSlots.push_back(h->index);
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  EnvData* d = envData(env);
  drainPending(env, d);
  if (!t.defined()) return env.Null();
  uint32_t idx;
  if (!d->freeSlots.empty()) {
    idx = d->freeSlots.back();
    d->freeSlots.pop_back();
  } else {
    if (d->slots.size() >= kSlotMax) throw KindError(ErrKind::OOM, "too many live tensors (4,194,304): dispose() or use scope()");
    idx = uint32_t(d->slots.size());
    d->slots.emplace_back();
    d->slots.back().index = idx;
  }
  Handle* h = &d->slots[idx];
  h->t = std::move(t);
  h->alive = true;
  track(env, d, h);
  return Napi::Number::New(env, double(d->tagBits | (uint64_t(h->gen) << kIndexBits) | idx));
}

Napi::Value wrap(Napi::Env env, const std::vector<at::Tensor>& v) {
  auto a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(uint32_t(i), wrap(env, v[i]));
  return a;
}

Napi::Value wrap(Napi::Env env, const at::Scalar& s) {
  if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
  if (s.isIntegral(false)) return Napi::Number::New(env, double(s.toLong()));
  return Napi::Number::New(env, s.toDouble());
}

Handle* asHandle(napi_env env, napi_value v, HandleState* why) {
  double id;
  if (napi_get_value_double(env, v, &id) != napi_ok || !(id >= 1.0 && id < 9007199254740992.0) || id != std::floor(id)) {
    if (why) *why = HandleState::NotTensor;
    return nullptr;
  }
  uint64_t u = uint64_t(id);
  EnvData* d = envData(Napi::Env(env));
  uint64_t tag = u >> (kGenBits + kIndexBits);
  uint32_t g = uint32_t((u >> kIndexBits) & ((uint64_t(1) << kGenBits) - 1));
  uint64_t idx = u & (kSlotMax - 1);
  if (tag != d->tag) {
    if (why) *why = tag != 0 && g != 0 ? HandleState::Foreign : HandleState::NotTensor;
    return nullptr;
  }
  if (g == 0 || idx >= d->slots.size()) {
    if (why) *why = HandleState::NotTensor;
    return nullptr;
  }
  Handle* h = &d->slots[size_t(idx)];
  if (h->alive && h->gen == g) return h;
  if (why) *why = HandleState::Stale;  // an earlier generation of this slot: disposed
  return nullptr;
}

void badHandle(HandleState why, const std::string& what, const std::string& got) {
  if (why == HandleState::Stale) throw KindError(ErrKind::Disposed, what + " is a disposed Tensor (used after dispose())");
  if (why == HandleState::Foreign)
    throw ArgError(what +
                   " is not a Tensor of this thread: Tensors belong to the thread (main or worker_thread) that made them; "
                   "send the data instead (toTypedArray() and shape)");
  throw ArgError(what + " must be a Tensor, got " + got);
}

std::vector<at::Tensor> tensorsOf(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw ArgError(what + " must be an array of Tensors, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value e = arr.Get(k);
    // (asHandle sets `why` only when it fails: read it only then. It was read uninitialized here, so a live
    // element could be reported as disposed, depending on what the stack held.)
    HandleState why = HandleState::NotTensor;
    Handle* h = asHandle(env, e, &why);
    if (!h && why == HandleState::Stale)
      throw KindError(ErrKind::Disposed, what + " element " + std::to_string(k) + " is a disposed Tensor");
    if (!h && why == HandleState::Foreign) badHandle(why, what + " element " + std::to_string(k), "");
    if (!h) throw ArgError(what + " must hold only Tensors, element " + std::to_string(k) + " is " + describe(e));
    out.push_back(h->t);
  }
  return out;
}

// ---- environments ------------------------------------------------------------------------------

// Environment tags in use (see Handle): each live environment has its own.
static std::mutex tagsMu;
static std::set<uint32_t> tagsInUse;

static uint32_t takeTag() {
  std::random_device rd;
  std::mt19937 rng((uint64_t(rd()) << 1) ^ uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::lock_guard<std::mutex> lk(tagsMu);
  uint32_t tag = 1;
  for (int tries = 0; tries < 64; tries++) {
    tag = 1 + rng() % ((1u << kTagBits) - 1);
    if (!tagsInUse.count(tag)) break;
  }
  tagsInUse.insert(tag);
  return tag;
}

// At environment teardown (a worker exiting) every tensor still referenced is released. The EnvData
// itself is deliberately leaked (a few bytes): a zero-copy tensor held elsewhere may still queue its
// ArrayBuffer release into it.
static void keepEnvData(Napi::Env env, EnvData* d) {
  for (auto& h : d->slots) {
    h.t.reset();
    h.alive = false;
  }
  for (auto& r : d->errorClasses) {
    if (r) napi_delete_reference(env, r);
    r = nullptr;
  }
  std::lock_guard<std::mutex> lk(tagsMu);
  tagsInUse.erase(d->tag);
  d->tag = 0;  // nothing matches any more
  d->tagBits = 0;
}

bool installEnvData(Napi::Env env) {
  // Instance data per environment; deliberately leaked at env teardown (a few bytes per worker)
  // because GC finalizers of tensors may still run after it and reference it.
  auto* d = new EnvData();
  d->gen = at::make_generator<at::CPUGeneratorImpl>(c10::default_rng_seed_val);
  d->tag = takeTag();
  d->tagBits = uint64_t(d->tag) << (kGenBits + kIndexBits);
  if (napi_set_instance_data(
          env, d, [](napi_env e, void* p, void*) { keepEnvData(Napi::Env(e), static_cast<EnvData*>(p)); }, nullptr) != napi_ok) {
    std::lock_guard<std::mutex> lk(tagsMu);
    tagsInUse.erase(d->tag);
    return false;
  }
  return true;
}

}  // namespace residual
