// Normalization, norm_stats.json discovery and the per-robot transforms.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "policy/norm_stats.h"
#include "policy/robots.h"

namespace pirt {
namespace {

namespace fs = std::filesystem;

TEST(NormStats, ParseAndFormulas) {
  const auto m = parse_norm_stats(
      R"({"norm_stats": {"state": {"mean": [1, 2], "std": [0.5, 2], "q01": [0, -1], "q99": [2, 3]},
                         "actions": {"mean": [1], "std": [2], "q01": null, "q99": null}}})",
      "test");
  ASSERT_EQ(m.size(), 2u);
  const NormStats& s = m.at("state");
  double x[2] = {2, 0};
  normalize(NormMode::ZScore, s, x, 2);
  EXPECT_DOUBLE_EQ(x[0], (2 - 1) / (0.5 + 1e-6));
  EXPECT_DOUBLE_EQ(x[1], (0 - 2) / (2 + 1e-6));
  double q[2] = {1, 3};
  normalize(NormMode::Quantile, s, q, 2);
  EXPECT_DOUBLE_EQ(q[0], (1 - 0) / (2 - 0 + 1e-6) * 2 - 1);
  EXPECT_DOUBLE_EQ(q[1], (3 - -1) / (3 - -1 + 1e-6) * 2 - 1);
  // Unnormalize pads z-score stats with mean 0 / std 1 and leaves quantile's extra dims alone.
  double u[3] = {1, 1, 1};
  unnormalize(NormMode::ZScore, s, u, 3);
  EXPECT_DOUBLE_EQ(u[0], 1 * (0.5 + 1e-6) + 1);
  EXPECT_DOUBLE_EQ(u[2], 1 * (1 + 1e-6) + 0);
  double v[3] = {0, 0, 0.25};
  unnormalize(NormMode::Quantile, s, v, 3);
  EXPECT_DOUBLE_EQ(v[0], (0 + 1) / 2.0 * (2 - 0 + 1e-6) + 0);
  EXPECT_DOUBLE_EQ(v[2], 0.25);
  // The model's float32 actions: numpy computes (x + 1.0) / 2.0 in float32 first.
  double w[1] = {static_cast<double>(0.1f)};
  unnormalize(NormMode::Quantile, s, w, 1, true);
  EXPECT_DOUBLE_EQ(w[0], static_cast<double>((0.1f + 1.0f) / 2.0f) * (2 - 0 + 1e-6) + 0);
  // Quantile mode needs q01/q99.
  EXPECT_THROW(check_norm_stats(NormMode::Quantile, m.at("actions"), "actions", 0, 32), Error);
  EXPECT_NO_THROW(check_norm_stats(NormMode::ZScore, m.at("actions"), "actions", 0, 32));
  // A state longer than the stats does not broadcast.
  EXPECT_THROW(check_norm_stats(NormMode::ZScore, s, "state", 8, 32), Error);
}

TEST(NormStats, BadFiles) {
  EXPECT_THROW(parse_norm_stats("{", "x"), Error);
  EXPECT_THROW(parse_norm_stats(R"({"stats": {}})", "x"), Error);
  EXPECT_THROW(parse_norm_stats(R"({"norm_stats": {"state": {"mean": [1]}}})", "x"), Error);
  EXPECT_THROW(parse_norm_stats(R"({"norm_stats": {"state": {"mean": [1], "std": [1, 2]}}})", "x"), Error);
  EXPECT_THROW(parse_norm_stats(R"({"norm_stats": {"state": {"mean": ["a"], "std": [1]}}})", "x"), Error);
  EXPECT_THROW(load_norm_stats("/nonexistent/norm_stats.json"), Error);
  for (const char* r : {"libero", "droid", "aloha"})
    EXPECT_NO_THROW(load_norm_stats(std::string(PIRT_TEST_DATA) + "/norm_stats/" + r + "/norm_stats.json"));
}

