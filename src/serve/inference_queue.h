// One engine, many clients: requests are queued to a single worker thread, which runs whatever is
// waiting (up to max_batch) as one Engine::sample_actions call and hands each row back.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "pirt/engine.h"
#include "policy/policy.h"

namespace pirt {

class InferenceQueue {
 public:
  struct Result {
    std::vector<float> actions;  // [H * action_dim], normalized space
    double model_ms = 0;         // the engine call this request was part of
    int batch = 1;
  };

  InferenceQueue(Engine& engine, const Policy& policy, int max_batch);
  ~InferenceQueue();
  InferenceQueue(const InferenceQueue&) = delete;
  InferenceQueue& operator=(const InferenceQueue&) = delete;

  // Blocks until the request's actions are ready; rethrows what the engine threw.
  Result run(const PreparedRequest& req);
  // Fails waiting requests and ends the worker after the batch in flight.
  void stop();

  int64_t batches_run() const;

 private:
  struct Job {
    const PreparedRequest* req;
    std::promise<Result> done;
  };
  void loop();

  Engine& engine_;
  const Policy& policy_;
  int max_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> jobs_;
  bool stopping_ = false;
  int64_t batches_ = 0;
  ModelInputs inputs_;  // the worker's batch buffers, reused while the batch size stays the same
  std::thread worker_;
};

}  // namespace pirt
