#include "serve/server.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <csignal>
#include <ctime>
#include <functional>
#include <iostream>
#include <thread>

#include "core/error.h"
#include "serve/msgpack_numpy.h"

namespace pirt {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// openpi closes with INTERNAL_ERROR and this reason after sending the traceback as text.
constexpr const char* kCloseReason = "Internal server error. Traceback included in previous frame.";

std::string target_path(beast::string_view target) {
  std::string t(target);
  const size_t q = t.find('?');
  return q == std::string::npos ? t : t.substr(0, q);
}

// A text frame must be UTF-8 (clients close with 1007 otherwise), but error messages may quote
// request bytes (a dtype, a key): escape what is not UTF-8 as \xNN, as Python's repr would.
std::string utf8_text(const std::string& s) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len > 1) {
      // Second byte ranges exclude overlongs, surrogates and code points past U+10FFFF.
      const unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
      const unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
      bool ok = i + len <= n && p[i + 1] >= lo && p[i + 1] <= hi;
      for (size_t k = 2; ok && k < len; ++k) ok = p[i + k] >= 0x80 && p[i + k] <= 0xbf;
      if (!ok) len = 0;
    }
    if (len == 0) {
      out += strformat("\\x%02x", c);
      ++i;
    } else {
      out.append(s, i, len);
      i += len;
    }
  }
  return out;
}

}  // namespace

struct Server::Impl {
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::signal_set signals{ioc};

  void accept_loop(Server* s) {
    acceptor.async_accept([this, s](beast::error_code ec, tcp::socket sock) {
      if (ec) return;  // closed by stop()
      uint64_t id;
      {
        std::lock_guard<std::mutex> lock(s->sessions_mu_);
        if (s->stopping_) return;
        ++s->live_sessions_;
        s->session_fds_.insert(sock.native_handle());
        id = next_id++;
      }
      std::thread([s, id, sock = std::move(sock)]() mutable { s->session(&sock, id); }).detach();
      accept_loop(s);
    });
  }
  uint64_t next_id = 1;
};

Server::Server(const Policy& policy, InferenceQueue& queue, const ServerOptions& opt)
    : policy_(policy), queue_(queue), opt_(opt), impl_(std::make_unique<Impl>()) {
  beast::error_code ec;
  const auto addr = net::ip::make_address(opt.host, ec);
  if (ec) throw Error("serve: bad --host '" + opt.host + "'");
  if (opt.port < 0 || opt.port > 65535) throw Error(strformat("serve: bad --port %d", opt.port));
  const tcp::endpoint ep(addr, static_cast<uint16_t>(opt.port));
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw Error(strformat("serve: cannot listen on %s:%d: %s", opt.host.c_str(), opt.port, ec.message().c_str()));
  port_ = impl_->acceptor.local_endpoint().port();
}

Server::~Server() {
  stop();
  std::unique_lock<std::mutex> lock(sessions_mu_);
  sessions_cv_.wait(lock, [&] { return live_sessions_ == 0; });
}

void Server::log(const std::string& line) const {
  if (!opt_.log_requests) return;
  char ts[32];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(log_mu_);
  std::cerr << ts << " pirt serve: " << line << std::endl;
}

void Server::run() {
  if (opt_.handle_signals) {
    impl_->signals.add(SIGINT);
    impl_->signals.add(SIGTERM);
    impl_->signals.async_wait([this](beast::error_code ec, int sig) {
      if (ec) return;
      log(strformat("signal %d: shutting down", sig));
      stop();
    });
  }
  impl_->accept_loop(this);
  impl_->ioc.run();
  std::unique_lock<std::mutex> lock(sessions_mu_);
  sessions_cv_.wait(lock, [&] { return live_sessions_ == 0; });
}

void Server::stop() {
  net::post(impl_->ioc, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->signals.cancel(ec);
    {
      // SHUT_RD ends each connection's blocking read; a reply in flight is still written.
      std::lock_guard<std::mutex> lock(sessions_mu_);
      stopping_ = true;
      for (int fd : session_fds_) ::shutdown(fd, SHUT_RD);
    }
    impl_->ioc.stop();
  });
  // run() may not be running (a Server that was never run, or run() already returned).
  if (impl_->ioc.stopped()) {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    stopping_ = true;
    for (int fd : session_fds_) ::shutdown(fd, SHUT_RD);
  }
}

Value Server::handle(std::string_view frame, double* model_ms, int* batch) const {
  const Value request = msgpack_decode(frame);
  const PreparedRequest prepared = policy_.prepare(request);
  InferenceQueue::Result r = queue_.run(prepared);
  RequestTiming t;
  t.model_ms = r.model_ms;
  if (model_ms) *model_ms = r.model_ms;
  if (batch) *batch = r.batch;
  return policy_.finish(prepared, r.actions.data(), t);
}

