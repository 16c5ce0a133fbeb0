// The rendezvous store's server (see store.h for why it is ours and not libtorch's). One thread polls
// every socket without blocking; a connection's bytes are buffered until a whole message is there, then
// parsed and applied under the store's lock. No libtorch, no Node: plain POSIX sockets.
//
// The wire format is c10d's TCPStore protocol as libtorch 2.x speaks it (checked against its client and
// server with a capturing proxy): one query-type byte, then the query's fields; a string or value is a
// uint64 length and that many bytes; integers are in the host's byte order (little-endian on every
// platform libtorch ships for). A client first sends VALIDATE with a magic number, then PING with a
// nonce that the server echoes.
#include "store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace residual {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// c10d's query types, in their wire order (torch/csrc/distributed/c10d/TCPStoreBackend.hpp).
enum Query : uint8_t {
  VALIDATE = 0,
  SET,
  COMPARE_SET,
  GET,
  ADD,
  CHECK,
  WAIT,
  GETNUMKEYS,
  DELETE_KEY,
  APPEND,
  MULTI_GET,
  MULTI_SET,
  CANCEL_WAIT,
  PING,
  QUEUE_PUSH,
  QUEUE_POP,
  QUEUE_LEN,
  LIST_KEYS,
  BARRIER,
};
const char* queryName(uint8_t t) {
  static const char* names[] = {"VALIDATE",   "SET",        "COMPARE_SET", "GET",       "ADD",       "CHECK",       "WAIT",
                                "GETNUMKEYS", "DELETE_KEY", "APPEND",      "MULTI_GET", "MULTI_SET", "CANCEL_WAIT", "PING",
                                "QUEUE_PUSH", "QUEUE_POP",  "QUEUE_LEN",   "LIST_KEYS", "BARRIER"};
  return t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}
constexpr uint32_t kValidationMagic = 0x3C85F7CE;
constexpr uint8_t kReady = 0, kNotReady = 1;            // CheckResponseType
constexpr uint8_t kStopWaiting = 0, kWaitCanceled = 1;  // WaitResponseType
constexpr size_t kKeyOverhead = 64;                     // bytes a key costs beyond its text and value
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kPauseReadingAt = 1024 * 1024;  // unread replies above this: stop reading its queries

enum class Drop { Timeout, TooLarge, Protocol, Full };

struct BadPeer : std::runtime_error {
  Drop why;
  BadPeer(Drop w, const std::string& m) : std::runtime_error(m), why(w) {}
};

// One parsed query; the views point into the connection's buffer.
struct Msg {
  uint8_t type = 0;
  uint32_t u32 = 0;
  int64_t i64 = 0;
  std::string_view key, v1, v2;
  std::vector<std::string_view> keys, values;
};

// Reads one message from a buffer that may hold only part of it. Every length is checked against the
// limits before anything is taken, so an announced size costs nothing until its bytes are here.
class Reader {
 public:
  Reader(const char* p, size_t n, const StoreLimits& lim) : p_(p), n_(n), lim_(lim) {}
  size_t off = 0;
  size_t need = 0;  // when a read came short: the bytes the message needs at least

  bool take(size_t k, const char*& out) {
    if (k > lim_.maxMessage || off + k > lim_.maxMessage)
      throw BadPeer(Drop::TooLarge, "a message of more than " + std::to_string(lim_.maxMessage) + " bytes (the limit)");
    if (off + k > n_) {
      need = off + k;
      return false;
    }
    out = p_ + off;
    off += k;
    return true;
  }
  template <class T>
  bool pod(T& v) {
    const char* q;
    if (!take(sizeof(T), q)) return false;
    std::memcpy(&v, q, sizeof(T));
    return true;
  }
  bool bytes(std::string_view& v, size_t max, const char* what) {
    uint64_t len;
    if (!pod(len)) return false;
    if (len > max)
      throw BadPeer(Drop::TooLarge,
                    std::string("announced ") + what + " of " + std::to_string(len) + " bytes (limit " + std::to_string(max) + ")");
    const char* q;
    if (!take(size_t(len), q)) return false;
    v = std::string_view(q, size_t(len));
    return true;
  }
  bool key(std::string_view& v) { return bytes(v, lim_.maxKey, "a key"); }
  bool value(std::string_view& v) { return bytes(v, lim_.maxValue, "a value"); }
  bool count(uint64_t& c) {
    if (!pod(c)) return false;
    if (c > lim_.maxKeysPerMessage)
      throw BadPeer(Drop::TooLarge,
                    "announced " + std::to_string(c) + " keys in one query (limit " + std::to_string(lim_.maxKeysPerMessage) + ")");
    return true;
  }

