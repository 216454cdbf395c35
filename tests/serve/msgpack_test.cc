// The msgpack-numpy codec against bytes that openpi_client's msgpack_numpy.packb produces.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace pirt
