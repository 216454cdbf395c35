#include "serve/inference_queue.h"

#include <chrono>
#include <cstring>

#include "core/error.h"

namespace pirt {

InferenceQueue::InferenceQueue(Engine& engine, const Policy& policy, int max_batch)
    : engine_(engine), policy_(policy), max_batch_(max_batch < 1 ? 1 : max_batch) {
  worker_ = std::thread([this] { loop(); });
}

InferenceQueue::~InferenceQueue() { stop(); }

void InferenceQueue::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (Job* j : jobs_) j->done.set_exception(std::make_exception_ptr(Error("the server is shutting down")));
  jobs_.clear();
}

int64_t InferenceQueue::batches_run() const {
  std::lock_guard<std::mutex> lock(mu_);
  return batches_;
}

InferenceQueue::Result InferenceQueue::run(const PreparedRequest& req) {
  Job job{&req, {}};
  auto fut = job.done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw Error("the server is shutting down");
    jobs_.push_back(&job);
  }
  cv_.notify_one();
  return fut.get();
}

void InferenceQueue::loop() {
  const int A = policy_.config().action_dim, H = policy_.horizon();
  for (;;) {
    std::vector<Job*> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      while (!jobs_.empty() && static_cast<int>(batch.size()) < max_batch_) {
        batch.push_back(jobs_.front());
        jobs_.pop_front();
      }
    }
    try {
      std::vector<const PreparedRequest*> reqs;
      for (Job* j : batch) reqs.push_back(j->req);
      policy_.fill_inputs(reqs, inputs_);
      const ModelInputs& in = inputs_;
      const auto t0 = std::chrono::steady_clock::now();
      const HostTensor actions = engine_.sample_actions(in, policy_.steps());
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const int64_t B = static_cast<int64_t>(batch.size());
      if (actions.dtype() != DType::F32 || actions.numel() != B * H * A)
        throw Error(strformat("engine returned actions of shape %s, expected [%lld, %d, %d]",
                              actions.shape().str().c_str(), static_cast<long long>(B), H, A));
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++batches_;
      }
      for (int64_t b = 0; b < B; ++b) {
        Result r;
        r.actions.assign(actions.ptr<float>() + b * H * A, actions.ptr<float>() + (b + 1) * H * A);
        r.model_ms = ms;
        r.batch = static_cast<int>(B);
        batch[b]->done.set_value(std::move(r));
      }
    } catch (...) {
      for (Job* j : batch) j->done.set_exception(std::current_exception());
    }
  }
}

}  // namespace pirt
