// The scalar fp32 CPU backend: the oracle for every op (src/ops/ops.h).
#pragma once

#include <memory>

#include "ops/ops.h"

namespace pirt {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace pirt
