// Camera images on their way into the model: openpi's _parse_image (float -> uint8, CHW -> HWC),
// resize_with_pad to 224 (PIL bilinear, as openpi_client.image_tools does) and uint8 -> [-1, 1].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "policy/value.h"

namespace pirt {

struct ImageU8 {  // HWC RGB
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;  // height * width * 3
};

enum class ImageLayout {
  Auto,  // openpi's LIBERO/DROID rule: CHW when shape[0] == 3, else HWC
  CHW,   // ALOHA: always "c h w -> h w c"
};

// An image from a request: uint8, or float scaled by 255 and cast as numpy's astype(uint8) does.
// Throws Error naming `what` for a wrong rank, channel count or dtype.
ImageU8 parse_image(const NdArray& a, ImageLayout layout, const std::string& what);

// PIL's Image.resize((w, h), BILINEAR) on an RGB image: Pillow's separable resampling with its
// antialiasing support and 8-bit fixed-point rounding.
ImageU8 resize_bilinear_pil(const ImageU8& in, int width, int height);

// openpi_client.image_tools.resize_with_pad: keep the aspect ratio, paste centred on black.
// Returns `in` itself (moved, not copied, when the caller moves it) when it already has the size.
ImageU8 resize_with_pad(ImageU8 in, int height, int width);

}  // namespace pirt
