#include "quant/latency_table.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "io/json_file.h"

namespace vitq {

int operand_planes(int bits) { return bits > 8 ? 2 : 1; }

const LatencyEntry* LatencyTable::entry_for(int bits) const {
  for (const LatencyEntry& e : entries)
    if (e.bits == bits) return &e;
  const LatencyEntry* near = nullptr;  // the nearest width of the same plane count
  for (const LatencyEntry& e : entries)
    if (operand_planes(e.bits) == operand_planes(bits) && (!near || std::abs(e.bits - bits) < std::abs(near->bits - bits)))
      near = &e;
  return near;
}

void LatencyTable::add(const LatencyEntry& e) {
  entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const LatencyEntry& x) { return x.bits == e.bits; }),
                entries.end());
  entries.push_back(e);
  std::sort(entries.begin(), entries.end(), [](const LatencyEntry& a, const LatencyEntry& b) { return a.bits < b.bits; });
}

nlohmann::ordered_json latency_table_json(const LatencyTable& t) {
  nlohmann::ordered_json j;
  j["format"] = "vitq-latency-table";
  j["version"] = 1;
  j["architecture"] = t.architecture;
  j["depth"] = t.depth;
  j["embed_dim"] = t.embed_dim;
  j["mlp_dim"] = t.mlp_dim;
  j["heads"] = t.heads;
  j["tokens"] = t.tokens;
  j["batch"] = t.batch;
  j["threads"] = t.threads;
  j["cpu"] = t.cpu;
  j["unit"] = "ms per image; the block sites: one block's";
  nlohmann::ordered_json es = nlohmann::ordered_json::array();
  for (const LatencyEntry& e : t.entries)
    es.push_back({{"bits", e.bits},
                  {"qkv", e.qkv},
                  {"attention", e.attention},
                  {"proj", e.proj},
                  {"fc1", e.fc1},
                  {"fc2", e.fc2},
                  {"rest", e.rest},
                  {"total", e.total(t.depth)}});
  j["widths"] = es;
  return j;
}

LatencyTable latency_table_from_json(const nlohmann::ordered_json& j, const std::string& path) {
  auto bad = [&](const std::string& field, const std::string& why) {
    fail(ErrorKind::Model, path, ": latency table field '", field, "': ", why);
  };
  if (!j.is_object()) fail(ErrorKind::Model, path, ": not a latency table (a JSON object is expected)");
  if (j.value("format", std::string()) != "vitq-latency-table")
    bad("format", "must be \"vitq-latency-table\" (made by vitq bench --latency-table)");
  int version = 0;
  if (!j.contains("version") || !json_int_in(j["version"], 1, 1, &version)) bad("version", "must be 1");
  LatencyTable t;
  if (!j.contains("architecture") || !j["architecture"].is_string()) bad("architecture", "missing or not a string");
  t.architecture = j["architecture"].get<std::string>();
  auto int_field = [&](const char* f, int lo, int hi, int* out) {
    if (!j.contains(f) || !json_int_in(j[f], lo, hi, out)) bad(f, cat("missing or not an integer in [", lo, ", ", hi, "]"));
  };
  int_field("depth", 1, 1 << 12, &t.depth);
  int_field("embed_dim", 1, 1 << 16, &t.embed_dim);
  int_field("mlp_dim", 1, 1 << 18, &t.mlp_dim);
  int_field("heads", 1, 1 << 12, &t.heads);
  int_field("tokens", 1, 1 << 20, &t.tokens);
  int_field("batch", 1, 1 << 16, &t.batch);
  int_field("threads", 1, 1 << 12, &t.threads);
  t.cpu = j.value("cpu", std::string());
  if (!j.contains("widths") || !j["widths"].is_array() || j["widths"].empty()) bad("widths", "missing or empty");
  for (size_t i = 0; i < j["widths"].size(); ++i) {
    const auto& e = j["widths"][i];
    const std::string at = cat("widths[", i, "]");
    if (!e.is_object()) bad(at, "not an object");
    LatencyEntry le;
    if (!e.contains("bits") || !json_int_in(e["bits"], 2, 16, &le.bits)) bad(at + ".bits", "missing or not an integer in [2, 16]");
    for (auto [name, v] : {std::pair{"qkv", &le.qkv}, {"attention", &le.attention}, {"proj", &le.proj},
                           {"fc1", &le.fc1}, {"fc2", &le.fc2}, {"rest", &le.rest}}) {
      if (!e.contains(name) || !e[name].is_number() || !std::isfinite(e[name].get<double>()) || e[name].get<double>() < 0)
        bad(at + "." + name, "missing or not a finite number >= 0 (ms per image)");
      *v = e[name].get<double>();
    }
    for (const LatencyEntry& prev : t.entries)
      if (prev.bits == le.bits) bad(at + ".bits", cat(le.bits, " bits appears twice"));
    t.add(le);
  }
  return t;
}

LatencyTable load_latency_table(const std::string& path) {
  const nlohmann::ordered_json j = read_json_file(path);
  return with_json_errors(path, [&] { return latency_table_from_json(j, path); });
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(line.find_first_not_of(" \t", c + 1));
    }
  return "unknown";
}

}  // namespace vitq