void Server::session(void* socket_ptr, uint64_t id) {
  tcp::socket& sock = *static_cast<tcp::socket*>(socket_ptr);
  const int fd = sock.native_handle();
  std::string peer = "?";
  {
    beast::error_code ec;
    const auto ep = sock.remote_endpoint(ec);
    if (!ec) peer = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  // The fd leaves the registry before its socket closes, so stop() never shuts down a reused fd.
  auto unregister_fd = [this, fd] {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    session_fds_.erase(fd);
  };
  struct Unregister {
    std::function<void()> f;
    ~Unregister() { f(); }
  };

  try {
    beast::error_code ec;
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::read(sock, buf, req, ec);
    if (ec) throw beast::system_error(ec);
    const std::string path = target_path(req.target());
    if (path == "/healthz" || !websocket::is_upgrade(req)) {
      // openpi's process_request answers /healthz (upgrade or not); anything else that is not a
      // websocket handshake gets 426, as the websockets library sends.
      const bool health = path == "/healthz";
      http::response<http::string_body> res{health ? http::status::ok : http::status::upgrade_required,
                                            req.version()};
      res.set(http::field::server, "pirt");
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.set(http::field::connection, "close");
      res.body() = health ? "OK\n" : "Failed to open a WebSocket connection: this is a websocket server.\n";
      res.prepare_payload();
      http::write(sock, res, ec);
      sock.shutdown(tcp::socket::shutdown_both, ec);
      unregister_fd();
      sock.close(ec);
      end_session();
      return;
    }

    websocket::stream<tcp::socket> ws(std::move(sock));
    const Unregister unregister{unregister_fd};  // destroyed before ws
    ws.read_message_max(static_cast<std::uint64_t>(opt_.max_message_bytes));  // 0: no limit
    ws.auto_fragment(false);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "pirt"); }));
    ws.accept(req);
    log(strformat("connection %llu from %s opened", static_cast<unsigned long long>(id), peer.c_str()));

    ws.binary(true);
    ws.write(net::buffer(msgpack_encode(policy_.metadata())));

    double prev_total_ms = -1;
    beast::flat_buffer msg;  // one a connection: its capacity is reused by every request
    for (int64_t n = 1;; ++n) {
      const auto start = Clock::now();
      msg.clear();
      if (msg.capacity() > (32u << 20)) msg.shrink_to_fit();  // (an odd huge frame is not kept for good)
      ws.read(msg, ec);
      if (ec == websocket::error::message_too_big) {
        // Beast has answered with close 1009 (message too big) and failed the read.
        ++failed_;
        log(strformat("connection %llu request %lld: frame larger than %lld bytes (--max-message-mb); closed with 1009",
                      static_cast<unsigned long long>(id), static_cast<long long>(n),
                      static_cast<long long>(opt_.max_message_bytes)));
        break;
      }
      if (ec) {
        log(strformat("connection %llu from %s closed", static_cast<unsigned long long>(id), peer.c_str()));
        break;
      }
      const std::string_view frame(static_cast<const char*>(msg.data().data()), msg.size());
      const auto t_infer = Clock::now();
      Value response;
      double model_ms = 0;
      int batch = 0;
      try {
        response = handle(frame, &model_ms, &batch);
      } catch (const std::exception& e) {
        ++failed_;
        log(strformat("connection %llu request %lld failed: %s", static_cast<unsigned long long>(id),
                      static_cast<long long>(n), e.what()));
        // openpi: the traceback as a text frame, then close 1011.
        ws.text(true);
        ws.write(net::buffer(utf8_text(std::string("pirt: error in inference server:\n") + e.what() + "\n")), ec);
        if (!ec) ws.close(websocket::close_reason(websocket::close_code::internal_error, kCloseReason), ec);
        if (!ec) {
          timeval tv{5, 0};  // wait for the client's close frame, but not forever
          ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
          for (int i = 0; i < 16 && !ec; ++i) {
            beast::flat_buffer drain;
            ws.read(drain, ec);
          }
        }
        break;
      }
      const double infer_ms = ms_since(t_infer);
      Value timing{ValueMap{}};
      timing.set("infer_ms", infer_ms);
      if (prev_total_ms >= 0) timing.set("prev_total_ms", prev_total_ms);
      response.set("server_timing", std::move(timing));
      ws.binary(true);
      ws.write(net::buffer(msgpack_encode(response)), ec);
      if (ec) break;
      ++served_;
      prev_total_ms = ms_since(start);
      log(strformat("connection %llu request %lld: %.1f ms (model %.1f ms, batch %d)",
                    static_cast<unsigned long long>(id), static_cast<long long>(n), infer_ms, model_ms, batch));
    }
  } catch (const std::exception& e) {
    // A handshake that failed or a connection that dropped: this client only.
    log(strformat("connection %llu from %s: %s", static_cast<unsigned long long>(id), peer.c_str(), e.what()));
  }
  unregister_fd();
  beast::error_code ec;
  sock.close(ec);  // still open when the handshake failed
  end_session();
}

void Server::end_session() {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  --live_sessions_;
  sessions_cv_.notify_all();
}

}  // namespace pirt