 private:
  const char* p_;
  size_t n_;
  const StoreLimits& lim_;
};

// False when more bytes are needed; throws BadPeer for what no more bytes can fix.
bool parse(Reader& r, Msg& m, bool validated) {
  if (!r.pod(m.type)) return false;
  if (!validated && m.type != VALIDATE)
    throw BadPeer(Drop::Protocol, std::string("sent ") + queryName(m.type) + " (type " + std::to_string(m.type) + ") before VALIDATE");
  uint64_t n = 0;
  switch (m.type) {
    case VALIDATE:
    case PING: return r.pod(m.u32);
    case SET:
    case APPEND: return r.key(m.key) && r.value(m.v1);
    case COMPARE_SET: return r.key(m.key) && r.value(m.v1) && r.value(m.v2);
    case GET:
    case DELETE_KEY: return r.key(m.key);
    case ADD: return r.key(m.key) && r.pod(m.i64);
    case CHECK:
    case WAIT:
    case MULTI_GET:
      if (!r.count(n)) return false;
      for (uint64_t i = 0; i < n; i++) {
        std::string_view k;
        if (!r.key(k)) return false;
        m.keys.push_back(k);
      }
      return true;
    case MULTI_SET:
      if (!r.count(n)) return false;
      for (uint64_t i = 0; i < n; i++) {
        std::string_view k, v;
        if (!r.key(k) || !r.value(v)) return false;
        m.keys.push_back(k);
        m.values.push_back(v);
      }
      return true;
    case GETNUMKEYS:
    case CANCEL_WAIT: return true;
    default:
      throw BadPeer(Drop::Protocol, std::string("sent query ") + queryName(m.type) + " (type " + std::to_string(m.type) +
                                        "), which this store does not serve (c10d's TCPStore queries without queues)");
  }
}

// An ADD counter's value: a decimal int64 and nothing else; nullopt-like false when it is not one.
bool parseCounter(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::string peerName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

struct Conn {
  int fd = -1;
  uint64_t id = 0;
  std::string peer;
  std::string in;  // received bytes not yet applied (at most one incomplete message after processing)
  std::string out;
  size_t outOff = 0;
  size_t need = 0;  // parse again only once `in` holds this many bytes
  bool validated = false, partial = false;
  Clock::time_point accepted, partialSince, lastWrite;
  size_t awaiting = 0;                // keys of the pending WAIT not yet set
  std::vector<std::string> waitKeys;  // the keys it waits on (to forget them on CANCEL_WAIT / close)
  size_t pendingOut() const { return out.size() - outOff; }
};

}  // namespace

struct StoreServer::Impl {
  StoreLimits lim;
  milliseconds hello{0}, msgDeadline{0};
  std::vector<int> listenFds;
  int wake[2] = {-1, -1};
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> stopping{false};
  Clock::time_point acceptPausedUntil{};

  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::string, std::string> kv;
  std::unordered_map<std::string, std::vector<uint64_t>> waiters;  // key -> connections waiting on it
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
  uint64_t nextId = 1;
  size_t kvBytes = 0, buffered = 0;
  StoreStats st;
  int warned = 0;

  ~Impl() {
    for (int fd : listenFds) ::close(fd);
    for (auto& [id, c] : conns) ::close(c->fd);
    for (int fd : wake)
      if (fd >= 0) ::close(fd);
  }

