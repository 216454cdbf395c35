// The best-known-config file (bench/bkc.json): the best measured figures per GPU and shape, and
// what produced them. `pirt bench --check FILE` compares a run against it.
#pragma once

#include <string>

namespace pirt {

struct BenchFigures {
  std::string device;  // the backend's name, e.g. "cuda: NVIDIA H100 80GB HBM3"
  std::string model;   // pi0 | pi05 | tiny | tiny-pi05 | a checkpoint folder
  int cameras = 3, absent = 0, prompt_len = 48, horizon = 50, steps = 10, batch = 1;
  std::string images = "f32";  // an entry without "images" is about f32 images
  double mean_ms = 0;
};

struct BkcVerdict {
  bool matched = false;     // an entry of the file is about this device and shape
  bool regression = false;  // slower than the entry's best by more than its margin
  std::string message;      // one line either way
};

// Throws Error when the file is missing or malformed (naming the entry and field).
BkcVerdict check_bkc(const std::string& path, const BenchFigures& f);

}  // namespace pirt
