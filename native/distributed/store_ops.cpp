// The rendezvous store's server for JS: served alone (`residual launch` hosts it on node 0, as torchrun's
// agent does), its port, reset and counters. The server itself is store.cpp (no torch); the store rank 0
// hosts for its process group is process_group.cpp's. No c10d headers here.
#include "residual.h"
#include "dist.h"
#include "store.h"

namespace residual {
namespace dist {

// ---- the store server alone (`residual launch` hosts it on node 0, as torchrun's agent does) -------

namespace {
const napi_type_tag kStoreTag = {0x3a5c7e9f1b2d4f60ULL, 0x5d6e7f8091a2b3c4ULL};
struct StoreHandle {
  std::unique_ptr<StoreServer> server;
};
StoreHandle* getStore(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kStoreTag, &ok) != napi_ok || !ok)
    a.fail(i, "store", "a native store handle");
  StoreHandle* h = a.info[i].As<Napi::External<StoreHandle>>().Data();
  if (!h->server) throw std::runtime_error("the store was closed");
  return h;
}
Napi::Value statsValue(Napi::Env env, const StoreStats& s) {
  auto o = Napi::Object::New(env);
  o.Set("accepted", double(s.accepted));
  o.Set("open", double(s.open));
  o.Set("keys", double(s.keys));
  o.Set("storeBytes", double(s.storeBytes));
  o.Set("bufferedBytes", double(s.bufferedBytes));
  o.Set("droppedTimeout", double(s.droppedTimeout));
  o.Set("droppedTooLarge", double(s.droppedTooLarge));
  o.Set("droppedProtocol", double(s.droppedProtocol));
  o.Set("droppedFull", double(s.droppedFull));
  o.Set("refused", double(s.refused));
  return o;
}
}  // namespace

// distStoreServe({port, timeoutMs, maxConnections}) -> handle: listens at once (port 0: a free one).
DEFN(distStoreServe) {
  if (!a.has(0) || !a.info[0].IsObject()) a.fail(0, "options", "an object");
  auto o = a.info[0].As<Napi::Object>();
  int64_t port = intOpt(o, "port", 29500, 0, 65535);
  int64_t ms = intOpt(o, "timeoutMs", 1800000, 1, kMaxTimeoutMs);
  StoreLimits lim;
  lim.maxConnections = size_t(intOpt(o, "maxConnections", 1024, 1, 1 << 20));
  auto h = std::make_unique<StoreHandle>();
  h->server = StoreServer::start(uint16_t(port), std::chrono::milliseconds(ms), lim);
  auto ext = Napi::External<StoreHandle>::New(a.env(), h.release(), [](Napi::Env, StoreHandle* p) { delete p; });
  napi_type_tag_object(a.env(), ext, &kStoreTag);
  return ext;
}

// distStorePort(store) -> the port it listens on
DEFN(distStorePort) { return Napi::Number::New(a.env(), getStore(a, 0)->server->port()); }

// distStoreReset(store, keepPrefix): drops every key not starting with keepPrefix.
DEFN(distStoreReset) {
  auto* h = getStore(a, 0);
  h->server->reset(a.Str(1, "keepPrefix"));
  return a.env().Undefined();
}

// distStoreStats(store?) -> {accepted, open, keys, ..., dropped*}: a served store's counters; without
// an argument, those of the store this process hosts for its group (null when it hosts none).
DEFN(distStoreStats) {
  if (a.has(0)) return statsValue(a.env(), getStore(a, 0)->server->stats());
  std::shared_ptr<StoreServer> server = hostedStore();
  return server ? statsValue(a.env(), server->stats()) : a.env().Null();
}

// distStoreClose(store): stops serving and closes every connection.
DEFN(distStoreClose) {
  bool ok = false;
  if (!a.has(0) || !a.info[0].IsExternal() || napi_check_object_type_tag(a.env(), a.info[0], &kStoreTag, &ok) != napi_ok || !ok)
    a.fail(0, "store", "a native store handle");
  a.info[0].As<Napi::External<StoreHandle>>().Data()->server.reset();
  return a.env().Undefined();
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kDistStore[] = {
    ENTRY(distStoreServe),     // (options: StoreServeOptions) => NativeStore
    ENTRY(distStorePort),      // (store: NativeStore) => number
    ENTRY(distStoreReset),     // (store: NativeStore, keepPrefix: string) => void
    ENTRY(distStoreStats),     // (store?: NativeStore | null) => StoreStats | null
    ENTRY(distStoreClose),     // (store: NativeStore) => void
};
// clang-format on

}  // namespace dist

void initDistStore(Napi::Env env, Napi::Object exports) {
  registerAll(env, exports, std::begin(dist::kDistStore), std::end(dist::kDistStore));
}

}  // namespace residual
