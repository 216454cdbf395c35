// The per-robot transforms of openpi (spec 7.3): LiberoInputs/Outputs, DroidInputs/Outputs,
// AlohaInputs/Outputs, and what each named config adds (delta actions, asset id, metadata).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "policy/image.h"
#include "policy/value.h"

namespace pirt {

enum class Robot { Libero, Droid, Aloha };

Robot robot_from_name(const std::string& name);  // throws Error for an unknown name
const char* robot_name(Robot r);

// What a robot's input transform makes of a request, before normalization.
struct RobotInputs {
  std::array<std::optional<ImageU8>, ModelConfig::kNumCameras> images;  // nullopt: absent camera
  std::vector<double> state;                                          // robot dims (ALOHA: in pi space)
  std::optional<std::string> prompt;
};

struct RobotSpec {
  Robot robot;
  int state_dim;   // 8, 8, 14
  int action_dim;  // output dims: 7, 8, 14
  const char* asset_id;
  // Default delta-action mask (AbsoluteActions on output) for the given arch; empty: none.
  std::vector<bool> default_delta_mask(Arch arch) const;
  // Whether openpi's config for this robot puts the discretized state in the prompt.
  bool default_discrete_state(Arch arch) const;
  // The metadata frame the server sends on connect (train_config.policy_metadata).
  Value metadata() const;
};

const RobotSpec& robot_spec(Robot r);

// LiberoInputs / DroidInputs / AlohaInputs (with adapt_to_pi); throws Error on a malformed request.
RobotInputs robot_inputs(Robot r, const Value& request);

// Output side after Unnormalize and AbsoluteActions: slice to the robot's dims and (ALOHA) convert
// back from pi space. `actions` is [H, model_dim]; returns [H, robot action_dim].
std::vector<double> robot_outputs(Robot r, const std::vector<double>& actions, int horizon, int model_dim);

// openpi's make_bool_mask(6, -1, ...).
std::vector<bool> make_bool_mask(std::initializer_list<int> dims);

// ALOHA's gripper conversions (aloha_policy.py), exposed for tests.
double aloha_gripper_to_angular(double v);
double aloha_gripper_from_angular(double v);

}  // namespace pirt
