#include "policy/image.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace pirt {

ImageU8 parse_image(const NdArray& a, ImageLayout layout, const std::string& what) {
  a.validate();
  const char k = a.kind();
  if (!(a.dtype == "|u1" || k == 'f'))
    throw Error(what + ": images must be uint8 or float, got dtype " + a.dtype);
  if (a.shape.size() != 3) throw Error(what + ": expected an image of rank 3, got shape " + a.shape_str());
  const bool chw = layout == ImageLayout::CHW || a.shape[0] == 3;
  const int64_t c = chw ? a.shape[0] : a.shape[2];
  const int64_t h = chw ? a.shape[1] : a.shape[0];
  const int64_t w = chw ? a.shape[2] : a.shape[1];
  if (c != 3) throw Error(what + ": expected 3 channels (" + std::string(chw ? "CHW" : "HWC") + "), got shape " + a.shape_str());
  if (h <= 0 || w <= 0 || h > 16384 || w > 16384) throw Error(what + ": bad image size " + a.shape_str());
  ImageU8 img;
  img.height = static_cast<int>(h);
  img.width = static_cast<int>(w);
  img.pixels.resize(static_cast<size_t>(h * w * 3));
  const bool is_u8 = a.dtype == "|u1";
  const auto* u8 = reinterpret_cast<const uint8_t*>(a.data.data());
  if (is_u8 && !chw) {  // (the usual request: nothing to convert)
    std::memcpy(img.pixels.data(), u8, img.pixels.size());
    return img;
  }
  if (is_u8) {  // CHW -> HWC
    const int64_t plane = h * w;
    uint8_t* dst = img.pixels.data();
    for (int64_t i = 0; i < plane; ++i) {
      dst[3 * i] = u8[i];
      dst[3 * i + 1] = u8[plane + i];
      dst[3 * i + 2] = u8[2 * plane + i];
    }
    return img;
  }
  // Float images: (255 * img).astype(np.uint8), a C cast; x86 truncates through int, wrapping mod 256.
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ch = 0; ch < 3; ++ch) {
        const int64_t src = chw ? (ch * h + y) * w + x : (y * w + x) * 3 + ch;
        const double f = 255.0 * a.get(src);
        img.pixels[(y * w + x) * 3 + ch] =
            std::isfinite(f) && std::fabs(f) < 9.2e18 ? static_cast<uint8_t>(static_cast<int64_t>(f)) : 0;
      }
  return img;
}

namespace {

// Pillow's libImaging/Resample.c, 8 bits per channel.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

uint8_t clip8(int in) {
  if (in >= (1 << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return static_cast<uint8_t>(in >> kPrecisionBits);
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // [out][2]: xmin, count
  std::vector<int> k;       // [out][ksize], fixed point
};

// precompute_coeffs + normalize_coeffs_8bpc, for box [0, in_size).
Coeffs precompute(int in_size, int out_size) {
  const double support_base = 1.0;  // bilinear
  double scale = static_cast<double>(in_size) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = support_base * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(out_size * 2);
  std::vector<double> kk(static_cast<size_t>(out_size) * c.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &kk[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double w = bilinear_filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  c.k.resize(kk.size());
  for (size_t i = 0; i < kk.size(); ++i)
    c.k[i] = kk[i] < 0 ? static_cast<int>(-0.5 + kk[i] * (1 << kPrecisionBits))
                       : static_cast<int>(0.5 + kk[i] * (1 << kPrecisionBits));
  return c;
}

}  // namespace

ImageU8 resize_bilinear_pil(const ImageU8& in, int width, int height) {
  if (in.width == width && in.height == height) return in;
  const bool need_h = width != in.width;
  const bool need_v = height != in.height;
  const Coeffs ch = precompute(in.width, width);
  Coeffs cv = precompute(in.height, height);
  const int ybox_first = cv.bounds[0];
  const int ybox_last = cv.bounds[height * 2 - 2] + cv.bounds[height * 2 - 1];

  ImageU8 cur = in;
  if (need_h) {
    for (int i = 0; i < height; ++i) cv.bounds[i * 2] -= ybox_first;
    ImageU8 tmp;
    tmp.width = width;
    tmp.height = ybox_last - ybox_first;
    tmp.pixels.resize(static_cast<size_t>(tmp.width) * tmp.height * 3);
    for (int yy = 0; yy < tmp.height; ++yy) {
      const uint8_t* row = &in.pixels[static_cast<size_t>(yy + ybox_first) * in.width * 3];
      for (int xx = 0; xx < width; ++xx) {
        const int xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1];
        const int* k = &ch.k[static_cast<size_t>(xx) * ch.ksize];
        int ss[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
        for (int x = 0; x < xmax; ++x)
          for (int c = 0; c < 3; ++c) ss[c] += row[(x + xmin) * 3 + c] * k[x];
        for (int c = 0; c < 3; ++c) tmp.pixels[(static_cast<size_t>(yy) * width + xx) * 3 + c] = clip8(ss[c]);
      }
    }
    cur = std::move(tmp);
  } else {
    // Pillow runs the vertical pass on the whole input when there is no horizontal pass.
  }
  if (need_v) {
    ImageU8 out;
    out.width = cur.width;
    out.height = height;
    out.pixels.resize(static_cast<size_t>(out.width) * height * 3);
    for (int yy = 0; yy < height; ++yy) {
      const int ymin = cv.bounds[yy * 2], ymax = cv.bounds[yy * 2 + 1];
      const int* k = &cv.k[static_cast<size_t>(yy) * cv.ksize];
      for (int xx = 0; xx < cur.width; ++xx) {
        int ss[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1)};
        for (int y = 0; y < ymax; ++y)
          for (int c = 0; c < 3; ++c)
            ss[c] += cur.pixels[(static_cast<size_t>(y + ymin) * cur.width + xx) * 3 + c] * k[y];
        for (int c = 0; c < 3; ++c) out.pixels[(static_cast<size_t>(yy) * out.width + xx) * 3 + c] = clip8(ss[c]);
      }
    }
    cur = std::move(out);
  }
  return cur;
}

ImageU8 resize_with_pad(ImageU8 in, int height, int width) {
  if (in.height == height && in.width == width) return in;
  const double ratio = std::max(static_cast<double>(in.width) / width, static_cast<double>(in.height) / height);
  const int rh = static_cast<int>(in.height / ratio);
  const int rw = static_cast<int>(in.width / ratio);
  if (rh <= 0 || rw <= 0) throw Error(strformat("image of %dx%d is too thin to resize", in.width, in.height));
  const ImageU8 r = resize_bilinear_pil(in, rw, rh);
  ImageU8 out;
  out.height = height;
  out.width = width;
  out.pixels.assign(static_cast<size_t>(height) * width * 3, 0);
  const int pad_h = std::max(0, static_cast<int>((height - rh) / 2.0));
  const int pad_w = std::max(0, static_cast<int>((width - rw) / 2.0));
  for (int y = 0; y < rh && y + pad_h < height; ++y)
    for (int x = 0; x < rw && x + pad_w < width; ++x)
      for (int c = 0; c < 3; ++c)
        out.pixels[(static_cast<size_t>(y + pad_h) * width + x + pad_w) * 3 + c] =
            r.pixels[(static_cast<size_t>(y) * rw + x) * 3 + c];
  return out;
}

}  // namespace pirt
