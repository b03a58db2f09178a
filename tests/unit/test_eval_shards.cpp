// Sharded evaluation's slicing (eval/shards.h): K/N parsing and the slices' partition of the
// selected images, checked against the definition [(K-1)·n/N, K·n/N) written out here. The merge
// itself is tested end to end in tests/cli/test_eval_shards.py (against the unsharded run).
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "core/error.h"
#include "eval/shards.h"

namespace vitq {
namespace {

TEST(EvalShards, ParsesKOfNAndRefusesEverythingElse) {
  const Shard s = parse_shard("3/7");
  EXPECT_EQ(s.index, 3);
  EXPECT_EQ(s.count, 7);
  EXPECT_TRUE(s.sharded());
  EXPECT_EQ(parse_shard("1/1").count, 1);
  EXPECT_EQ(parse_shard("1048576/1048576").index, kMaxShards);
  for (const char* bad : {"", "3", "/7", "3/", "0/7", "8/7", "-1/7", "3/0", "3/7/1", "a/b", " 3/7", "3/7 ",
                          "3.0/7", "1/1048577", "99999999999/99999999999"}) {
    try {
      parse_shard(bad);
      ADD_FAILURE() << "'" << bad << "' was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage) << bad;
      EXPECT_NE(std::string(e.what()).find("--shard"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(Shard{}.sharded());
}

TEST(EvalShards, SlicesPartitionTheSelectionInOrder) {
  for (size_t n : {0u, 1u, 5u, 35u, 400u, 5000u})
    for (int N : {1, 2, 3, 4, 7, 40}) {
      std::vector<size_t> selected(n);
      std::iota(selected.begin(), selected.end(), size_t(100));  // any increasing indices
      std::vector<size_t> joined;
      for (int K = 1; K <= N; ++K) {
        const std::vector<size_t> slice = shard_slice(selected, {K, N});
        const size_t begin = size_t(K - 1) * n / size_t(N), end = size_t(K) * n / size_t(N);
        ASSERT_EQ(slice.size(), end - begin) << n << " images, shard " << K << "/" << N;
        // Sizes differ by at most one between shards.
        ASSERT_LE(slice.size(), n / size_t(N) + 1);
        ASSERT_GE(slice.size(), n / size_t(N));
        joined.insert(joined.end(), slice.begin(), slice.end());
      }
      ASSERT_EQ(joined, selected) << n << " images in " << N << " shards";
    }
  const std::vector<size_t> all{4, 8, 15, 16, 23, 42};
  EXPECT_EQ(shard_slice(all, Shard{}), all);  // not sharded: everything
}

}  // namespace
}  // namespace vitq
