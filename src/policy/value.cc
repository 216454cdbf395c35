#include "policy/value.h"

#include <cstring>

#include "core/error.h"

namespace pirt {

namespace {

// dtype strings pirt reads: little-endian or byte-order-free numbers and bools.
bool known_dtype(const std::string& d) {
  static const char* const kKnown[] = {"<f2", "<f4", "<f8", "|u1", "<u2", "<u4", "<u8", "|i1",
                                       "<i2", "<i4", "<i8", "|b1"};
  for (const char* k : kKnown)
    if (d == k) return true;
  return false;
}

template <class T>
T load(const std::string& data, int64_t i) {
  T v;
  std::memcpy(&v, data.data() + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else {
    u = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

int NdArray::itemsize() const {
  if (dtype.size() < 3) return 0;
  try {
    return std::stoi(dtype.substr(2));
  } catch (...) {
    return 0;
  }
}

int64_t NdArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d == 0) return 0;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  return n;
}

std::string NdArray::shape_str() const {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

void NdArray::validate() const {
  if (!known_dtype(dtype)) throw Error("unsupported array dtype '" + dtype + "'");
  for (int64_t d : shape)
    if (d < 0) throw Error("negative array dimension in shape " + shape_str());
  const int64_t n = numel();
  int64_t bytes = 0;
  if (n < 0 || __builtin_mul_overflow(n, static_cast<int64_t>(itemsize()), &bytes))
    throw Error(strformat("array of dtype %s and shape %s is too large (over 2^63 bytes), got %zu bytes",
                          dtype.c_str(), shape_str().c_str(), data.size()));
  if (static_cast<uint64_t>(bytes) != data.size())
    throw Error(strformat("array of dtype %s and shape %s needs %lld bytes, got %zu", dtype.c_str(),
                          shape_str().c_str(), static_cast<long long>(bytes), data.size()));
}

double NdArray::get(int64_t i) const {
  if (dtype == "<f4") return load<float>(data, i);
  if (dtype == "<f8") return load<double>(data, i);
  if (dtype == "<f2") return f16_to_f32(load<uint16_t>(data, i));
  if (dtype == "|u1") return load<uint8_t>(data, i);
  if (dtype == "<u2") return load<uint16_t>(data, i);
  if (dtype == "<u4") return load<uint32_t>(data, i);
  if (dtype == "<u8") return static_cast<double>(load<uint64_t>(data, i));
  if (dtype == "|i1") return load<int8_t>(data, i);
  if (dtype == "<i2") return load<int16_t>(data, i);
  if (dtype == "<i4") return load<int32_t>(data, i);
  if (dtype == "<i8") return static_cast<double>(load<int64_t>(data, i));
  if (dtype == "|b1") return load<uint8_t>(data, i) ? 1.0 : 0.0;
  throw Error("array of dtype '" + dtype + "' is not numeric");
}

std::vector<double> NdArray::to_doubles() const {
  std::vector<double> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = get(i);
  return out;
}

NdArray NdArray::from_doubles(const std::vector<double>& v, std::vector<int64_t> shape) {
  NdArray a;
  a.dtype = "<f8";
  a.shape = std::move(shape);
  PIRT_CHECK(a.numel() == static_cast<int64_t>(v.size()), "shape %s for %zu values", a.shape_str().c_str(),
             v.size());
  a.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
  return a;
}

const Value* Value::find(const std::string& key) const {
  if (!is_map()) return nullptr;
  for (const auto& [k, v] : as_map())
    if (k == key) return &v;
  return nullptr;
}

void Value::set(const std::string& key, Value v) {
  PIRT_CHECK(is_map() || is_nil(), "set on a %s", type_name());
  if (is_nil()) v_ = ValueMap{};
  for (auto& [k, old] : as_map())
    if (k == key) {
      old = std::move(v);
      return;
    }
  as_map().emplace_back(key, std::move(v));
}

const char* Value::type_name() const {
  switch (v_.index()) {
    case 0: return "None";
    case 1: return "bool";
    case 2: return "int";
    case 3: return "float";
    case 4: return "str";
    case 5: return "bytes";
    case 6: return "ndarray";
    case 7: return "list";
    case 8: return "dict";
  }
  return "?";
}

namespace {

// Flattens a nested list of numbers; all leaves at the same depth, like np.asarray.
void flatten_list(const Value& v, int depth, std::vector<int64_t>& shape, std::vector<double>& out,
                  bool& any_float, const std::string& what) {
  if (v.is_list()) {
    const auto& l = v.as_list();
    if (static_cast<int>(shape.size()) == depth) {
      shape.push_back(static_cast<int64_t>(l.size()));
    } else if (static_cast<int>(shape.size()) < depth || shape[depth] != static_cast<int64_t>(l.size())) {
      throw Error(what + ": ragged nested list");
    }
    for (const Value& e : l) flatten_list(e, depth + 1, shape, out, any_float, what);
    return;
  }
  if (static_cast<int>(shape.size()) != depth) throw Error(what + ": ragged nested list");
  if (v.is_float()) {
    any_float = true;
    out.push_back(v.as_float());
  } else if (v.is_int()) {
    out.push_back(static_cast<double>(v.as_int()));
  } else if (v.is_bool()) {
    out.push_back(v.as_bool() ? 1.0 : 0.0);
  } else {
    throw Error(what + ": expected numbers, got " + v.type_name());
  }
}

}  // namespace

NdArray to_ndarray(const Value& v, const std::string& what) {
  if (v.is_array()) {
    const NdArray& a = v.as_array();
    a.validate();
    return a;
  }
  if (v.is_float() || v.is_int() || v.is_bool() || v.is_list()) {
    std::vector<int64_t> shape;
    std::vector<double> vals;
    bool any_float = false;
    flatten_list(v, 0, shape, vals, any_float, what);
    return NdArray::from_doubles(vals, shape);
  }
  throw Error(what + ": expected an array, got " + v.type_name());
}

}  // namespace pirt
