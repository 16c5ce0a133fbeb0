// CUDA graphs (at::cuda::CUDAGraph) and the cuDNN benchmark switch.
//
// A graph records every kernel that the JS code launches between cudaGraphCaptureBegin and
// cudaGraphCaptureEnd (forward, loss, backward, optimizer step: they are ordinary native calls, made on
// the capture stream because capture makes it the thread's current stream), and cudaGraphReplay
// launches them all again in one call. The tensors the kernels read and write are fixed at capture:
// new data goes in by copying into the static input tensors (lib/train/graphs.ts does this), and
// results are read from the static outputs. Memory allocated during capture comes from the graph's
// private pool, which lives as long as the graph.
//
// Side stream: warm-up iterations and the capture run on a stream from the pool (not the default
// stream), as torch.cuda.graph and torch.cuda.graphs' "whole network capture" recipe do; the current
// stream waits for the side stream when a warm-up or capture ends.
//
// The graph keeps a reference to every tensor JS hands to cudaGraphKeep (static inputs and outputs,
// parameters and their gradients), so that disposing one of them in JS cannot make a replay write
// into freed memory. A disposed graph refuses replay with an error.
//
// The CPU build compiles the same functions; each throws a DeviceError saying that CUDA graphs need a
// CUDA build and device.
#include "residual.h"

#if defined(RESIDUAL_CUDA)
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace residual {

static const napi_type_tag kGraphTag = {0x51c7e2a9b34d0f86ULL, 0x0e9f3a7b6c2d1e44ULL};

[[noreturn]] [[maybe_unused]] static void noCuda(const char* what) {
  throw KindError(ErrKind::Device, std::string(what) +
                                       ": CUDA graphs need a CUDA build/device: this residual is the CPU build "
                                       "(build it against a CUDA libtorch, see README 'GPU'), and there is no CUDA device here");
}

#if defined(RESIDUAL_CUDA)
// One graph and its state. Lives as a JS External; the finalizer deletes it (and the graph with its pool).
struct GraphBox {
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  enum class State { Fresh, Capturing, Captured, Disposed } state = State::Fresh;
  c10::DeviceIndex device = 0;
  std::optional<c10::cuda::CUDAStream> side;  // warm-up and capture stream
  std::optional<c10::cuda::CUDAStream> prev;  // the stream current before a warm-up/capture
  bool onSide = false;                        // between sideBegin and sideEnd
  std::vector<at::Tensor> keep;
  int64_t replays = 0;
  ~GraphBox() {
    try {
      if (onSide && prev) c10::cuda::setCurrentCUDAStream(*prev);
      if (graph && state == State::Capturing) {
        graph->reset();  // abandon a capture that never ended
      } else if (graph && state == State::Captured) {
        // Collected without dispose(): a replay may still be running on the GPU; its memory pool is freed
        // with the graph, so wait for the device first (as cudaGraphDispose does).
        torch::cuda::synchronize(device);
      }
    } catch (...) {}
  }
};

static const char* stateName(GraphBox::State s) {
  switch (s) {
    case GraphBox::State::Fresh: return "not captured yet";
    case GraphBox::State::Capturing: return "capturing";
    case GraphBox::State::Captured: return "captured";
    default: return "disposed";
  }
}

static GraphBox* getGraph(Args& a, size_t i) {
  bool ok = false;
  if (i >= a.size() || !a.info[i].IsExternal() || napi_check_object_type_tag(a.env(), a.info[i], &kGraphTag, &ok) != napi_ok || !ok)
    a.fail(i, "graph", "a CUDA graph (from cudaGraphCreate)");
  return a.info[i].As<Napi::External<GraphBox>>().Data();
}

static void checkCuda(const char* fn) {
  if (!torch::cuda::is_available())
    throw KindError(ErrKind::Device,
                    std::string(fn) + ": CUDA graphs need a CUDA build/device: this is a CUDA build, but no CUDA device is available");
}

// The current stream waits for everything queued so far on `on` (an event: no host sync).
static void streamWait(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& on) {
  if (waiter == on) return;
  cudaEvent_t ev;
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t e1 = cudaEventRecord(ev, on.stream());
  cudaError_t e2 = e1 == cudaSuccess ? cudaStreamWaitEvent(waiter.stream(), ev, 0) : e1;
  cudaEventDestroy(ev);
  C10_CUDA_CHECK(e2);
}

static void sideBegin(GraphBox* g) {
  c10::cuda::CUDAGuard guard(g->device);
  if (!g->side) g->side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, g->device);
  g->prev = c10::cuda::getCurrentCUDAStream(g->device);
  streamWait(*g->side, *g->prev);  // the side stream sees the inputs the current stream prepared
  c10::cuda::setCurrentCUDAStream(*g->side);
  g->onSide = true;
}

