// openpi_client/msgpack_numpy.py in C++: msgpack with numpy arrays as
// {b"__ndarray__": True, b"data": <bin>, b"dtype": "<f4", b"shape": [...]} and numpy scalars as
// {b"__npgeneric__": True, b"data": <scalar>, b"dtype": "<f8"} (spec section 9).
#pragma once

#include <string>
#include <string_view>

#include "policy/value.h"

namespace pirt {

// Throws Error for bytes that are not one complete msgpack object or hold a malformed array.
Value msgpack_decode(std::string_view bytes);
std::string msgpack_encode(const Value& v);

}  // namespace pirt
