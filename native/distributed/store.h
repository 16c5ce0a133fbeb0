// The rendezvous store's server: c10d's TCPStore wire protocol (what libtorch's TCPStore client and
// PyTorch's Python ranks speak), served by residual's own code on one thread, with every read bounded
// by size and time. Hosted by rank 0 (dist.initProcessGroup) or by `residual launch` on node 0.
//
// Why not libtorch's own server: its legacy daemon reads each message with blocking recv() on its one
// thread, so a peer that sends one byte, a partial header, or announces a value it never sends stalls
// every other rank, and the announced size is allocated before a byte of it arrives; destroying the
// store then joins that stuck thread, so a failed initProcessGroup never returns. Its libuv backend
// cannot be used inside Node (libtorch exports its own copy of libuv's symbols, which Node's
// interpose). This server keeps per-connection buffers, parses a message only once it is complete,
// refuses announced sizes over its limits at once, drops a connection whose message stays incomplete
// (or that never says hello) for longer than its deadline, and caps the memory all connections and the
// keys together may hold.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace residual {

struct StoreLimits {
  size_t maxKey = 8 * 1024;                     // bytes in one key
  size_t maxValue = 8 * 1024 * 1024;            // bytes in one value
  size_t maxKeysPerMessage = 128 * 1024;        // keys in one CHECK / WAIT / MULTI_GET / MULTI_SET
  size_t maxMessage = 17 * 1024 * 1024;         // bytes in one message, all of it
  size_t maxStoreBytes = 256 * 1024 * 1024;     // keys and values held, all keys together
  size_t maxBufferedBytes = 256 * 1024 * 1024;  // incomplete input held, all connections together
  size_t maxPendingOutput = 64 * 1024 * 1024;   // replies a connection has not read yet
  size_t maxConnections = 1024;
  // A connection must say hello (VALIDATE) within this long, and finish a message it has begun within
  // messageDeadline; both are also capped by the store's timeout.
  std::chrono::milliseconds helloDeadline{10000};
  std::chrono::milliseconds messageDeadline{60000};
};

struct StoreStats {
  uint64_t accepted = 0, open = 0, keys = 0, storeBytes = 0, bufferedBytes = 0;
  // Connections closed by the server, by reason.
  uint64_t droppedTimeout = 0, droppedTooLarge = 0, droppedProtocol = 0, droppedFull = 0, refused = 0;
};

class StoreServer {
 public:
  // Listens on `port` (0: any free port) on every interface (IPv6 and IPv4 where the host has both)
  // and starts the server's thread. Throws std::runtime_error naming the port when it cannot listen.
  static std::unique_ptr<StoreServer> start(uint16_t port, std::chrono::milliseconds timeout, StoreLimits limits = {});
  ~StoreServer();  // stops the thread (never waits on a peer) and closes every connection
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  uint16_t port() const;
  // Waits until the integer counter `key` (as ADD keeps it) is at least `atLeast`; false on timeout.
  // `seen` gets the last value (0 when the key is absent).
  bool waitCounter(const std::string& key, int64_t atLeast, std::chrono::milliseconds timeout, int64_t* seen);
  // Drops every key that does not start with `keepPrefix`, and every pending WAIT on them.
  void reset(const std::string& keepPrefix);
  StoreStats stats();

  struct Impl;

 private:
  explicit StoreServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace residual