static void sideEnd(GraphBox* g) {
  if (!g->onSide) return;
  c10::cuda::setCurrentCUDAStream(*g->prev);
  g->onSide = false;
  streamWait(*g->prev, *g->side);  // later work on the current stream sees the side stream's results
}
#endif

// cudaGraphCreate(device index) -> graph
DEFN(cudaGraphCreate) {
#if defined(RESIDUAL_CUDA)
  checkCuda("cudaGraphCreate");
  int64_t dev = a.has(0) ? a.I(0, "device") : 0;
  if (dev < 0 || dev >= int64_t(torch::cuda::device_count()))
    throw KindError(ErrKind::Device, "cudaGraphCreate: no CUDA device " + std::to_string(dev) + " (there are " +
                                         std::to_string(torch::cuda::device_count()) + ")");
  auto box = std::make_unique<GraphBox>();
  box->device = c10::DeviceIndex(dev);
  box->graph = std::make_unique<at::cuda::CUDAGraph>();
  auto ext = Napi::External<GraphBox>::New(a.env(), box.release(), [](Napi::Env, GraphBox* p) { delete p; });
  napi_type_tag_object(a.env(), ext, &kGraphTag);
  return ext;
#else
  noCuda("cudaGraphCreate");
#endif
}

// cudaGraphWarmupBegin(graph) / cudaGraphWarmupEnd(graph): warm-up iterations run on the side stream
// between these two calls (first cuDNN/cuBLAS calls, optimizer state and gradients allocated, all before
// capture).
DEFN(cudaGraphWarmupBegin) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  if (g->state != GraphBox::State::Fresh)
    throw std::runtime_error(std::string("cudaGraphWarmupBegin: the graph is ") + stateName(g->state) + "; warm up before capture");
  if (g->onSide) throw std::runtime_error("cudaGraphWarmupBegin: a warm-up is already running");
  sideBegin(g);
  return a.env().Undefined();
#else
  noCuda("cudaGraphWarmupBegin");
#endif
}

DEFN(cudaGraphWarmupEnd) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  if (g->state == GraphBox::State::Capturing)
    throw std::runtime_error("cudaGraphWarmupEnd: the graph is capturing; end the capture with cudaGraphCaptureEnd");
  sideEnd(g);
  return a.env().Undefined();
#else
  noCuda("cudaGraphWarmupEnd");
#endif
}

// cudaGraphCaptureBegin(graph): synchronizes the device, then starts capturing on the side stream
// (a private memory pool; a synchronizing call in the captured step fails the capture with CUDA's error).
DEFN(cudaGraphCaptureBegin) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  if (g->state != GraphBox::State::Fresh)
    throw std::runtime_error(std::string("cudaGraphCaptureBegin: the graph is ") + stateName(g->state) +
                             " (a graph is captured once; create a new one to capture again)");
  if (g->onSide) sideEnd(g);
  c10::cuda::CUDAGuard guard(g->device);
  torch::cuda::synchronize(g->device);
  sideBegin(g);
  try {
    // thread-local mode: the data loader's threads keep allocating and copying while the JS thread
    // captures (they never touch the capture stream); the autograd engine's backward kernels still go
    // to the capturing stream, as the forward ops' stream.
    g->graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  } catch (...) {
    sideEnd(g);
    throw;
  }
  g->state = GraphBox::State::Capturing;
  return a.env().Undefined();
#else
  noCuda("cudaGraphCaptureBegin");
#endif
}

// cudaGraphCaptureEnd(graph, abandon?): ends the capture and instantiates the graph. With abandon
// (the JS step threw during capture) the capture is ended and discarded; the graph becomes disposed.
DEFN(cudaGraphCaptureEnd) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  bool abandon = a.has(1) && a.B(1, "abandon");
  if (g->state != GraphBox::State::Capturing)
    throw std::runtime_error(std::string("cudaGraphCaptureEnd: the graph is ") + stateName(g->state) + ", not capturing");
  c10::cuda::CUDAGuard guard(g->device);
  try {
    g->graph->capture_end();
  } catch (...) {
    g->state = GraphBox::State::Disposed;
    try {
      g->graph->reset();
    } catch (...) {}
    sideEnd(g);
    throw;
  }
  sideEnd(g);
  if (abandon) {
    g->graph->reset();
    g->keep.clear();
    g->state = GraphBox::State::Disposed;
  } else {
    g->state = GraphBox::State::Captured;
  }
  return a.env().Undefined();
#else
  noCuda("cudaGraphCaptureEnd");
#endif
}

