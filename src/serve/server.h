// The openpi-compatible websocket policy server (spec section 9; openpi's
// websocket_policy_server.py): metadata frame on connect, then msgpack-numpy request -> response
// per frame; GET /healthz -> 200 "OK\n". Each connection has its own thread (clients never wait on
// each other's I/O or preprocessing); model calls go through one InferenceQueue.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "policy/policy.h"
#include "serve/inference_queue.h"

namespace pirt {

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;              // 0: any free port (tests)
  bool handle_signals = false;  // SIGINT / SIGTERM stop run()
  bool log_requests = true;     // one line per request on stderr
  // A request frame larger than this closes its connection with 1009 (message too big); other
  // clients are not affected. 0: no limit (openpi's server sets max_size=None). Three 224x224 RGB
  // images are 0.45 MB, so the default leaves room for much larger observations.
  int64_t max_message_bytes = int64_t{256} << 20;
};

class Server {
 public:
  // Binds and listens; throws Error when the address cannot be bound.
  Server(const Policy& policy, InferenceQueue& queue, const ServerOptions& opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return port_; }
  // Serves until stop() (or a signal); then stops accepting, lets requests in flight finish
  // and returns once every connection is closed.
  void run();
  void stop();  // any thread

  int64_t requests_served() const { return served_.load(); }
  int64_t requests_failed() const { return failed_.load(); }

  // Decodes a request frame, runs the policy and returns the response dict without
  // server_timing (public for tests).
  Value handle(std::string_view frame, double* model_ms, int* batch) const;

 private:
  struct Impl;
  void session(void* socket, uint64_t id);
  void end_session();
  void log(const std::string& line) const;

  const Policy& policy_;
  InferenceQueue& queue_;
  ServerOptions opt_;
  int port_ = 0;
  std::unique_ptr<Impl> impl_;
  std::atomic<int64_t> served_{0}, failed_{0};
  mutable std::mutex log_mu_;
  std::mutex sessions_mu_;
  std::condition_variable sessions_cv_;
  std::set<int> session_fds_;
  int live_sessions_ = 0;
  bool stopping_ = false;
};

}  // namespace pirt
