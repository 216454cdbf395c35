#include "policy/robots.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace pirt {

Robot robot_from_name(const std::string& name) {
  if (name == "libero") return Robot::Libero;
  if (name == "droid") return Robot::Droid;
  if (name == "aloha") return Robot::Aloha;
  throw Error("unknown robot '" + name + "' (libero, droid or aloha)");
}

const char* robot_name(Robot r) {
  switch (r) {
    case Robot::Libero: return "libero";
    case Robot::Droid: return "droid";
    case Robot::Aloha: return "aloha";
  }
  return "?";
}

std::vector<bool> make_bool_mask(std::initializer_list<int> dims) {
  std::vector<bool> m;
  for (int d : dims) m.insert(m.end(), static_cast<size_t>(std::abs(d)), d > 0);
  return m;
}

std::vector<bool> RobotSpec::default_delta_mask(Arch arch) const {
  switch (robot) {
    case Robot::Libero:  // pi0_libero: extra_delta_transform=True; pi05_libero: False
      return arch == Arch::Pi0 ? make_bool_mask({6, -1}) : std::vector<bool>{};
    case Robot::Droid:  // joint-velocity actions
      return {};
    case Robot::Aloha:  // LeRobotAlohaDataConfig.use_delta_joint_actions=True (not aloha_sim)
      return make_bool_mask({6, -1, 6, -1});
  }
  return {};
}

bool RobotSpec::default_discrete_state(Arch arch) const {
  // Pi0Config.discrete_state_input defaults to pi05; pi05_libero turns it off.
  return arch == Arch::Pi05 && robot != Robot::Libero;
}

Value RobotSpec::metadata() const {
  Value m{ValueMap{}};
  if (robot == Robot::Aloha)
    m.set("reset_pose", Value{ValueList{Value{0}, Value{-1.5}, Value{1.5}, Value{0}, Value{0}, Value{0}}});
  return m;
}

const RobotSpec& robot_spec(Robot r) {
  static const RobotSpec kSpecs[] = {
      {Robot::Libero, 8, 7, "physical-intelligence/libero"},
      {Robot::Droid, 8, 8, "droid"},
      {Robot::Aloha, 14, 14, "trossen"},
  };
  return kSpecs[static_cast<int>(r)];
}

namespace {

const Value& require(const Value& m, const std::string& key, const std::string& where = "request") {
  const Value* v = m.find(key);
  if (!v) throw Error(where + ": missing key '" + key + "'");
  return *v;
}

std::vector<double> vector_of(const Value& v, const std::string& what, int dims) {
  const NdArray a = to_ndarray(v, what);
  if (a.kind() != 'f' && a.kind() != 'i' && a.kind() != 'u')
    throw Error(what + ": expected a float array, got dtype " + a.dtype);
  if (a.shape.size() != 1 || a.shape[0] != dims)
    throw Error(strformat("%s: expected shape (%d,), got %s", what.c_str(), dims, a.shape_str().c_str()));
  std::vector<double> out = a.to_doubles();
  for (double x : out)
    if (!std::isfinite(x)) throw Error(what + ": contains NaN or infinity");
  return out;
}

// The prompt: a str, utf-8 bytes (DROID decodes them), or a numpy str scalar/0-d array.
std::optional<std::string> prompt_of(const Value& request) {
  const Value* p = request.find("prompt");
  if (!p) return std::nullopt;
  if (p->is_str()) return p->as_str();
  if (p->is_bytes()) return p->as_bytes().data;
  if (p->is_array() && p->as_array().kind() == 'U' && p->as_array().shape.empty()) {
    // numpy '<U' is UTF-32LE; encode as UTF-8.
    const std::string& d = p->as_array().data;
    std::string out;
    for (size_t i = 0; i + 4 <= d.size(); i += 4) {
      uint32_t c = static_cast<uint8_t>(d[i]) | static_cast<uint8_t>(d[i + 1]) << 8 |
                   static_cast<uint8_t>(d[i + 2]) << 16 | static_cast<uint32_t>(static_cast<uint8_t>(d[i + 3])) << 24;
      if (c == 0) break;
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if (c < 0x800) {
        out += static_cast<char>(0xc0 | (c >> 6));
        out += static_cast<char>(0x80 | (c & 0x3f));
      } else if (c < 0x10000) {
        out += static_cast<char>(0xe0 | (c >> 12));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (c & 0x3f));
      } else {
        out += static_cast<char>(0xf0 | (c >> 18));
        out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (c & 0x3f));
      }
    }
    return out;
  }
  throw Error(std::string("request: 'prompt' must be a str, got ") + p->type_name());
}