  void warn(const std::string& m) {
    // A few lines, not one per connection of a peer that keeps trying.
    if (warned < 20)
      std::fprintf(stderr, "[residual] rendezvous store: %s\n", m.c_str());
    else if (warned == 20)
      std::fprintf(stderr, "[residual] rendezvous store: (further dropped connections not shown)\n");
    warned++;
  }

  // ---- replies ---------------------------------------------------------------------------------
  static void putRaw(Conn& c, const void* p, size_t n) {
    if (c.pendingOut() == 0) c.lastWrite = Clock::now();
    c.out.append(static_cast<const char*>(p), n);
  }
  template <class T>
  static void put(Conn& c, T v) {
    putRaw(c, &v, sizeof(T));
  }
  static void putBytes(Conn& c, std::string_view v) {
    put<uint64_t>(c, v.size());
    putRaw(c, v.data(), v.size());
  }

  // ---- the store ---------------------------------------------------------------------------------
  static size_t cost(size_t k, size_t v) { return k + v + kKeyOverhead; }

  void wakeWaiters(const std::string& key) {
    auto it = waiters.find(key);
    if (it == waiters.end()) return;
    std::vector<uint64_t> ids = std::move(it->second);
    waiters.erase(it);
    for (uint64_t id : ids) {
      auto c = conns.find(id);
      if (c == conns.end() || c->second->awaiting == 0) continue;
      if (--c->second->awaiting == 0) {
        c->second->waitKeys.clear();
        put<uint8_t>(*c->second, kStopWaiting);
      }
    }
  }

  void setKey(const std::string& key, std::string value) {
    auto it = kv.find(key);
    size_t old = it == kv.end() ? 0 : cost(key.size(), it->second.size());
    size_t now = cost(key.size(), value.size());
    if (kvBytes - old + now > lim.maxStoreBytes)
      throw BadPeer(Drop::Full, "would pass the store's limit of " + std::to_string(lim.maxStoreBytes) + " bytes for all keys");
    kvBytes = kvBytes - old + now;
    kv[key] = std::move(value);
    wakeWaiters(key);
    cv.notify_all();
  }

  void forgetWait(Conn& c) {
    for (auto& k : c.waitKeys) {
      auto it = waiters.find(k);
      if (it == waiters.end()) continue;
      auto& v = it->second;
      v.erase(std::remove(v.begin(), v.end(), c.id), v.end());
      if (v.empty()) waiters.erase(it);
    }
    c.waitKeys.clear();
    c.awaiting = 0;
  }

