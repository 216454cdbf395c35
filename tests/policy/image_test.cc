// Image parsing and openpi_client's resize_with_pad (PIL bilinear), against values PIL computed.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "policy/image.h"

namespace pirt {
namespace {

ImageU8 pattern(int h, int w) {
  ImageU8 im;
  im.height = h;
  im.width = w;
  im.pixels.resize(static_cast<size_t>(h) * w * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        im.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((y * 31 + x * 17 + c * 101 + ((x * y) % 7) * 13) % 256);
  return im;
}

int64_t checksum(const ImageU8& im) {
  int64_t s = 0;
  for (size_t i = 0; i < im.pixels.size(); ++i) s += static_cast<int64_t>(im.pixels[i]) * static_cast<int64_t>(i % 251 + 1);
  return s;
}

std::vector<int> px(const ImageU8& im, int y, int x) {
  const size_t o = (static_cast<size_t>(y) * im.width + x) * 3;
  return {im.pixels[o], im.pixels[o + 1], im.pixels[o + 2]};
}

// Golden values: numpy + PIL 13 (Image.resize(BILINEAR)) and openpi_client.image_tools.
TEST(Image, ResizeMatchesPil) {
  struct Case {
    int h, w, oh, ow;
    int64_t sum;
    std::vector<int> first, last;
  } cases[] = {
      {23, 37, 11, 17, 8378968, {45, 146, 137}, {170, 91, 173}},
      {29, 11, 57, 29, 80057383, {0, 101, 202}, {14, 115, 216}},
      {30, 40, 30, 17, 24527222, {15, 116, 217}, {53, 153, 164}},  // horizontal only
      {30, 40, 13, 40, 24604951, {26, 127, 175}, {136, 128, 136}},  // vertical only
  };
  for (const auto& c : cases) {
    const ImageU8 r = resize_bilinear_pil(pattern(c.h, c.w), c.ow, c.oh);
    ASSERT_EQ(r.height, c.oh);
    ASSERT_EQ(r.width, c.ow);
    EXPECT_EQ(checksum(r), c.sum) << c.h << "x" << c.w;
    EXPECT_EQ(px(r, 0, 0), c.first);
    EXPECT_EQ(px(r, c.oh - 1, c.ow - 1), c.last);
  }
}

TEST(Image, ResizeWithPadMatchesOpenpiClient) {
  struct Case {
    int h, w;
    int64_t sum;
    std::vector<int> centre, corner;
  } cases[] = {
      {30, 40, 1830356615, {103, 161, 111}, {0, 0, 0}},
      {480, 640, 1813135889, {160, 116, 108}, {0, 0, 0}},
      {224, 300, 1801284130, {179, 109, 141}, {0, 0, 0}},
      {100, 50, 1216289982, {205, 121, 151}, {0, 0, 0}},
      {256, 256, 2416812225, {72, 162, 192}, {9, 110, 203}},
  };
  for (const auto& c : cases) {
    const ImageU8 r = resize_with_pad(pattern(c.h, c.w), 224, 224);
    ASSERT_EQ(r.height, 224);
    ASSERT_EQ(r.width, 224);
    EXPECT_EQ(checksum(r), c.sum) << c.h << "x" << c.w;
    EXPECT_EQ(px(r, 112, 112), c.centre);
    EXPECT_EQ(px(r, 0, 0), c.corner);
  }
  const ImageU8 same = pattern(224, 224);
  EXPECT_EQ(resize_with_pad(same, 224, 224).pixels, same.pixels);
}

NdArray array(const std::string& dtype, std::vector<int64_t> shape, const void* data, size_t bytes) {
  NdArray a;
  a.dtype = dtype;
  a.shape = std::move(shape);
  a.data.assign(static_cast<const char*>(data), bytes);
  return a;
}

TEST(Image, ParseChwHwcAndFloat) {
  // 2x2 image, HWC: pixel (y, x) = (10y+x, 100+10y+x, 200+x)
  uint8_t hwc[12], chw[12];
  float f[12];
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x)
      for (int c = 0; c < 3; ++c) {
        const uint8_t v = static_cast<uint8_t>(c == 2 ? 200 + x : c * 100 + 10 * y + x);
        hwc[(y * 2 + x) * 3 + c] = v;
        chw[(c * 2 + y) * 2 + x] = v;
        f[(y * 2 + x) * 3 + c] = v / 255.0f;
      }
  const ImageU8 a = parse_image(array("|u1", {2, 2, 3}, hwc, 12), ImageLayout::Auto, "img");
  const ImageU8 b = parse_image(array("|u1", {3, 2, 2}, chw, 12), ImageLayout::Auto, "img");
  const ImageU8 c = parse_image(array("|u1", {3, 2, 2}, chw, 12), ImageLayout::CHW, "img");
  EXPECT_EQ(a.pixels, std::vector<uint8_t>(hwc, hwc + 12));
  EXPECT_EQ(b.pixels, a.pixels);
  EXPECT_EQ(c.pixels, a.pixels);
  // (255 * x).astype(uint8) truncates: v/255*255 may land just under v.
  const ImageU8 d = parse_image(array("<f4", {2, 2, 3}, f, sizeof f), ImageLayout::Auto, "img");
  for (int i = 0; i < 12; ++i) {
    const uint8_t want = static_cast<uint8_t>(static_cast<int64_t>(255.0 * static_cast<double>(f[i])));
    EXPECT_EQ(d.pixels[i], want);
  }
  EXPECT_THROW(parse_image(array("|u1", {2, 2, 4}, hwc, 12), ImageLayout::Auto, "img"), Error);  // bytes
  uint8_t four[16] = {};
  EXPECT_THROW(parse_image(array("|u1", {2, 2, 4}, four, 16), ImageLayout::Auto, "img"), Error);  // channels
  const int64_t ints[3] = {1, 2, 3};
  EXPECT_THROW(parse_image(array("<i8", {1, 1, 3}, ints, sizeof ints), ImageLayout::Auto, "img"), Error);
  EXPECT_THROW(parse_image(array("|u1", {12}, hwc, 12), ImageLayout::Auto, "img"), Error);
}

}  // namespace
}  // namespace pirt