TEST(NormStats, FindsOpenpiAssetLayout) {
  const fs::path dir = fs::temp_directory_path() / ("pirt_norm_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_THROW(find_norm_stats(dir.string(), "droid"), Error);
  fs::create_directories(dir / "assets/physical-intelligence/libero");
  std::ofstream(dir / "assets/physical-intelligence/libero/norm_stats.json") << "{}";
  // The only file is used whatever the asset id.
  EXPECT_EQ(find_norm_stats(dir.string(), "droid"), (dir / "assets/physical-intelligence/libero/norm_stats.json").string());
  fs::create_directories(dir / "assets/trossen");
  std::ofstream(dir / "assets/trossen/norm_stats.json") << "{}";
  EXPECT_EQ(find_norm_stats(dir.string(), "trossen"), (dir / "assets/trossen/norm_stats.json").string());
  EXPECT_THROW(find_norm_stats(dir.string(), "droid"), Error);  // two candidates, neither is droid's
  fs::remove_all(dir);
}

NdArray f64(std::vector<double> v) { return NdArray::from_doubles(v, {static_cast<int64_t>(v.size())}); }

NdArray u8_image(int h, int w, bool chw = false) {
  NdArray a;
  a.dtype = "|u1";
  a.shape = chw ? std::vector<int64_t>{3, h, w} : std::vector<int64_t>{h, w, 3};
  a.data.assign(static_cast<size_t>(h) * w * 3, '\x40');
  return a;
}

Value libero_request() {
  Value r{ValueMap{}};
  r.set("observation/image", u8_image(224, 224));
  r.set("observation/wrist_image", u8_image(224, 224, true));  // CHW works too
  r.set("observation/state", f64({1, 2, 3, 4, 5, 6, 7, 8}));
  r.set("prompt", "do something");
  return r;
}

TEST(Robots, Libero) {
  const RobotInputs in = robot_inputs(Robot::Libero, libero_request());
  ASSERT_TRUE(in.images[0] && in.images[1]);
  EXPECT_FALSE(in.images[2]);  // right wrist absent (mask False)
  EXPECT_EQ(in.images[1]->height, 224);
  EXPECT_EQ(in.state.size(), 8u);
  EXPECT_EQ(*in.prompt, "do something");

  Value r = libero_request();
  r.as_map().erase(r.as_map().begin() + 2);
  EXPECT_THROW(robot_inputs(Robot::Libero, r), Error);  // no observation/state
  r = libero_request();
  r.set("observation/state", f64({1, 2, 3}));
  EXPECT_THROW(robot_inputs(Robot::Libero, r), Error);  // wrong shape
  r.set("observation/state", f64({1, 2, 3, 4, 5, 6, 7, std::numeric_limits<double>::quiet_NaN()}));
  EXPECT_THROW(robot_inputs(Robot::Libero, r), Error);  // NaN
  r = libero_request();
  r.set("observation/image", "not an image");
  EXPECT_THROW(robot_inputs(Robot::Libero, r), Error);
  r = libero_request();
  r.set("prompt", 3);
  EXPECT_THROW(robot_inputs(Robot::Libero, r), Error);
  EXPECT_THROW(robot_inputs(Robot::Libero, Value{ValueList{}}), Error);
}

TEST(Robots, DroidAcceptsScalarGripper) {
  Value r{ValueMap{}};
  r.set("observation/exterior_image_1_left", u8_image(224, 224));
  r.set("observation/wrist_image_left", u8_image(224, 224));
  r.set("observation/joint_position", f64({1, 2, 3, 4, 5, 6, 7}));
  r.set("observation/gripper_position", 0.5);
  r.set("prompt", Bytes{"pick up the fork"});
  RobotInputs in = robot_inputs(Robot::Droid, r);
  EXPECT_EQ(in.state, (std::vector<double>{1, 2, 3, 4, 5, 6, 7, 0.5}));
  EXPECT_EQ(*in.prompt, "pick up the fork");
  EXPECT_FALSE(in.images[2]);
  r.set("observation/gripper_position", f64({0.25}));
  EXPECT_EQ(robot_inputs(Robot::Droid, r).state[7], 0.25);
  r.set("observation/gripper_position", f64({0.25, 1}));
  EXPECT_THROW(robot_inputs(Robot::Droid, r), Error);
}

TEST(Robots, AlohaFlipsJointsAndConvertsGrippers) {
  Value images{ValueMap{}};
  images.set("cam_high", u8_image(224, 224, true));
  images.set("cam_right_wrist", u8_image(224, 224, true));
  Value r{ValueMap{}};
  r.set("images", images);
  std::vector<double> s(14, 0.5);
  s[6] = 0.3;
  s[13] = 0.7;
  r.set("state", f64(s));
  const RobotInputs in = robot_inputs(Robot::Aloha, r);
  EXPECT_TRUE(in.images[0] && !in.images[1] && in.images[2]);
  EXPECT_FALSE(in.prompt);
  EXPECT_DOUBLE_EQ(in.state[0], 0.5);
  EXPECT_DOUBLE_EQ(in.state[1], -0.5);
  EXPECT_DOUBLE_EQ(in.state[9], -0.5);
  // Values from aloha_policy.py with numpy.
  EXPECT_NEAR(in.state[6], -0.4321595580286198, 1e-15);
  EXPECT_NEAR(in.state[13], 0.14593607285524643, 1e-15);
  EXPECT_NEAR(aloha_gripper_to_angular(1.0), 0.945652797407483, 1e-15);
  EXPECT_NEAR(aloha_gripper_from_angular(0.3), 0.6954031150878188, 1e-15);
  // Outputs: slice to 14, flip, grippers back.
  std::vector<double> act(2 * 32, 0.0);
  act[1] = 0.25;
  act[6] = 0.7;
  act[32 + 13] = 1.0;
  const auto out = robot_outputs(Robot::Aloha, act, 2, 32);
  ASSERT_EQ(out.size(), 28u);
  EXPECT_DOUBLE_EQ(out[1], -0.25);
  EXPECT_NEAR(out[6], 0.8847701557543908, 1e-15);
  EXPECT_NEAR(out[14 + 13], 1.0267954362543197, 1e-15);

  images.set("cam_top", u8_image(224, 224, true));
  r.set("images", images);
  EXPECT_THROW(robot_inputs(Robot::Aloha, r), Error);  // unknown camera
  Value no_high{ValueMap{}};
  no_high.set("cam_low", u8_image(224, 224, true));
  r.set("images", no_high);
  EXPECT_THROW(robot_inputs(Robot::Aloha, r), Error);
  Value hwc{ValueMap{}};
  hwc.set("cam_high", u8_image(224, 224, false));  // ALOHA images are CHW
  r.set("images", hwc);
  EXPECT_THROW(robot_inputs(Robot::Aloha, r), Error);
}

TEST(Robots, ConfigDefaults) {
  EXPECT_EQ(robot_spec(Robot::Libero).default_delta_mask(Arch::Pi0), make_bool_mask({6, -1}));
  EXPECT_TRUE(robot_spec(Robot::Libero).default_delta_mask(Arch::Pi05).empty());
  EXPECT_TRUE(robot_spec(Robot::Droid).default_delta_mask(Arch::Pi0).empty());
  EXPECT_EQ(robot_spec(Robot::Aloha).default_delta_mask(Arch::Pi05), make_bool_mask({6, -1, 6, -1}));
  EXPECT_FALSE(robot_spec(Robot::Libero).default_discrete_state(Arch::Pi05));
  EXPECT_TRUE(robot_spec(Robot::Droid).default_discrete_state(Arch::Pi05));
  EXPECT_FALSE(robot_spec(Robot::Aloha).default_discrete_state(Arch::Pi0));
  EXPECT_TRUE(robot_spec(Robot::Droid).metadata().as_map().empty());
  EXPECT_EQ(robot_spec(Robot::Aloha).metadata().find("reset_pose")->as_list().size(), 6u);
  EXPECT_THROW(robot_from_name("franka"), Error);
}

}  // namespace
}  // namespace pirt