  void apply(Conn& c, Msg& m) {
    switch (m.type) {
      case VALIDATE:
        if (m.u32 != kValidationMagic)
          throw BadPeer(Drop::Protocol, "sent VALIDATE with a wrong magic number (not a c10d TCPStore client)");
        c.validated = true;
        break;
      case PING: put<uint32_t>(c, m.u32); break;
      case SET: setKey(std::string(m.key), std::string(m.v1)); break;
      case COMPARE_SET: {
        std::string key(m.key);
        auto it = kv.find(key);
        std::string reply;
        if (it == kv.end()) {
          // As libtorch's servers: a missing key is created only when the expected value is empty.
          if (m.v1.empty()) setKey(key, std::string(m.v2));
          reply = m.v1.empty() ? std::string(m.v2) : std::string(m.v1);
        } else {
          if (it->second == m.v1) setKey(key, std::string(m.v2));
          reply = kv[key];
        }
        putBytes(c, reply);
        break;
      }
      case GET: {
        auto it = kv.find(std::string(m.key));
        putBytes(c, it == kv.end() ? std::string_view() : std::string_view(it->second));
        break;
      }
      case ADD: {
        std::string key(m.key);
        int64_t v = 0;
        auto it = kv.find(key);
        if (it != kv.end() && !parseCounter(it->second, v))
          throw BadPeer(Drop::Protocol, "sent ADD to a key whose value is not an integer");
        int64_t sum;
        if (__builtin_add_overflow(v, m.i64, &sum)) throw BadPeer(Drop::Protocol, "sent ADD that overflows a 64-bit counter");
        setKey(key, std::to_string(sum));
        put<int64_t>(c, sum);
        break;
      }
      case CHECK: {
        bool all = true;
        for (auto k : m.keys) all = all && kv.count(std::string(k)) > 0;
        put<uint8_t>(c, all ? kReady : kNotReady);
        break;
      }
      case WAIT: {
        forgetWait(c);  // a client has one WAIT at a time; a new one replaces it
        size_t missing = 0;
        for (auto k : m.keys) {
          std::string key(k);
          if (kv.count(key)) continue;
          waiters[key].push_back(c.id);
          c.waitKeys.push_back(std::move(key));
          missing++;
        }
        c.awaiting = missing;
        if (missing == 0) put<uint8_t>(c, kStopWaiting);
        break;
      }
      case GETNUMKEYS: put<int64_t>(c, int64_t(kv.size())); break;
      case DELETE_KEY: {
        auto it = kv.find(std::string(m.key));
        int64_t n = 0;
        if (it != kv.end()) {
          kvBytes -= cost(it->first.size(), it->second.size());
          kv.erase(it);
          n = 1;
        }
        put<int64_t>(c, n);
        break;
      }
      case APPEND: {
        std::string key(m.key);
        auto it = kv.find(key);
        std::string v = it == kv.end() ? std::string() : it->second;
        v.append(m.v1);
        setKey(key, std::move(v));
        break;
      }
      case MULTI_GET:
        for (auto k : m.keys) {
          auto it = kv.find(std::string(k));
          putBytes(c, it == kv.end() ? std::string_view() : std::string_view(it->second));
        }
        break;
      case MULTI_SET:
        for (size_t i = 0; i < m.keys.size(); i++) setKey(std::string(m.keys[i]), std::string(m.values[i]));
        break;
      case CANCEL_WAIT:
        forgetWait(c);
        put<uint8_t>(c, kWaitCanceled);
        break;
    }
    if (c.pendingOut() > lim.maxPendingOutput)
      throw BadPeer(Drop::Full, "does not read its replies (" + std::to_string(c.pendingOut()) + " bytes pending)");
  }

  // Applies every complete message in c.in; keeps the incomplete rest.
  void process(Conn& c) {
    if (c.in.size() < c.need) return;
    size_t off = 0;
    bool completed = false;
    while (off < c.in.size()) {
      Reader r(c.in.data() + off, c.in.size() - off, lim);
      Msg m;
      if (!parse(r, m, c.validated)) {
        c.need = r.need;
        break;
      }
      apply(c, m);
      off += r.off;
      completed = true;
      c.need = 0;
    }
    buffered -= off;
    c.in.erase(0, off);
    if (c.in.empty()) {
      c.partial = false;
      c.need = 0;
    } else if (!c.partial || completed) {
      c.partial = true;
      c.partialSince = Clock::now();
    }
  }

  // ---- connections --------------------------------------------------------------------------------
  void close(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn& c = *it->second;
    forgetWait(c);
    buffered -= c.in.size();
    ::close(c.fd);
    conns.erase(it);
  }

  void drop(Conn& c, Drop why, const std::string& what) {
    switch (why) {
      case Drop::Timeout: st.droppedTimeout++; break;
      case Drop::TooLarge: st.droppedTooLarge++; break;
      case Drop::Protocol: st.droppedProtocol++; break;
      case Drop::Full: st.droppedFull++; break;
    }
    warn("closed the connection from " + c.peer + ": it " + what);
    close(c.id);
  }

