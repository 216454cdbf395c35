#include "core/tensor.h"

#include <cstring>

#include "core/bf16.h"

namespace pirt {

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(d_[i]);
  }
  return s + "]";
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  PIRT_CHECK(shape.rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape[0],
             "rows(%lld, %lld) of %s", (long long)begin, (long long)count, shape.str().c_str());
  Tensor t = *this;
  t.data = static_cast<uint8_t*>(data) + static_cast<size_t>(begin * row_size()) * dtype_size(dtype);
  t.shape[0] = count;
  return t;
}

Tensor Tensor::reshape(Shape s) const {
  PIRT_CHECK(s.numel() == numel(), "reshape %s to %s", shape.str().c_str(), s.str().c_str());
  Tensor t = *this;
  t.shape = s;
  return t;
}

HostTensor::HostTensor(DType dtype, Shape shape) {
  view_.dtype = dtype;
  view_.shape = shape;
  view_.where = Where::Host;
  storage_ = std::make_shared<std::vector<uint8_t>>(view_.nbytes() + 1, 0);
  view_.data = storage_->data();
}

namespace {

// Element i of a host tensor, read with memcpy: a safetensors file may place a tensor at an offset
// that is not a multiple of its element size (the format does not require alignment).
template <class T>
T load(const Tensor& t, int64_t i) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(t.data) + static_cast<size_t>(i) * sizeof(T), sizeof(T));
  return v;
}

}  // namespace

float load_f32(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: return load<float>(t, i);
    case DType::BF16: return bf16_to_f32(load<uint16_t>(t, i));
    case DType::F16: return f16_to_f32(load<uint16_t>(t, i));
    case DType::I32: return static_cast<float>(load<int32_t>(t, i));
    case DType::I64: return static_cast<float>(load<int64_t>(t, i));
    case DType::BOOL: return load<uint8_t>(t, i) ? 1.f : 0.f;
    case DType::U8: return static_cast<float>(load<uint8_t>(t, i));
  }
  return 0.f;
}

HostTensor to_f32(const Tensor& t) {
  PIRT_CHECK(t.where == Where::Host, "to_f32 of a device tensor");
  HostTensor out(DType::F32, t.shape);
  if (t.dtype == DType::F32) {
    std::memcpy(out.ptr<float>(), t.data, t.nbytes());
  } else {
    float* o = out.ptr<float>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) o[i] = load_f32(t, i);
  }
  return out;
}

}  // namespace pirt
