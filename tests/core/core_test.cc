// Core types: bf16/fp16 conversions (round to nearest even, NaN stays NaN) and tensor views.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/bf16.h"
#include "core/tensor.h"

namespace pirt {
namespace {

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-12f)), 1.0078125f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::infinity()))));
}

TEST(F16, RoundTripsAndSubnormals) {
  for (float x : {0.f, 1.f, -2.f, 0.5f, 65504.f, 6.103515625e-05f /* smallest normal */, 5.9604645e-08f})
    EXPECT_EQ(f16_to_f32(f32_to_f16(x)), x) << x;
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Tensor, RowsAndReshapeAreViews) {
  HostTensor t(DType::F32, {4, 3});
  for (int i = 0; i < 12; ++i) t.ptr<float>()[i] = static_cast<float>(i);
  const Tensor r = t.view().rows(1, 2);
  EXPECT_EQ(r.shape, (Shape{2, 3}));
  EXPECT_EQ(r.ptr<float>()[0], 3.f);
  EXPECT_EQ(r.reshape(Shape{6}).ptr<float>()[5], 8.f);
  EXPECT_EQ(t.view().row_size(), 3);
  EXPECT_THROW(t.view().rows(3, 2), Error);
  EXPECT_THROW(t.view().reshape(Shape{5}), Error);
}

TEST(Tensor, ZeroRowsHaveARowSize) {
  // An empty prefix is a [0, width] tensor: its rows must still be addressable.
  HostTensor t(DType::BOOL, {0, 7});
  EXPECT_EQ(t.view().row_size(), 7);
  EXPECT_EQ(t.view().rows(0, 0).numel(), 0);
  EXPECT_EQ(load_f32(HostTensor(DType::BF16, {1}).view(), 0), 0.f);
}

TEST(Tensor, LoadF32ReadsUnalignedElements) {
  // safetensors does not require a tensor's offset to be a multiple of its element size, and a
  // mapped file's tensors are read in place: load_f32 must not assume alignment (UBSan flags it).
  alignas(8) uint8_t bytes[1 + 8];
  const float f = 1.5f;
  const uint16_t b = f32_to_bf16(-2.25f);
  const int64_t i = -3;
  Tensor t;
  t.data = bytes + 1;
  t.shape = Shape{1};
  t.dtype = DType::F32;
  std::memcpy(bytes + 1, &f, 4);
  EXPECT_EQ(load_f32(t, 0), 1.5f);
  t.dtype = DType::BF16;
  std::memcpy(bytes + 1, &b, 2);
  EXPECT_EQ(load_f32(t, 0), -2.25f);
  t.dtype = DType::I64;
  std::memcpy(bytes + 1, &i, 8);
  EXPECT_EQ(load_f32(t, 0), -3.f);
  EXPECT_EQ(to_f32(t).ptr<float>()[0], -3.f);
}

}  // namespace
}  // namespace pirt