  void flush(Conn& c) {
    while (c.pendingOut() > 0) {
      ssize_t n = ::send(c.fd, c.out.data() + c.outOff, c.pendingOut(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.outOff += size_t(n);
        c.lastWrite = Clock::now();
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
      close(c.id);  // the peer is gone
      return;
    }
    if (c.pendingOut() == 0) {
      c.out.clear();
      c.outOff = 0;
    } else if (c.outOff > kPauseReadingAt) {
      c.out.erase(0, c.outOff);
      c.outOff = 0;
    }
  }

  // False when the connection was closed.
  bool readable(Conn& c) {
    uint64_t id = c.id;
    for (;;) {
      if (buffered >= lim.maxBufferedBytes) {
        drop(c, Drop::Full,
             "sent more than the store buffers for all connections together (" + std::to_string(lim.maxBufferedBytes) + " bytes)");
        return false;
      }
      size_t room = std::min(kReadChunk, lim.maxBufferedBytes - buffered);
      size_t had = c.in.size();
      c.in.resize(had + room);
      ssize_t n = ::recv(c.fd, &c.in[had], room, MSG_DONTWAIT);
      if (n <= 0) {
        c.in.resize(had);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
        close(id);  // closed by the peer, or reset
        return false;
      }
      c.in.resize(had + size_t(n));
      buffered += size_t(n);
      try {
        process(c);
      } catch (const BadPeer& e) {
        drop(c, e.why, e.what());
        return false;
      } catch (const std::bad_alloc&) {
        drop(c, Drop::Full, "needed more memory than the store could get");
        return false;
      }
      if (c.pendingOut() > 0) flush(c);
      if (conns.find(id) == conns.end()) return false;
      if (c.pendingOut() > kPauseReadingAt) return true;  // read more once it has read its replies
      if (size_t(n) < room) return true;
    }
  }

  void acceptAll(int lfd) {
    for (;;) {
      int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) acceptPausedUntil = Clock::now() + milliseconds(100);
        return;
      }
      if (conns.size() >= lim.maxConnections) {
        st.refused++;
        ::close(fd);
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      c->id = nextId++;
      c->peer = peerName(fd);
      c->accepted = Clock::now();
      st.accepted++;
      conns.emplace(c->id, std::move(c));
    }
  }

  // Drops connections past a deadline; returns how long until the next one (capped).
  milliseconds sweep() {
    auto now = Clock::now();
    milliseconds next{1000};
    std::vector<std::pair<uint64_t, std::string>> late;
    auto left = [&](Clock::time_point since, milliseconds limit, const char* what, uint64_t id) {
      auto d = std::chrono::duration_cast<milliseconds>(since + limit - now);
      if (d.count() <= 0)
        late.emplace_back(id, std::string(what) + " within " + std::to_string(limit.count()) + " ms");
      else
        next = std::min(next, d);
    };
    for (auto& [id, c] : conns) {
      if (!c->validated)
        left(c->accepted, hello, "did not say hello (VALIDATE)", id);
      else if (c->partial)
        left(c->partialSince, msgDeadline, "did not finish the message it began", id);
      if (c->pendingOut() > 0) left(c->lastWrite, msgDeadline, "did not read its replies", id);
    }
    for (auto& [id, what] : late) {
      auto it = conns.find(id);
      if (it != conns.end()) drop(*it->second, Drop::Timeout, what);
    }
    return std::max(next, milliseconds(1));
  }

  void run() {
    std::vector<pollfd> fds;
    std::vector<uint64_t> ids;
    milliseconds wait{100};
    while (!stopping.load()) {
      fds.clear();
      ids.clear();
      bool acceptOk = Clock::now() >= acceptPausedUntil;
      fds.push_back({wake[0], POLLIN, 0});
      for (int lfd : listenFds) fds.push_back({lfd, short(acceptOk ? POLLIN : 0), 0});
      size_t first = fds.size();
      {
        std::lock_guard<std::mutex> lk(mu);
        for (auto& [id, c] : conns) {
          short ev = 0;
          if (c->pendingOut() <= kPauseReadingAt) ev |= POLLIN;
          if (c->pendingOut() > 0) ev |= POLLOUT;
          fds.push_back({c->fd, ev, 0});
          ids.push_back(id);
        }
      }
      int n = ::poll(fds.data(), fds.size(), int(acceptOk ? wait.count() : std::min<int64_t>(wait.count(), 100)));
      if (n < 0 && errno != EINTR) {
        std::this_thread::sleep_for(milliseconds(10));
        continue;
      }
      if (fds[0].revents) {
        char buf[64];
        while (::read(wake[0], buf, sizeof(buf)) > 0) {}
      }
      if (stopping.load()) break;
      std::lock_guard<std::mutex> lk(mu);
      for (size_t i = 1; i < first; i++)
        if (fds[i].revents & POLLIN) acceptAll(fds[i].fd);
      for (size_t i = first; i < fds.size(); i++) {
        if (!fds[i].revents) continue;
        auto it = conns.find(ids[i - first]);
        if (it == conns.end()) continue;
        Conn& c = *it->second;
        if (fds[i].revents & POLLOUT) {
          flush(c);
          if (conns.find(ids[i - first]) == conns.end()) continue;
        }
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) readable(c);
      }
      wait = sweep();
      st.open = conns.size();
    }
  }
};

