// The websocket server with a fake engine and a C++ websocket client: protocol, errors,
// concurrency and shutdown. (tests/serve_py runs openpi's own client against `pirt serve`.)
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <cmath>
#include <limits>
#include <thread>

#include "../policy/fake_engine.h"
#include "core/error.h"
#include "policy/policy.h"
#include "serve/inference_queue.h"
#include "serve/msgpack_numpy.h"
#include "serve/server.h"

namespace pirt {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using testing::FakeEngine;

const std::string kData = PIRT_TEST_DATA;
constexpr int64_t kMaxMessage = 4 << 20;  // the test server's request size limit (a request is ~0.3 MB)

PolicyOptions options() {
  PolicyOptions o;
  o.robot = Robot::Libero;
  o.tokenizer_path = kData + "/tokenizer/tiny_paligemma.model";
  o.norm_stats_path = kData + "/norm_stats/libero/norm_stats.json";
  o.same_noise = true;  // answers depend only on the request
  return o;
}

NdArray f64(std::vector<double> v) { return NdArray::from_doubles(v, {static_cast<int64_t>(v.size())}); }

Value request(double s0) {
  NdArray img;
  img.dtype = "|u1";
  img.shape = {224, 224, 3};
  img.data.assign(224 * 224 * 3, '\x50');
  Value r{ValueMap{}};
  r.set("observation/image", img);
  r.set("observation/wrist_image", img);
  r.set("observation/state", f64({s0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}));
  r.set("prompt", "pick up the fork");
  return r;
}

struct Frame {
  bool text = false;
  std::string data;
  int close_code = 0;  // set when the read ended in a close
};

class Client {
 public:
  explicit Client(int port) : ws_(ioc_) {
    tcp::resolver resolver(ioc_);
    net::connect(ws_.next_layer(), resolver.resolve("127.0.0.1", std::to_string(port)));
    ws_.read_message_max(0);
    ws_.handshake("127.0.0.1", "/");
    metadata = msgpack_decode(read().data);
  }
  void send(const std::string& bytes) {
    ws_.binary(true);
    ws_.write(net::buffer(bytes));
  }
  Frame read() {
    beast::flat_buffer b;
    beast::error_code ec;
    ws_.read(b, ec);
    Frame f;
    if (ec) {
      f.close_code = ws_.reason().code;
      return f;
    }
    f.text = ws_.got_text();
    f.data = beast::buffers_to_string(b.data());
    return f;
  }
  Value infer(const Value& req) {
    send(msgpack_encode(req));
    const Frame f = read();
    if (f.text || f.close_code) throw Error("server error: " + f.data);
    return msgpack_decode(f.data);
  }
  Value metadata;

 private:
  net::io_context ioc_;
  websocket::stream<tcp::socket> ws_;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = std::make_unique<FakeEngine>(config_tiny(Arch::Pi0), 0, /*delay_ms=*/5);
    policy_ = std::make_unique<Policy>(engine_->config(), engine_->horizon(), options());
    queue_ = std::make_unique<InferenceQueue>(*engine_, *policy_, 8);
    ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    so.log_requests = false;
    so.max_message_bytes = kMaxMessage;
    server_ = std::make_unique<Server>(*policy_, *queue_, so);
    thread_ = std::thread([this] { server_->run(); });
  }
  void TearDown() override {
    server_->stop();
    thread_.join();
    queue_->stop();
  }
  // The answer a fresh policy gives for the same request (B = 1, same noise).
  Value reference(const Value& req) {
    FakeEngine e(config_tiny(Arch::Pi0));
    const Policy p(e.config(), e.horizon(), options());
    return p.infer(e, req);
  }
  int port() const { return server_->port(); }

  std::unique_ptr<FakeEngine> engine_;
  std::unique_ptr<Policy> policy_;
  std::unique_ptr<InferenceQueue> queue_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

TEST_F(ServerTest, MetadataThenRequestsWithTimings) {
  Client c(port());
  ASSERT_TRUE(c.metadata.is_map());
  EXPECT_TRUE(c.metadata.as_map().empty());
  const Value r1 = c.infer(request(0.1));
  const NdArray& a = r1.find("actions")->as_array();
  EXPECT_EQ(a.dtype, "<f8");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{50, 7}));
  EXPECT_EQ(a.data, reference(request(0.1)).find("actions")->as_array().data);
  ASSERT_TRUE(r1.find("policy_timing") && r1.find("policy_timing")->find("infer_ms"));
  ASSERT_TRUE(r1.find("server_timing")->find("infer_ms")->is_float());
  EXPECT_EQ(r1.find("server_timing")->find("prev_total_ms"), nullptr);  // absent on the first request
  const Value r2 = c.infer(request(0.2));
  ASSERT_NE(r2.find("server_timing")->find("prev_total_ms"), nullptr);
  EXPECT_GT(r2.find("server_timing")->find("prev_total_ms")->as_float(), 0.0);
}

// A frame over the limit closes that connection with 1009 (message too big); the server keeps
// serving the others and new ones.
TEST_F(ServerTest, OversizedFrameClosesOnlyItsConnectionWith1009) {
  Client other(port());
  Client big(port());
  big.send(std::string(static_cast<size_t>(kMaxMessage) + 1, 'x'));
  const Frame f = big.read();
  EXPECT_EQ(f.close_code, static_cast<int>(websocket::close_code::too_big));
  EXPECT_EQ(other.infer(request(0.3)).find("actions")->as_array().shape, (std::vector<int64_t>{50, 7}));
  Client fresh(port());
  EXPECT_EQ(fresh.infer(request(0.4)).find("actions")->as_array().shape, (std::vector<int64_t>{50, 7}));
  EXPECT_EQ(server_->requests_failed(), 1);
}

