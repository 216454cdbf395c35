// Value: the dict-of-arrays that openpi's policies take and return (what msgpack-numpy carries).
// NdArray: a numpy array as it travels: dtype string ("<f4", "|u1", ...), shape, raw C-order bytes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace pirt {

struct NdArray {
  std::string dtype;  // numpy's dtype.str: "<f4", "<f8", "|u1", "|b1", "<i8", ...
  std::vector<int64_t> shape;
  std::string data;  // numel * itemsize bytes, C order

  // Kind and size from the dtype string: 'f' float, 'i' int, 'u' unsigned, 'b' bool, 'U' unicode.
  char kind() const { return dtype.size() >= 2 ? dtype[1] : '?'; }
  int itemsize() const;
  int64_t numel() const;  // -1 for a negative dim or a product past int64
  std::string shape_str() const;  // "(224, 224, 3)", numpy style
  // Element i as a double; throws Error for dtypes that are not numbers or bool.
  double get(int64_t i) const;
  std::vector<double> to_doubles() const;

  // Throws Error unless the dtype is one pirt understands and the byte count matches the shape.
  void validate() const;

  static NdArray from_doubles(const std::vector<double>& v, std::vector<int64_t> shape);  // "<f8"
};

class Value;
using ValueList = std::vector<Value>;
using ValueMap = std::vector<std::pair<std::string, Value>>;  // keeps the sender's key order

struct Bytes {
  std::string data;
};

class Value {
 public:
  using Storage = std::variant<std::monostate, bool, int64_t, double, std::string, Bytes, NdArray,
                               ValueList, ValueMap>;
  Value() = default;
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(i) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(Bytes b) : v_(std::move(b)) {}
  Value(NdArray a) : v_(std::move(a)) {}
  Value(ValueList l) : v_(std::move(l)) {}
  Value(ValueMap m) : v_(std::move(m)) {}

  bool is_nil() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_str() const { return std::holds_alternative<std::string>(v_); }
  bool is_bytes() const { return std::holds_alternative<Bytes>(v_); }
  bool is_array() const { return std::holds_alternative<NdArray>(v_); }
  bool is_list() const { return std::holds_alternative<ValueList>(v_); }
  bool is_map() const { return std::holds_alternative<ValueMap>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  const std::string& as_str() const { return std::get<std::string>(v_); }
  const Bytes& as_bytes() const { return std::get<Bytes>(v_); }
  const NdArray& as_array() const { return std::get<NdArray>(v_); }
  const ValueList& as_list() const { return std::get<ValueList>(v_); }
  const ValueMap& as_map() const { return std::get<ValueMap>(v_); }
  ValueMap& as_map() { return std::get<ValueMap>(v_); }

  // Map lookup; nullptr when this is not a map or has no such key.
  const Value* find(const std::string& key) const;
  // Sets (or replaces) a key of a map.
  void set(const std::string& key, Value v);

  const char* type_name() const;  // "dict", "ndarray", "str", ... (Python's names)
  const Storage& storage() const { return v_; }

 private:
  Storage v_;
};

// np.asarray for what a request may hold: an ndarray, a number, a bool, or a (nested) list of
// numbers. Throws Error naming `what` for anything else.
NdArray to_ndarray(const Value& v, const std::string& what);

}  // namespace pirt