namespace {
// A listening socket on every interface of one family; -1 (errno set) when the family is unusable.
int listenOn(int family, uint16_t port) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(port);
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(port);
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0 || ::listen(fd, SOMAXCONN) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}
}  // namespace

std::unique_ptr<StoreServer> StoreServer::start(uint16_t port, std::chrono::milliseconds timeout, StoreLimits limits) {
  auto impl = std::make_unique<Impl>();
  impl->lim = limits;
  impl->hello = std::max(milliseconds(1), std::min(limits.helloDeadline, timeout));
  impl->msgDeadline = std::max(milliseconds(1), std::min(limits.messageDeadline, timeout));
  // IPv6 with IPv4-mapped addresses where the host has IPv6; IPv4 alone otherwise.
  int fd = listenOn(AF_INET6, port);
  if (fd < 0 && errno != EADDRINUSE) fd = listenOn(AF_INET, port);
  if (fd < 0) {
    int e = errno;
    throw std::runtime_error(
        "the rendezvous store cannot listen on port " + std::to_string(port) + ": " + std::strerror(e) +
        (e == EADDRINUSE ? " (another process, or an earlier job still running, holds it: choose another master port)" : ""));
  }
  impl->listenFds.push_back(fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  impl->port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                        : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (::pipe2(impl->wake, O_NONBLOCK | O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("the rendezvous store cannot make its wake-up pipe: ") + std::strerror(errno));
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    try {
      raw->run();
    } catch (...) {
      // Nothing in run() is expected to throw past its per-connection handlers; if it does, the store
      // stops serving (clients then time out with their own errors) rather than taking the process down.
      std::fprintf(stderr, "[residual] rendezvous store: stopped after an unexpected error\n");
    }
  });
  return std::unique_ptr<StoreServer>(new StoreServer(std::move(impl)));
}

StoreServer::StoreServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StoreServer::~StoreServer() {
  impl_->stopping.store(true);
  ssize_t w = ::write(impl_->wake[1], "x", 1);
  (void)w;
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->cv.notify_all();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t StoreServer::port() const { return impl_->port; }

bool StoreServer::waitCounter(const std::string& key, int64_t atLeast, std::chrono::milliseconds timeout, int64_t* seen) {
  std::unique_lock<std::mutex> lk(impl_->mu);
  auto value = [&] {
    auto it = impl_->kv.find(key);
    int64_t v = 0;
    if (it != impl_->kv.end() && !parseCounter(it->second, v)) v = 0;
    return v;
  };
  bool ok = impl_->cv.wait_for(lk, timeout, [&] { return impl_->stopping.load() || value() >= atLeast; });
  if (seen) *seen = value();
  return ok && value() >= atLeast;
}

void StoreServer::reset(const std::string& keepPrefix) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  for (auto it = impl_->kv.begin(); it != impl_->kv.end();) {
    if (it->first.compare(0, keepPrefix.size(), keepPrefix) == 0) {
      ++it;
    } else {
      impl_->kvBytes -= Impl::cost(it->first.size(), it->second.size());
      it = impl_->kv.erase(it);
    }
  }
}

StoreStats StoreServer::stats() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  StoreStats s = impl_->st;
  s.open = impl_->conns.size();
  s.keys = impl_->kv.size();
  s.storeBytes = impl_->kvBytes;
  s.bufferedBytes = impl_->buffered;
  return s;
}

}  // namespace residual
