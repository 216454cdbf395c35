// The model-level inputs file of `pirt infer` (DESIGN.md): a safetensors file of named tensors.
#include <cstring>

#include "io/safetensors.h"
#include "ops/ops.h"
#include "pirt/engine.h"

namespace pirt {
namespace {

std::string image_name(int cam) { return std::string("image.") + kCameraNames[cam]; }
std::string mask_name(int cam) { return std::string("image_mask.") + kCameraNames[cam]; }

HostTensor copy_of(const Tensor& t) {
  HostTensor h(t.dtype, t.shape);
  std::memcpy(h.ptr<void>(), t.data, t.nbytes());
  return h;
}

void expect(const std::string& name, const HostTensor& t, DType dtype, const Shape& shape) {
  if (t.empty()) throw_error("inputs: missing " + name);
  if (t.dtype() != dtype)
    throw_error(strformat("inputs: %s has dtype %s, expected %s", name.c_str(),
                          std::string(dtype_name(t.dtype())).c_str(), std::string(dtype_name(dtype)).c_str()));
  if (t.shape() != shape)
    throw_error(strformat("inputs: %s has shape %s, expected %s", name.c_str(), t.shape().str().c_str(),
                          shape.str().c_str()));
}

}  // namespace

ModelInputs read_inputs(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  auto get = [&](const std::string& name, bool required) {
    const Tensor* t = f.find(name);
    if (!t) {
      if (required) throw_error(path + ": inputs: missing tensor " + name);
      return HostTensor();
    }
    return copy_of(*t);
  };
  ModelInputs in;
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    in.images[cam] = get(image_name(cam), true);
    in.image_masks[cam] = get(mask_name(cam), true);
  }
  in.tokenized_prompt = get("tokenized_prompt", true);
  in.tokenized_prompt_mask = get("tokenized_prompt_mask", true);
  in.state = get("state", true);
  in.noise = get("noise", false);
  return in;
}

void write_inputs(const std::string& path, const ModelInputs& in) {
  std::vector<std::pair<std::string, Tensor>> t;
  HostTensor as_f32[ModelConfig::kNumCameras];  // the file holds F32 images in [-1, 1] (DESIGN.md)
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    const HostTensor& im = in.images[cam];
    if (im.dtype() == DType::U8) {
      as_f32[cam] = HostTensor(DType::F32, im.shape());
      for (int64_t i = 0; i < im.numel(); ++i) as_f32[cam].ptr<float>()[i] = image_unit_range(im.ptr<uint8_t>()[i]);
    }
    t.emplace_back(image_name(cam), (im.dtype() == DType::U8 ? as_f32[cam] : im).view());
    t.emplace_back(mask_name(cam), in.image_masks[cam].view());
  }
  t.emplace_back("tokenized_prompt", in.tokenized_prompt.view());
  t.emplace_back("tokenized_prompt_mask", in.tokenized_prompt_mask.view());
  t.emplace_back("state", in.state.view());
  if (!in.noise.empty()) t.emplace_back("noise", in.noise.view());
  write_safetensors(path, t);
}

void check_inputs(const ModelConfig& c, const ModelInputs& in, int horizon) {
  if (in.state.empty()) throw_error("inputs: missing state");
  if (in.state.shape().rank() != 2)
    throw_error("inputs: state has shape " + in.state.shape().str() + ", expected [B, " +
                std::to_string(c.action_dim) + "]");
  const int64_t B = in.batch();
  if (B < 1) throw_error("inputs: batch size must be at least 1");
  expect("state", in.state, DType::F32, {B, c.action_dim});
  const int64_t S = c.vision.image_size;
  // Images: F32 in [-1, 1] (the file format), or uint8 in [0, 255] (a policy's; converted on the device
  // as openpi does on the host), the same for every camera.
  const DType image_t = in.images[0].dtype() == DType::U8 ? DType::U8 : DType::F32;
  for (int cam = 0; cam < ModelConfig::kNumCameras; ++cam) {
    expect(image_name(cam), in.images[cam], image_t, {B, S, S, 3});
    expect(mask_name(cam), in.image_masks[cam], DType::BOOL, {B});
  }
  if (in.tokenized_prompt.empty()) throw_error("inputs: missing tokenized_prompt");
  const Shape& ts = in.tokenized_prompt.shape();
  if (ts.rank() != 2 || ts[0] != B || ts[1] < 1)
    throw_error("inputs: tokenized_prompt has shape " + ts.str() + ", expected [" + std::to_string(B) + ", L]");
  expect("tokenized_prompt", in.tokenized_prompt, DType::I32, ts);
  expect("tokenized_prompt_mask", in.tokenized_prompt_mask, DType::BOOL, ts);
  const int32_t* ids = in.tokenized_prompt.ptr<int32_t>();
  const uint8_t* mask = in.tokenized_prompt_mask.ptr<uint8_t>();
  for (int64_t i = 0; i < ts.numel(); ++i)
    if (mask[i] && (ids[i] < 0 || ids[i] >= c.llm.vocab))
      throw_error(strformat("inputs: tokenized_prompt[%lld][%lld] = %d is outside the vocabulary [0, %d)",
                            (long long)(i / ts[1]), (long long)(i % ts[1]), ids[i], c.llm.vocab));
  if (!in.noise.empty()) expect("noise", in.noise, DType::F32, {B, horizon, c.action_dim});
}

}  // namespace pirt
