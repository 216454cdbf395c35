// safetensors: read (memory-mapped) and write.
//
// File layout (https://github.com/huggingface/safetensors):
//   [8 bytes]  N, little-endian uint64: the length of the header
//   [N bytes]  JSON object: {"<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
//                            ..., "__metadata__": {"<key>": "<value>", ...}}   (metadata optional)
//   [rest]     the data; each tensor's bytes are [8 + N + begin, 8 + N + end), row-major, little-endian
//
// The reader validates every entry when the file is opened, so a Tensor it hands out always lies
// inside the file and has exactly numel * dtype_size bytes. Every error names the file and the tensor.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/mmap.h"

namespace pirt {

class SafetensorsFile {
 public:
  // Maps the file and parses its header. Throws Error on anything malformed.
  static SafetensorsFile open(const std::string& path);

  // The tensor called `name`, or nullptr. Views point into the mapping (Where::Host) and stay valid
  // as long as this object or a copy of it lives. The memory is read-only: do not write through them.
  const Tensor* find(const std::string& name) const;
  // All tensor names, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return tensors_.size(); }
  // The "__metadata__" map (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return file_ ? file_->size() : 0; }

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> file_;  // shared so copies of this object are cheap and safe
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (host tensors) as a standard safetensors file that Python's safetensors library
// reads. The header is padded with spaces to a multiple of 8 bytes, and the data is ordered by
// element size, largest first, so that every tensor is aligned to its element size. The file is
// written to "<path>.tmp" and renamed, so a failed write never leaves a half-written `path`.
// Throws Error on duplicate or reserved names and on I/O failure.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace pirt
