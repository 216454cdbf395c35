#include "io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace pirt {

namespace {

using json = nlohmann::json;

constexpr const char* kSupportedDtypes = "F32, BF16, F16, I32, I64, BOOL, U8";

// A non-negative JSON integer, or false.
bool get_index(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

// Parses one header entry into a Tensor pointing into `data` (the byte after the header).
Tensor parse_entry(const std::string& path, const std::string& name, const json& e, const uint8_t* data,
                   uint64_t data_start, size_t file_size) {
  const char* p = path.c_str();
  const char* n = name.c_str();
  if (!e.is_object()) throw_error(strformat("%s: tensor '%s': header entry is not a JSON object", p, n));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) throw_error(strformat("%s: tensor '%s': header entry has no \"%s\"", p, n, key));

  const json& jd = e.at("dtype");
  if (!jd.is_string()) throw_error(strformat("%s: tensor '%s': \"dtype\" is not a string", p, n));
  const std::string dname = jd.get<std::string>();
  const std::optional<DType> dtype = dtype_from_name(dname);
  if (!dtype)
    throw_error(strformat("%s: tensor '%s': unsupported dtype '%s' (pirt reads %s)", p, n, dname.c_str(),
                          kSupportedDtypes));

  const json& js = e.at("shape");
  if (!js.is_array()) throw_error(strformat("%s: tensor '%s': \"shape\" is not an array", p, n));
  if (js.size() > Shape::kMaxRank)
    throw_error(strformat("%s: tensor '%s': rank %zu is more than pirt supports (%d)", p, n, js.size(),
                          Shape::kMaxRank));
  std::vector<int64_t> dims;
  // 128-bit so that absurd shapes are reported as a size mismatch rather than overflowing.
  unsigned __int128 nbytes = dtype_size(*dtype);
  for (const json& d : js) {
    uint64_t v = 0;
    if (!get_index(d, &v) || v > static_cast<uint64_t>(INT64_MAX))
      throw_error(strformat("%s: tensor '%s': \"shape\" has an entry that is not a non-negative integer: %s", p,
                            n, d.dump().c_str()));
    dims.push_back(static_cast<int64_t>(v));
    nbytes *= v;
    if (nbytes > (static_cast<unsigned __int128>(1) << 100)) nbytes = static_cast<unsigned __int128>(1) << 100;
  }

  const json& jo = e.at("data_offsets");
  uint64_t begin = 0, end = 0;
  if (!jo.is_array() || jo.size() != 2 || !get_index(jo[0], &begin) || !get_index(jo[1], &end) || end < begin)
    throw_error(strformat("%s: tensor '%s': \"data_offsets\" must be [begin, end] with 0 <= begin <= end, not %s",
                          p, n, jo.dump().c_str()));
  const Shape shape(dims);
  if (static_cast<unsigned __int128>(end - begin) != nbytes)
    throw_error(strformat("%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s %s needs %llu", p, n,
                          (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin),
                          dname.c_str(), shape.str().c_str(), (unsigned long long)nbytes));
  // data_start <= file_size here, so the subtraction cannot wrap.
  if (end > file_size - data_start)
    throw_error(strformat("%s: tensor '%s': data_offsets end %llu (byte %llu of the file) is past the end of the "
                          "file (%zu bytes; truncated file?)",
                          p, n, (unsigned long long)end, (unsigned long long)(data_start + end), file_size));
  Tensor t;
  t.data = const_cast<uint8_t*>(data + begin);  // read-only mapping; see find()
  t.dtype = *dtype;
  t.shape = shape;
  t.where = Where::Host;
  return t;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = std::make_shared<const MappedFile>(MappedFile::open(path));
  const uint8_t* bytes = f.file_->data();
  const size_t size = f.file_->size();
  const char* p = path.c_str();
  if (size < 8)
    throw_error(strformat("%s: too short to be a safetensors file (%zu bytes; the 8-byte header length is missing)",
                          p, size));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > size - 8)
    throw_error(strformat("%s: header length %llu runs past the end of the file (%zu bytes; truncated file or not "
                          "a safetensors file?)",
                          p, (unsigned long long)header_len, size));

  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const json::exception& e) {
    throw_error(strformat("%s: header is not valid JSON (not a safetensors file?): %s", p, e.what()));
  }
  if (!header.is_object()) throw_error(strformat("%s: header is not a JSON object", p));

  const uint64_t data_start = 8 + header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw_error(strformat("%s: \"__metadata__\" is not a JSON object", p));
      // The format says string -> string; keep anything else as its JSON text rather than refuse the file.
      for (const auto& [k, v] : entry.items()) f.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    f.tensors_[name] = parse_entry(path, name, entry, bytes + data_start, data_start, size);
  }
  return f;
}

const Tensor* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const char* p = path.c_str();
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      throw_error(strformat("%s: cannot write a tensor named '%s'", p, name.c_str()));
    if (!seen.insert(name).second) throw_error(strformat("%s: tensor '%s' given twice", p, name.c_str()));
    if (t.where != Where::Host) throw_error(strformat("%s: tensor '%s' is not in host memory", p, name.c_str()));
    if (t.data == nullptr && t.nbytes() > 0)
      throw_error(strformat("%s: tensor '%s' has no data", p, name.c_str()));
  }
  // Largest elements first keeps every tensor aligned to its element size without gaps between
  // tensors (safetensors readers reject gaps). This is also what Python's safetensors does.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype) > dtype_size(tensors[b].second.dtype);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    header[tensors[i].first] = {{"dtype", std::string(dtype_name(t.dtype))},
                                {"shape", t.shape.dims()},
                                {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data then starts 8-byte aligned

  const std::string tmp = path + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) throw_error(strformat("%s: cannot create: %s", tmp.c_str(), std::strerror(errno)));
  bool ok = true;
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  ok = ok && std::fwrite(len, 1, 8, out) == 8;
  ok = ok && std::fwrite(text.data(), 1, text.size(), out) == text.size();
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (!ok) break;
    ok = std::fwrite(t.data, 1, t.nbytes(), out) == t.nbytes();
  }
  const int err = ok ? 0 : errno;
  if (std::fclose(out) != 0 && ok) ok = false;
  if (!ok) {
    std::remove(tmp.c_str());
    throw_error(strformat("%s: write failed: %s", tmp.c_str(), std::strerror(err ? err : errno)));
  }
  if (std::rename(tmp.c_str(), p) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw_error(strformat("%s: cannot rename from %s: %s", p, tmp.c_str(), std::strerror(e)));
  }
}

}  // namespace pirt
