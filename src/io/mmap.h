// A read-only memory map of a whole file. Checkpoints are mapped, not read, so that opening a
// 6.5 GB model.safetensors costs nothing until the bytes are used, and tensor views can point
// straight into the page cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pirt {

class MappedFile {
 public:
  // Maps `path` read-only (PROT_READ, MAP_SHARED) and asks the kernel to start reading it
  // (madvise WILLNEED). Throws Error naming the path and the OS reason if it cannot.
  static MappedFile open(const std::string& path);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // The mapping is read-only: writing through data() faults. An empty file has data() == nullptr.
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace pirt