TEST_F(ServerTest, HealthCheck) {
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port())));
  const std::string req = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  net::write(s, net::buffer(req));
  std::string resp;
  beast::error_code ec;
  char buf[512];
  for (;;) {
    const size_t n = s.read_some(net::buffer(buf), ec);
    resp.append(buf, n);
    if (ec) break;
  }
  EXPECT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << resp;
  EXPECT_EQ(resp.substr(resp.size() - 3), "OK\n");
}

void expect_error_then_close(int port, const std::string& bytes, const std::string& needle) {
  Client c(port);
  c.send(bytes);
  const Frame f = c.read();
  EXPECT_TRUE(f.text) << needle;
  EXPECT_NE(f.data.find(needle), std::string::npos) << f.data;
  const Frame end = c.read();
  EXPECT_EQ(end.close_code, 1011) << needle;
}

TEST_F(ServerTest, BadRequestsGetTextThenClose1011AndOthersGoOn) {
  Client bystander(port());
  EXPECT_NO_THROW(bystander.infer(request(0.1)));

  expect_error_then_close(port(), "\xc1\x00garbage", "not msgpack");
  expect_error_then_close(port(), msgpack_encode(Value{ValueList{}}), "expected a dict");
  Value r = request(0.1);
  r.as_map().erase(r.as_map().begin());
  expect_error_then_close(port(), msgpack_encode(r), "observation/image");
  r = request(0.1);
  r.set("observation/state", f64({1, 2, 3}));
  expect_error_then_close(port(), msgpack_encode(r), "expected shape (8,)");
  r = request(0.1);
  r.set("observation/state", f64({1, 2, 3, 4, 5, 6, 7, std::numeric_limits<double>::quiet_NaN()}));
  expect_error_then_close(port(), msgpack_encode(r), "NaN");
  r = request(0.1);
  NdArray bad = r.find("observation/image")->as_array();
  bad.dtype = "<c8";
  bad.data.resize(224 * 224 * 3 * 8);
  r.set("observation/image", bad);
  expect_error_then_close(port(), msgpack_encode(r), "dtype");
  r = request(0.1);
  NdArray s = r.find("observation/state")->as_array();
  s.data.resize(5);
  r.set("observation/state", s);
  expect_error_then_close(port(), msgpack_encode(r), "bytes");

  EXPECT_NO_THROW(bystander.infer(request(0.3)));
  EXPECT_EQ(server_->requests_failed(), 7);
}

// An error message that quotes request bytes which are not UTF-8 (a dtype, a key) still goes out
// as a valid text frame (those bytes escaped as \\xNN), not one the client fails with 1007.
TEST_F(ServerTest, ErrorTextIsValidUtf8WhenTheRequestIsNot) {
  Value r = request(0.1);
  NdArray s = r.find("observation/state")->as_array();
  s.dtype = "<f\xff\xc3";
  r.set("observation/state", s);
  expect_error_then_close(port(), msgpack_encode(r), "unsupported array dtype '<f\\xff\\xc3'");
  s.dtype = "\xc3\xa9\xed\xa0\x80";  // valid UTF-8 stays, a surrogate is escaped
  r.set("observation/state", s);
  expect_error_then_close(port(), msgpack_encode(r), "dtype '\xc3\xa9\\xed\\xa0\\x80'");
  EXPECT_NO_THROW(Client(port()).infer(request(0.2)));
}

TEST_F(ServerTest, ConcurrentClientsAreBatchedAndGetTheirOwnAnswers) {
  constexpr int kClients = 8, kRequests = 50;
  std::vector<std::string> want(kClients);
  for (int c = 0; c < kClients; ++c) want[c] = reference(request(0.1 * c)).find("actions")->as_array().data;
  std::atomic<int> ok{0}, wrong{0}, errors{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c)
    threads.emplace_back([&, c] {
      try {
        Client client(port());
        for (int i = 0; i < kRequests; ++i) {
          const Value r = client.infer(request(0.1 * c));
          (r.find("actions")->as_array().data == want[c] ? ok : wrong)++;
        }
      } catch (const std::exception&) {
        errors++;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients * kRequests);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(errors.load(), 0);
  int max_batch = 0, rows = 0;
  for (int b : engine_->batches()) {
    max_batch = std::max(max_batch, b);
    rows += b;
  }
  EXPECT_EQ(rows, kClients * kRequests);
  EXPECT_GT(max_batch, 1);  // with 8 clients and a 5 ms model, requests meet in the queue
  EXPECT_LE(max_batch, 8);
}

TEST_F(ServerTest, StopClosesConnections) {
  Client c(port());
  EXPECT_NO_THROW(c.infer(request(0.1)));
  server_->stop();
  thread_.join();
  EXPECT_NE(c.read().close_code + 1, 0);  // the read ends (EOF) instead of hanging
  thread_ = std::thread([] {});
}

TEST(InferenceQueue, EngineErrorsReachEveryCaller) {
  class Broken : public FakeEngine {
   public:
    Broken() : FakeEngine(config_tiny(Arch::Pi0)) {}
    HostTensor sample_actions(const ModelInputs&, int, uint64_t) override { throw Error("engine broke"); }
  } engine;
  const Policy policy(engine.config(), engine.horizon(), options());
  InferenceQueue q(engine, policy, 4);
  const PreparedRequest p = policy.prepare(request(0.1));
  EXPECT_THROW(q.run(p), Error);
  q.stop();
  EXPECT_THROW(q.run(p), Error);
}

}  // namespace
}  // namespace pirt
