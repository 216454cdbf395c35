#pragma once

namespace pirt {

int cmd_bench(int argc, char** argv);
int cmd_infer(int argc, char** argv);
int cmd_make_checkpoint(int argc, char** argv);
int cmd_make_inputs(int argc, char** argv);

}  // namespace pirt
