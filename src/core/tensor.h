// Tensor: a non-owning view of contiguous row-major memory on the host or on a device.
// HostTensor: a tensor that owns host memory (inputs, outputs, tests).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace pirt {

enum class Where : uint8_t { Host, Device };

class Shape {
 public:
  static constexpr int kMaxRank = 5;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    PIRT_CHECK(dims.size() <= kMaxRank, "rank %zu", dims.size());
    for (int64_t d : dims) d_[rank_++] = d;
  }
  explicit Shape(const std::vector<int64_t>& dims) {
    PIRT_CHECK(dims.size() <= kMaxRank, "rank %zu", dims.size());
    for (int64_t d : dims) d_[rank_++] = d;
  }
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return d_[i < 0 ? i + rank_ : i]; }
  int64_t& operator[](int i) { return d_[i < 0 ? i + rank_ : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= d_[i];
    return n;
  }
  std::vector<int64_t> dims() const { return std::vector<int64_t>(d_.begin(), d_.begin() + rank_); }
  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (d_[i] != o.d_[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "[2, 3]"

 private:
  std::array<int64_t, kMaxRank> d_{};
  int rank_ = 0;
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  Where where = Where::Host;

  bool empty() const { return data == nullptr; }
  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i]; }
  // Elements in one row (product of all dims but the first).
  int64_t row_size() const {
    int64_t n = 1;
    for (int i = 1; i < shape.rank(); ++i) n *= shape[i];
    return n;
  }
  template <class T>
  T* ptr() const { return static_cast<T*>(data); }

  // Rows [begin, begin+count) along dim 0: still contiguous.
  Tensor rows(int64_t begin, int64_t count) const;
  // The same memory seen with another shape of the same element count.
  Tensor reshape(Shape s) const;
};

class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, Shape shape);
  const Tensor& view() const { return view_; }
  Tensor& view() { return view_; }
  operator const Tensor&() const { return view_; }
  template <class T>
  T* ptr() const { return view_.ptr<T>(); }
  const Shape& shape() const { return view_.shape; }
  DType dtype() const { return view_.dtype; }
  int64_t numel() const { return view_.numel(); }
  bool empty() const { return view_.empty(); }

 private:
  std::shared_ptr<std::vector<uint8_t>> storage_;
  Tensor view_;
};

// Converts any float (or integer) host tensor element to float.
float load_f32(const Tensor& t, int64_t i);
// A float32 copy of any float host tensor.
HostTensor to_f32(const Tensor& t);

}  // namespace pirt