ImageU8 image_of(const Value& v, ImageLayout layout, const std::string& what) {
  if (!v.is_array()) throw Error(what + ": expected an image array, got " + v.type_name());
  return parse_image(v.as_array(), layout, what);
}

constexpr int kFlip[14] = {1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1};

}  // namespace

double aloha_gripper_to_angular(double v) {
  v = v * (0.05800 - 0.01844) + 0.01844;  // _unnormalize
  const double arm = 0.036, horn = 0.022;
  double r = (horn * horn + v * v - arm * arm) / (2 * horn * v);
  r = std::clamp(r, -1.0, 1.0);
  v = std::asin(r);
  return (v - 0.5476) / (1.6296 - 0.5476);  // _normalize
}

double aloha_gripper_from_angular(double v) {
  v = v + 0.5476;
  return (v - -0.6213) / (1.4910 - -0.6213);
}

RobotInputs robot_inputs(Robot r, const Value& request) {
  if (!request.is_map()) throw Error(std::string("request: expected a dict, got ") + request.type_name());
  RobotInputs in;
  switch (r) {
    case Robot::Libero: {
      in.images[0] = image_of(require(request, "observation/image"), ImageLayout::Auto, "observation/image");
      in.images[1] =
          image_of(require(request, "observation/wrist_image"), ImageLayout::Auto, "observation/wrist_image");
      in.state = vector_of(require(request, "observation/state"), "observation/state", 8);
      break;
    }
    case Robot::Droid: {
      in.images[0] = image_of(require(request, "observation/exterior_image_1_left"), ImageLayout::Auto,
                              "observation/exterior_image_1_left");
      in.images[1] = image_of(require(request, "observation/wrist_image_left"), ImageLayout::Auto,
                              "observation/wrist_image_left");
      auto joints = vector_of(require(request, "observation/joint_position"), "observation/joint_position", 7);
      // gripper_position: [1] or a scalar.
      NdArray g = to_ndarray(require(request, "observation/gripper_position"), "observation/gripper_position");
      if (g.shape.empty()) g.shape = {1};
      Value gv{g};
      auto grip = vector_of(gv, "observation/gripper_position", 1);
      in.state = joints;
      in.state.push_back(grip[0]);
      break;
    }
    case Robot::Aloha: {
      const Value& images = require(request, "images");
      if (!images.is_map()) throw Error(std::string("request: 'images' must be a dict, got ") + images.type_name());
      static const char* const kCams[] = {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"};
      for (const auto& kv : images.as_map()) {  // (no structured binding: clang < 16 cannot capture one)
        const std::string& k = kv.first;
        if (std::find_if(std::begin(kCams), std::end(kCams), [&](const char* c) { return k == c; }) ==
            std::end(kCams))
          throw Error("request: images may hold cam_high, cam_low, cam_left_wrist, cam_right_wrist; got '" + k + "'");
      }
      auto state = vector_of(require(request, "state"), "state", 14);
      // _decode_state(adapt_to_pi=True): flip joints, grippers to the angular space.
      for (int i = 0; i < 14; ++i) state[i] *= kFlip[i];
      state[6] = aloha_gripper_to_angular(state[6]);
      state[13] = aloha_gripper_to_angular(state[13]);
      in.state = state;
      // _decode_aloha converts every image, cam_low included (it is then unused).
      std::optional<ImageU8> cams[4];
      for (int c = 0; c < 4; ++c)
        if (const Value* v = images.find(kCams[c]))
          cams[c] = image_of(*v, ImageLayout::CHW, std::string("images/") + kCams[c]);
      if (!cams[0]) throw Error("request: missing key 'images/cam_high'");
      in.images[0] = cams[0];
      in.images[1] = cams[2];
      in.images[2] = cams[3];
      break;
    }
  }
  in.prompt = prompt_of(request);
  return in;
}

std::vector<double> robot_outputs(Robot r, const std::vector<double>& actions, int horizon, int model_dim) {
  const int d = robot_spec(r).action_dim;
  PIRT_CHECK(model_dim >= d, "model action dim %d < robot's %d", model_dim, d);
  std::vector<double> out(static_cast<size_t>(horizon) * d);
  for (int h = 0; h < horizon; ++h)
    for (int i = 0; i < d; ++i) out[h * d + i] = actions[static_cast<size_t>(h) * model_dim + i];
  if (r == Robot::Aloha) {  // _encode_actions(adapt_to_pi=True)
    for (int h = 0; h < horizon; ++h) {
      double* a = &out[static_cast<size_t>(h) * d];
      for (int i = 0; i < 14; ++i) a[i] *= kFlip[i];
      a[6] = aloha_gripper_from_angular(a[6]);
      a[13] = aloha_gripper_from_angular(a[13]);
    }
  }
  return out;
}

}  // namespace pirt
