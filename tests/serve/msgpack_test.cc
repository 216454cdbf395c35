// The msgpack-numpy codec against bytes that openpi_client's msgpack_numpy.packb produces.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <msgpack.hpp>

#include "core/error.h"
#include "serve/msgpack_numpy.h"

namespace pirt {
namespace {

std::string hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

TEST(MsgpackNumpy, DecodesOpenpiClientBytes) {
  // openpi_client.msgpack_numpy.packb({"a": np.array([1.5, 2.0], dtype=np.float32), "p": "hi",
  //     "g": np.float32(0.25), "n": {"x": [1, 2]}, "b": np.True_})
  const Value v = msgpack_decode(hex(
      "85a16184c40b5f5f6e6461727261795f5fc3c40464617461c4080000c03f00000040c4056474797065a33c6634c405736861706591"
      "02a170a26869a16783c40d5f5f6e7067656e657269635f5fc3c40464617461cb3fd0000000000000c4056474797065a33c6634a16e"
      "81a178920102a16283c40d5f5f6e7067656e657269635f5fc3c40464617461c3c4056474797065a37c6231"));
  ASSERT_TRUE(v.is_map());
  const NdArray& a = v.find("a")->as_array();
  EXPECT_EQ(a.dtype, "<f4");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(a.get(0), 1.5);
  EXPECT_EQ(a.get(1), 2.0);
  EXPECT_EQ(v.find("p")->as_str(), "hi");
  EXPECT_TRUE(v.find("g")->as_array().shape.empty());
  EXPECT_EQ(v.find("g")->as_array().dtype, "<f4");
  EXPECT_EQ(v.find("g")->as_array().get(0), 0.25);
  EXPECT_EQ(v.find("n")->find("x")->as_list().size(), 2u);
  EXPECT_EQ(v.find("b")->as_array().get(0), 1.0);
}

TEST(MsgpackNumpy, EncodesLikePackArray) {
  Value v{ValueMap{}};
  v.set("actions", NdArray::from_doubles({1.0, -2.0}, {1, 2}));
  Value t{ValueMap{}};
  t.set("infer_ms", 1.5);
  v.set("policy_timing", t);
  const std::string b = msgpack_encode(v);
  // packb({"actions": np.array([[1., -2.]]), "policy_timing": {"infer_ms": 1.5}})
  const std::string want = hex(
      "82a7616374696f6e7384c40b5f5f6e6461727261795f5fc3c40464617461c410000000000000f03f00000000000000c0"
      "c4056474797065a33c6638c4057368617065920102ad706f6c6963795f74696d696e6781a8696e6665725f6d73cb3ff8000000000000");
  EXPECT_EQ(b, want);
  const Value back = msgpack_decode(b);
  EXPECT_EQ(back.find("actions")->as_array().data, v.find("actions")->as_array().data);
}

TEST(MsgpackNumpy, RejectsMalformed) {
  EXPECT_THROW(msgpack_decode(""), Error);
  EXPECT_THROW(msgpack_decode("\xc1"), Error);                    // never-used byte
  EXPECT_THROW(msgpack_decode(hex("92a161")), Error);             // truncated array
  EXPECT_THROW(msgpack_decode(hex("a161a162")), Error);           // trailing bytes
  EXPECT_THROW(msgpack_decode(hex("dd7fffffff")), Error);         // 2^31 elements in 5 bytes
  // ndarray whose data does not fit its shape, and a complex dtype.
  EXPECT_THROW(msgpack_decode(hex("84c40b5f5f6e6461727261795f5fc3c40464617461c40100c4056474797065a33c6634c40573686170659102")), Error);
  EXPECT_THROW(msgpack_decode(hex("84c40b5f5f6e6461727261795f5fc3c40464617461c40800000000000000004c4056474797065a33c6338c40573686170659101")), Error);
}

// Hand-packed msgpack-numpy, for what the encoder never writes.
using Packer = msgpack::packer<msgpack::sbuffer>;
void pack_str(Packer& p, const std::string& s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
std::string ndarray_bytes(const std::string& dtype, const std::vector<uint64_t>& shape, size_t data_bytes) {
  msgpack::sbuffer buf;
  Packer p(buf);
  p.pack_map(4);
  pack_str(p, "__ndarray__");
  p.pack_true();
  pack_str(p, "data");
  const std::string data(data_bytes, '\0');
  p.pack_bin(static_cast<uint32_t>(data.size()));
  p.pack_bin_body(data.data(), static_cast<uint32_t>(data.size()));
  pack_str(p, "dtype");
  pack_str(p, dtype);
  pack_str(p, "shape");
  p.pack_array(static_cast<uint32_t>(shape.size()));
  for (uint64_t d : shape) p.pack_uint64(d);
  return std::string(buf.data(), buf.size());
}
template <class T>
std::string npgeneric_bytes(const std::string& dtype, T data) {
  msgpack::sbuffer buf;
  Packer p(buf);
  p.pack_map(3);
  pack_str(p, "__npgeneric__");
  p.pack_true();
  pack_str(p, "data");
  p.pack(data);
  pack_str(p, "dtype");
  pack_str(p, dtype);
  return std::string(buf.data(), buf.size());
}

std::string error_of(const std::string& bytes) {
  try {
    msgpack_decode(bytes);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Shapes whose element or byte count does not fit in int64 are rejected by name (before, the
// product overflowed: undefined behaviour, and (2^62, 4) of <f4 wrapped to 0 bytes and was accepted).
TEST(MsgpackNumpy, RejectsShapesWhoseSizeOverflows) {
  for (const auto& shape : {std::vector<uint64_t>{1ull << 62, 4}, std::vector<uint64_t>{1ull << 32, 1ull << 32},
                            std::vector<uint64_t>{INT64_MAX, 8}, std::vector<uint64_t>{1ull << 61}}) {
    const std::string e = error_of(ndarray_bytes("<f4", shape, 0));
    EXPECT_NE(e.find("is too large"), std::string::npos) << e;
  }
  // A zero dim makes an empty array, however big the others.
  const Value v = msgpack_decode(ndarray_bytes("<f4", {0, 1ull << 62, 1ull << 62}, 0));
  EXPECT_EQ(v.as_array().numel(), 0);
}

// A shape claiming terabytes is an error that names the sizes; nothing is allocated for it.
TEST(MsgpackNumpy, RejectsHugeShapeWithoutTheData) {
  const std::string e = error_of(ndarray_bytes("<f4", {1u << 20, 1u << 20}, 16));
  EXPECT_NE(e.find("shape (1048576, 1048576) needs 4398046511104 bytes, got 16"), std::string::npos) << e;
  EXPECT_NE(error_of(ndarray_bytes("<f8", {1ull << 63}, 0)).find("negative array dimension"), std::string::npos);
}

// numpy scalars whose value the dtype cannot hold are errors (a C cast of them is undefined).
TEST(MsgpackNumpy, RejectsOutOfRangeScalars) {
  for (const auto& [dtype, v] : std::vector<std::pair<std::string, double>>{
           {"<i4", 1e10}, {"|u1", 256.0}, {"|u1", -1.0}, {"|i1", 1e300}, {"<i8", 1e19}, {"<u8", -1.0},
           {"<i2", std::nan("")}, {"<u4", INFINITY}}) {
    const std::string e = error_of(npgeneric_bytes(dtype, v));
    EXPECT_NE(e.find("out of range for dtype '" + dtype + "'"), std::string::npos) << dtype << " " << v << ": " << e;
  }
  EXPECT_NE(error_of(npgeneric_bytes("<u8", int64_t{-1})).find("out of range for dtype '<u8'"), std::string::npos);
  EXPECT_NE(error_of(npgeneric_bytes("<i8", uint64_t{1} << 63)).find("out of range for dtype '<i8'"),
            std::string::npos);
  // In range: exact, including the int64/uint64 extremes; a float32 overflow is inf as in numpy.
  EXPECT_EQ(msgpack_decode(npgeneric_bytes("<i4", -2147483648.0)).as_array().get(0), -2147483648.0);
  EXPECT_EQ(msgpack_decode(npgeneric_bytes("|u1", 255)).as_array().get(0), 255.0);
  uint64_t u = 0;
  std::memcpy(&u, msgpack_decode(npgeneric_bytes("<u8", UINT64_MAX)).as_array().data.data(), 8);
  EXPECT_EQ(u, UINT64_MAX);
  int64_t i = 0;
  std::memcpy(&i, msgpack_decode(npgeneric_bytes("<i8", INT64_MIN)).as_array().data.data(), 8);
  EXPECT_EQ(i, INT64_MIN);
  EXPECT_TRUE(std::isinf(msgpack_decode(npgeneric_bytes("<f4", 1e300)).as_array().get(0)));
  EXPECT_TRUE(std::isnan(msgpack_decode(npgeneric_bytes("<f4", std::nan(""))).as_array().get(0)));
}

}  // namespace
}  // namespace pirt
