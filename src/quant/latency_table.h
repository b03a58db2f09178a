// A per-site latency table of the integer runtime on one machine (issue 16 item 3): for each
// width it was measured at, the time per image of each site kind of one transformer block (qkv,
// attention with its softmax, proj, fc1 with GELU, fc2 — each with its fused epilogue, as
// `vitq bench --profile` splits them) and of the rest (patch embedding, head, QwT compensation).
// Made by `vitq bench --latency-table` (runtime/stage_latency.h) or by the mixed-precision search
// itself; read by the search to price a width per module. Plain data, saved as JSON.
//
// The runtime's work depends on a module's width only through the 8-bit planes of its operands
// (1 up to 8 bits, 2 for 9–10 bits: runtime/int_linear.h), so a width the table lacks is priced by
// a measured width of the same plane count.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vitq {

struct LatencyEntry {
  int bits = 0;
  // ms per image, one block's site (the stage's total over the blocks / depth).
  double qkv = 0, attention = 0, proj = 0, fc1 = 0, fc2 = 0;
  double rest = 0;   // ms per image: patch embedding, head, compensation
  double msa() const { return qkv + attention + proj; }
  double mlp() const { return fc1 + fc2; }
  double total(int depth) const { return rest + depth * (msa() + mlp()); }
};

struct LatencyTable {
  std::string architecture;
  int depth = 0, embed_dim = 0, mlp_dim = 0, heads = 0, tokens = 0;
  int batch = 1, threads = 1;
  std::string cpu;  // informational
  std::vector<LatencyEntry> entries;  // by increasing bits, one per width

  // The entry of `bits`, or of a measured width with the same plane count; nullptr if none.
  const LatencyEntry* entry_for(int bits) const;
  void add(const LatencyEntry& e);  // replaces an entry of the same width
};

int operand_planes(int bits);  // 1 up to 8 bits, 2 above

nlohmann::ordered_json latency_table_json(const LatencyTable& t);
// Errors name `path` and the field: Error(Model) for a malformed table.
LatencyTable latency_table_from_json(const nlohmann::ordered_json& j, const std::string& path);
LatencyTable load_latency_table(const std::string& path);

// The CPU's model name (/proc/cpuinfo), or "unknown".
std::string cpu_model_name();

}  // namespace vitq