// cudaGraphKeep(graph, tensors): the graph holds these tensors (and the gradients they have now) for
// its lifetime. Each must be a CUDA tensor on the graph's device.
DEFN(cudaGraphKeep) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  if (g->state == GraphBox::State::Disposed) throw KindError(ErrKind::Disposed, "cudaGraphKeep: the CUDA graph was disposed");
  auto ts = a.TL(1, "tensors");
  for (size_t i = 0; i < ts.size(); i++) {
    const auto& t = ts[i];
    if (!t.is_cuda() || t.device().index() != g->device)
      throw KindError(ErrKind::Device, "cudaGraphKeep: tensor " + std::to_string(i) + " is on " + t.device().str() +
                                           ", the graph on cuda:" + std::to_string(int(g->device)));
  }
  for (auto& t : ts) {
    g->keep.push_back(t);
    if (t.grad().defined()) g->keep.push_back(t.grad());
  }
  return a.env().Undefined();
#else
  noCuda("cudaGraphKeep");
#endif
}

// cudaGraphReplay(graph): launches the captured work on the current stream.
DEFN(cudaGraphReplay) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  if (g->state == GraphBox::State::Disposed) throw KindError(ErrKind::Disposed, "cudaGraphReplay: the CUDA graph was disposed");
  if (g->state != GraphBox::State::Captured)
    throw std::runtime_error(std::string("cudaGraphReplay: the graph is ") + stateName(g->state) + "; capture it first");
  c10::cuda::CUDAGuard guard(g->device);
  g->graph->replay();
  g->replays++;
  return a.env().Undefined();
#else
  noCuda("cudaGraphReplay");
#endif
}

// cudaGraphDispose(graph): frees the graph, its memory pool and the tensors it kept. Idempotent.
DEFN(cudaGraphDispose) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  if (g->state == GraphBox::State::Disposed) return a.env().Undefined();
  if (g->state == GraphBox::State::Capturing) throw std::runtime_error("cudaGraphDispose: the graph is capturing; end the capture first");
  c10::cuda::CUDAGuard guard(g->device);
  torch::cuda::synchronize(g->device);  // a replay in flight still uses the pool
  sideEnd(g);
  g->graph->reset();
  g->keep.clear();
  g->state = GraphBox::State::Disposed;
  return a.env().Undefined();
#else
  noCuda("cudaGraphDispose");
#endif
}

// cudaGraphInfo(graph) -> {state, replays, kept}
DEFN(cudaGraphInfo) {
#if defined(RESIDUAL_CUDA)
  GraphBox* g = getGraph(a, 0);
  auto o = Napi::Object::New(a.env());
  o.Set("state", stateName(g->state));
  o.Set("replays", Napi::Number::New(a.env(), double(g->replays)));
  o.Set("kept", Napi::Number::New(a.env(), double(g->keep.size())));
  o.Set("device", Napi::Number::New(a.env(), double(g->device)));
  return o;
#else
  noCuda("cudaGraphInfo");
#endif
}

// cudaIsCapturing() -> whether the current stream is capturing a graph (false on the CPU build).
DEFN(cudaIsCapturing) {
#if defined(RESIDUAL_CUDA)
  if (!torch::cuda::is_available()) return Napi::Boolean::New(a.env(), false);
  return Napi::Boolean::New(a.env(), c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None);
#else
  return Napi::Boolean::New(a.env(), false);
#endif
}

// cudnnBenchmark(enabled?) -> the previous setting. cuDNN benchmark mode times the convolution
// algorithms for each new input shape once and keeps the fastest: a win when shapes are fixed (training
// with dropLast), a cost when they vary. The CPU build accepts it (no effect) so settings stay portable.
DEFN(cudnnBenchmark) {
  bool prev = at::globalContext().benchmarkCuDNN();
  if (a.has(0)) at::globalContext().setBenchmarkCuDNN(a.B(0, "enabled"));
  return Napi::Boolean::New(a.env(), prev);
}

// One function a line, its TypeScript signature in the comment (read by scripts/codegen/gen-native-types.mjs):
// clang-format off
static const FnEntry kGraphs[] = {
    ENTRY(cudaGraphCreate),        // (device?: number | null) => NativeGraph
    ENTRY(cudaGraphWarmupBegin),   // (graph: NativeGraph) => void
    ENTRY(cudaGraphWarmupEnd),     // (graph: NativeGraph) => void
    ENTRY(cudaGraphCaptureBegin),  // (graph: NativeGraph) => void
    ENTRY(cudaGraphCaptureEnd),    // (graph: NativeGraph, abandon?: boolean | null) => void
    ENTRY(cudaGraphKeep),          // (graph: NativeGraph, tensors: readonly Handle[]) => void
    ENTRY(cudaGraphReplay),        // (graph: NativeGraph) => void
    ENTRY(cudaGraphDispose),       // (graph: NativeGraph) => void
    ENTRY(cudaGraphInfo),          // (graph: NativeGraph) => CudaGraphInfo
    ENTRY(cudaIsCapturing),        // () => boolean
    ENTRY(cudnnBenchmark),         // (enabled?: boolean | null) => boolean
};
// clang-format on

void initGraphs(Napi::Env env, Napi::Object exports) { registerAll(env, exports, std::begin(kGraphs), std::end(kGraphs)); }

}  // namespace residual
