// Sharded evaluation: `vitq eval --shard K/N` evaluates the K-th of N contiguous slices of the
// selected images (1-based, as GNU split's -n K/N), and merge_eval_shards() joins the N JSON
// results into the result of the unsharded run — the same counts, and per-image predictions in
// the same order — so any batch system (Slurm arrays, Kubernetes jobs) can spread a large
// evaluation over machines.
#pragma once
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vitq {

struct Shard {
  int index = 0, count = 0;  // 1 <= index <= count; count 0: not sharded
  bool sharded() const { return count > 0; }
};

// Parses "K/N" (1 <= K <= N <= kMaxShards); anything else is an Error(Usage) quoting it.
Shard parse_shard(const std::string& text);
constexpr int kMaxShards = 1 << 20;

// Shard s's slice of the selected dataset indices: [(K-1)·n/N, K·n/N) of `selected`. The
// slices of K = 1..N partition `selected` in order (some may be empty when N > n).
std::vector<size_t> shard_slice(const std::vector<size_t>& selected, Shard s);

// Joins the `vitq eval --json` results of shards 1..N of one run (given in any order). Every
// shard must be there exactly once, and the shards must agree on the model, plan, engine, data,
// --limit/--seed selection and reference; otherwise an Error(Usage) naming the file and field
// (Error(Io)/Error(Model) for a file that cannot be read or is not such a result). The result
// has the unsharded run's fields; `seconds` and `forward_seconds` are the shards' sums, and the
// mean KL is the images-weighted mean (equal to the unsharded one up to rounding).
nlohmann::ordered_json merge_eval_shards(const std::vector<std::string>& paths);

}  // namespace vitq
