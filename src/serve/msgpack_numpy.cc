#include "serve/msgpack_numpy.h"

#include <msgpack.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/error.h"

namespace pirt {

namespace {

// Limits against requests that declare huge containers in a few bytes.
msgpack::unpack_limit limits() {
  return msgpack::unpack_limit(/*array=*/1u << 20, /*map=*/1u << 16, /*str=*/64u << 20, /*bin=*/1u << 30,
                               /*ext=*/0, /*depth=*/64);
}

std::string key_of(const msgpack::object& k) {
  switch (k.type) {
    case msgpack::type::STR: return std::string(k.via.str.ptr, k.via.str.size);
    case msgpack::type::BIN: return std::string(k.via.bin.ptr, k.via.bin.size);
    case msgpack::type::POSITIVE_INTEGER: return std::to_string(k.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return std::to_string(k.via.i64);
    default: throw Error("msgpack: dict keys must be str, bytes or int");
  }
}

const msgpack::object* field(const msgpack::object& m, const char* key) {
  for (uint32_t i = 0; i < m.via.map.size; ++i) {
    const auto& kv = m.via.map.ptr[i];
    if ((kv.key.type == msgpack::type::STR || kv.key.type == msgpack::type::BIN) && key_of(kv.key) == key)
      return &kv.val;
  }
  return nullptr;
}

std::string str_or_bin(const msgpack::object& o, const char* what) {
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
  throw Error(std::string("msgpack-numpy: ") + what + " must be str or bytes");
}

Value convert(const msgpack::object& o);

NdArray ndarray_of(const msgpack::object& m) {
  const msgpack::object* data = field(m, "data");
  const msgpack::object* dtype = field(m, "dtype");
  const msgpack::object* shape = field(m, "shape");
  if (!data || !dtype || !shape) throw Error("msgpack-numpy: __ndarray__ without data, dtype and shape");
  NdArray a;
  a.data = str_or_bin(*data, "ndarray data");
  a.dtype = str_or_bin(*dtype, "ndarray dtype");
  if (shape->type != msgpack::type::ARRAY) throw Error("msgpack-numpy: ndarray shape must be a list");
  for (uint32_t i = 0; i < shape->via.array.size; ++i) {
    const auto& d = shape->via.array.ptr[i];
    if (d.type != msgpack::type::POSITIVE_INTEGER) throw Error("msgpack-numpy: ndarray shape must hold sizes");
    a.shape.push_back(static_cast<int64_t>(d.via.u64));
  }
  if (a.kind() == 'U') {  // numpy str arrays (a prompt sent as np.asarray("...")): keep the bytes
    if (a.shape.size() != 0) throw Error("msgpack-numpy: only 0-d str arrays are accepted");
    return a;
  }
  a.validate();
  return a;
}

// np.dtype(dtype).type(data): a 0-d array, or a str for numpy str scalars.
Value npgeneric_of(const msgpack::object& m) {
  const msgpack::object* data = field(m, "data");
  const msgpack::object* dtype = field(m, "dtype");
  if (!data || !dtype) throw Error("msgpack-numpy: __npgeneric__ without data and dtype");
  const std::string dt = str_or_bin(*dtype, "npgeneric dtype");
  if (dt.size() >= 2 && dt[1] == 'U') return Value{str_or_bin(*data, "npgeneric data")};
  double v;
  switch (data->type) {
    case msgpack::type::BOOLEAN: v = data->via.boolean; break;
    case msgpack::type::POSITIVE_INTEGER: v = static_cast<double>(data->via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: v = static_cast<double>(data->via.i64); break;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: v = data->via.f64; break;
    default: throw Error("msgpack-numpy: npgeneric data must be a number or bool");
  }
  NdArray a;
  a.dtype = dt;
  // Store the scalar in its own dtype; a value the dtype cannot hold is an error (numpy raises
  // OverflowError for ints; a C cast of such a double is undefined behaviour).
  auto put = [&a](auto x) { a.data.assign(reinterpret_cast<const char*>(&x), sizeof(x)); };
  auto put_int = [&](auto zero) {
    using T = decltype(zero);
    if (data->type == msgpack::type::POSITIVE_INTEGER && std::is_unsigned_v<T> && sizeof(T) == 8)
      return put(static_cast<T>(data->via.u64));
    if (data->type == msgpack::type::NEGATIVE_INTEGER && std::is_signed_v<T> && sizeof(T) == 8)
      return put(static_cast<T>(data->via.i64));
    if (data->type == msgpack::type::POSITIVE_INTEGER && std::is_signed_v<T> && sizeof(T) == 8 &&
        data->via.u64 <= static_cast<uint64_t>(INT64_MAX))
      return put(static_cast<T>(data->via.u64));
    // 2^63 and 2^64 are exact doubles; v < them keeps the cast defined.
    const double lo = static_cast<double>(std::numeric_limits<T>::min());
    const double hi = sizeof(T) == 8 ? (std::is_signed_v<T> ? 0x1p63 : 0x1p64)
                                     : static_cast<double>(std::numeric_limits<T>::max()) + 1.0;
    if (!(v >= lo && v < hi))
      throw Error(strformat("msgpack-numpy: scalar %g is out of range for dtype '%s'", v, dt.c_str()));
    put(static_cast<T>(v));
  };
  if (dt == "<f8") put(v);
  else if (dt == "<f4") put(static_cast<float>(std::fabs(v) <= std::numeric_limits<float>::max() || !std::isfinite(v)
                                                   ? v : std::copysign(HUGE_VAL, v)));
  else if (dt == "|b1") put(static_cast<uint8_t>(v != 0));
  else if (dt == "|u1") put_int(uint8_t{});
  else if (dt == "|i1") put_int(int8_t{});
  else if (dt == "<i2") put_int(int16_t{});
  else if (dt == "<u2") put_int(uint16_t{});
  else if (dt == "<i4") put_int(int32_t{});
  else if (dt == "<u4") put_int(uint32_t{});
  else if (dt == "<i8") put_int(int64_t{});
  else if (dt == "<u8") put_int(uint64_t{});
  else throw Error("msgpack-numpy: unsupported scalar dtype '" + dt + "'");
  return Value{std::move(a)};
}

Value convert(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return Value{};
    case msgpack::type::BOOLEAN: return Value{o.via.boolean};
    case msgpack::type::POSITIVE_INTEGER:
      if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) return Value{static_cast<double>(o.via.u64)};
      return Value{static_cast<int64_t>(o.via.u64)};
    case msgpack::type::NEGATIVE_INTEGER: return Value{static_cast<int64_t>(o.via.i64)};
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return Value{o.via.f64};
    case msgpack::type::STR: return Value{std::string(o.via.str.ptr, o.via.str.size)};
    case msgpack::type::BIN: return Value{Bytes{std::string(o.via.bin.ptr, o.via.bin.size)}};
    case msgpack::type::ARRAY: {
      ValueList l;
      l.reserve(o.via.array.size);
      for (uint32_t i = 0; i < o.via.array.size; ++i) l.push_back(convert(o.via.array.ptr[i]));
      return Value{std::move(l)};
    }
    case msgpack::type::MAP: {
      if (field(o, "__ndarray__")) return Value{ndarray_of(o)};
      if (field(o, "__npgeneric__")) return npgeneric_of(o);
      ValueMap m;
      m.reserve(o.via.map.size);
      for (uint32_t i = 0; i < o.via.map.size; ++i)
        m.emplace_back(key_of(o.via.map.ptr[i].key), convert(o.via.map.ptr[i].val));
      return Value{std::move(m)};
    }
    case msgpack::type::EXT: throw Error("msgpack: extension types are not accepted");
  }
  throw Error("msgpack: unknown object type");
}

using Packer = msgpack::packer<msgpack::sbuffer>;

void pack_bin_str(Packer& p, const char* s) {
  const size_t n = std::strlen(s);
  p.pack_bin(static_cast<uint32_t>(n));
  p.pack_bin_body(s, static_cast<uint32_t>(n));
}

void pack(Packer& p, const Value& v) {
  const auto& s = v.storage();
  switch (s.index()) {
    case 0: p.pack_nil(); break;
    case 1: v.as_bool() ? p.pack_true() : p.pack_false(); break;
    case 2: p.pack_int64(v.as_int()); break;
    case 3: p.pack_double(v.as_float()); break;
    case 4:
      p.pack_str(static_cast<uint32_t>(v.as_str().size()));
      p.pack_str_body(v.as_str().data(), static_cast<uint32_t>(v.as_str().size()));
      break;
    case 5:
      p.pack_bin(static_cast<uint32_t>(v.as_bytes().data.size()));
      p.pack_bin_body(v.as_bytes().data.data(), static_cast<uint32_t>(v.as_bytes().data.size()));
      break;
    case 6: {  // the key order of pack_array: __ndarray__, data, dtype, shape
      const NdArray& a = v.as_array();
      p.pack_map(4);
      pack_bin_str(p, "__ndarray__");
      p.pack_true();
      pack_bin_str(p, "data");
      p.pack_bin(static_cast<uint32_t>(a.data.size()));
      p.pack_bin_body(a.data.data(), static_cast<uint32_t>(a.data.size()));
      pack_bin_str(p, "dtype");
      p.pack_str(static_cast<uint32_t>(a.dtype.size()));
      p.pack_str_body(a.dtype.data(), static_cast<uint32_t>(a.dtype.size()));
      pack_bin_str(p, "shape");
      p.pack_array(static_cast<uint32_t>(a.shape.size()));
      for (int64_t d : a.shape) p.pack_int64(d);
      break;
    }
    case 7:
      p.pack_array(static_cast<uint32_t>(v.as_list().size()));
      for (const Value& e : v.as_list()) pack(p, e);
      break;
    case 8:
      p.pack_map(static_cast<uint32_t>(v.as_map().size()));
      for (const auto& [k, e] : v.as_map()) {
        p.pack_str(static_cast<uint32_t>(k.size()));
        p.pack_str_body(k.data(), static_cast<uint32_t>(k.size()));
        pack(p, e);
      }
      break;
  }
}

}  // namespace

Value msgpack_decode(std::string_view bytes) {
  if (bytes.empty()) throw Error("msgpack: empty message");
  msgpack::object_handle oh;
  std::size_t off = 0;
  try {
    oh = msgpack::unpack(bytes.data(), bytes.size(), off, nullptr, nullptr, limits());
  } catch (const std::exception& e) {
    throw Error(std::string("request is not msgpack: ") + e.what());
  }
  if (off != bytes.size())
    throw Error(strformat("request is not msgpack: %zu extra bytes after the object", bytes.size() - off));
  return convert(oh.get());
}

std::string msgpack_encode(const Value& v) {
  msgpack::sbuffer buf;
  Packer p(buf);
  pack(p, v);
  return std::string(buf.data(), buf.size());
}

}  // namespace pirt
