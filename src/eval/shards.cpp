#include "eval/shards.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "io/json_file.h"

namespace vitq {

Shard parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  auto number = [&](const std::string& s, long long* out) {
    if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    *out = std::atoll(s.c_str());
    return true;
  };
  long long k = 0, n = 0;
  if (slash == std::string::npos || !number(text.substr(0, slash), &k) || !number(text.substr(slash + 1), &n) ||
      n < 1 || n > kMaxShards || k < 1 || k > n)
    fail(ErrorKind::Usage, "--shard '", text, "': expected K/N with 1 <= K <= N <= ", kMaxShards,
         " (e.g. 2/4: the second of four slices of the images)");
  return {static_cast<int>(k), static_cast<int>(n)};
}

std::vector<size_t> shard_slice(const std::vector<size_t>& selected, Shard s) {
  if (!s.sharded()) return selected;
  if (s.index < 1 || s.index > s.count) fail(ErrorKind::Internal, "shard_slice: shard ", s.index, "/", s.count);
  const size_t n = selected.size(), N = size_t(s.count), K = size_t(s.index);
  // (K - 1)·n / N without overflow for any n < 2^64 / 2^20.
  const size_t begin = (K - 1) * n / N, end = K * n / N;
  return std::vector<size_t>(selected.begin() + std::ptrdiff_t(begin), selected.begin() + std::ptrdiff_t(end));
}

namespace {

using Json = nlohmann::ordered_json;

// One shard's result file, its fields checked as they are read.
struct ShardFile {
  std::string path;
  Json j;

  const Json& field(const char* name) const {
    if (!j.contains(name)) fail(ErrorKind::Model, path, ": field '", name, "' is missing (not a vitq eval --json result?)");
    return j[name];
  }
  size_t count(const char* name) const {
    size_t v = 0;
    if (!json_int_in(field(name), 0, (1LL << 53), &v))
      fail(ErrorKind::Model, path, ": field '", name, "' must be a non-negative integer");
    return v;
  }
  double number(const Json& v, const char* name) const {
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      fail(ErrorKind::Model, path, ": field '", name, "' must be a finite number");
    return v.get<double>();
  }
};

// The shard files, in shard order 1..N (each number exactly once).
std::vector<const ShardFile*> in_shard_order(const std::vector<ShardFile>& files) {
  const ShardFile& first = files.front();
  int N = 0;
  std::vector<const ShardFile*> by_index;
  for (const ShardFile& f : files) {
    const Json& s = f.j["shard"];
    int k = 0, n = 0;
    if (!s.is_object() || !s.contains("index") || !s.contains("count") || !json_int_in(s["index"], 1, kMaxShards, &k) ||
        !json_int_in(s["count"], 1, kMaxShards, &n) || k > n)
      fail(ErrorKind::Model, f.path, ": field 'shard' must be {\"index\": K, \"count\": N} with 1 <= K <= N");
    if (N == 0) {
      N = n;
      by_index.assign(size_t(N) + 1, nullptr);
    } else if (n != N) {
      fail(ErrorKind::Usage, f.path, ": shard ", k, " of ", n, ", but ", first.path, " is a shard of ", N);
    }
    if (by_index[size_t(k)])
      fail(ErrorKind::Usage, f.path, ": shard ", k, "/", N, " is also given as ", by_index[size_t(k)]->path);
    by_index[size_t(k)] = &f;
  }
  for (int k = 1; k <= N; ++k)
    if (!by_index[size_t(k)]) fail(ErrorKind::Usage, "--merge: shard ", k, "/", N, " is missing (", files.size(), " of ", N, " given)");
  by_index.erase(by_index.begin());
  return by_index;
}

// The run the shards come from: these fields must be the same in all of them.
void check_same_run(const std::vector<ShardFile>& files) {
  const ShardFile& first = files.front();
  for (const char* name : {"model", "architecture", "plan", "engine", "data", "dataset", "limit", "seed"})
    for (const ShardFile& f : files)
      if (f.field(name) != first.field(name))
        fail(ErrorKind::Usage, f.path, ": field '", name, "' is ", f.j[name].dump(), " but ", first.path, " has ",
             first.j[name].dump(), " (shards of different runs)");
  const bool has_ref = first.j.contains("reference");
  for (const ShardFile& f : files) {
    if (f.j.contains("reference") != has_ref)
      fail(ErrorKind::Usage, f.path, has_ref ? " has no 'reference'" : " has a 'reference'", " but ", first.path,
           has_ref ? " has one" : " has none", " (run every shard with the same --reference)");
    if (has_ref && f.j["reference"].value("model", Json()) != first.j["reference"].value("model", Json()))
      fail(ErrorKind::Usage, f.path, ": field 'reference.model' differs from ", first.path, "'s");
    if (f.j["shard"].value("selected", Json()) != first.j["shard"].value("selected", Json()))
      fail(ErrorKind::Usage, f.path, ": field 'shard.selected' (images before sharding) differs from ", first.path,
           "'s (a different dataset or --limit)");
  }
}

// The counts and per-image lists of the shards, summed and joined in shard order.
struct Totals {
  size_t images = 0, top1 = 0, top5 = 0, non_finite = 0, agree = 0;
  double seconds = 0, forward_seconds = 0, kl_sum = 0;
  Json evaluated = Json::array(), predictions = Json::array(), skipped = Json::array();

  void add(const ShardFile& f, bool has_ref) {
    const size_t n = f.count("images");
    images += n;
    top1 += f.count("top1_correct");
    top5 += f.count("top5_correct");
    non_finite += f.count("non_finite");
    seconds += f.number(f.field("seconds"), "seconds");
    forward_seconds += f.number(f.field("forward_seconds"), "forward_seconds");
    const Json &ev = f.field("evaluated"), &pr = f.field("predictions"), &sk = f.field("skipped");
    if (!ev.is_array() || !pr.is_array() || ev.size() != n || pr.size() != n)
      fail(ErrorKind::Model, f.path, ": fields 'evaluated' and 'predictions' must be arrays of 'images' (", n,
           ") entries");
    if (!sk.is_array()) fail(ErrorKind::Model, f.path, ": field 'skipped' must be an array");
    for (const Json& v : ev) evaluated.push_back(v);
    for (const Json& v : pr) predictions.push_back(v);
    for (const Json& v : sk) skipped.push_back(v);
    if (!has_ref) return;
    const Json& r = f.j["reference"];
    size_t a = 0;
    if (!r.is_object() || !r.contains("agreement_count") || !json_int_in(r["agreement_count"], 0, (1LL << 53), &a) ||
        a > n || !r.contains("kl_sum"))
      fail(ErrorKind::Model, f.path, ": field 'reference' must hold 'agreement_count' (<= images) and 'kl_sum'");
    agree += a;
    kl_sum += f.number(r["kl_sum"], "reference.kl_sum");
  }
};

}  // namespace

Json merge_eval_shards(const std::vector<std::string>& paths) {
  if (paths.empty()) fail(ErrorKind::Usage, "--merge: no shard results given");
  std::vector<ShardFile> files;
  for (const std::string& p : paths) {
    ShardFile f{p, read_json_file(p, ErrorKind::Model)};
    if (!f.j.is_object()) fail(ErrorKind::Model, p, ": not a vitq eval --json result (a JSON object)");
    if (!f.j.contains("shard"))
      fail(ErrorKind::Usage, p, ": not a shard result (it has no 'shard' field: it was not run with --shard K/N)");
    files.push_back(std::move(f));
  }
  const std::vector<const ShardFile*> shards = in_shard_order(files);
  check_same_run(files);
  const ShardFile& first = files.front();
  const bool has_ref = first.j.contains("reference");
  Totals t;
  for (const ShardFile* f : shards) t.add(*f, has_ref);
  if (t.images == 0) fail(ErrorKind::Data, "--merge: the shards evaluated no image");

  Json out;
  for (const char* name : {"model", "architecture", "plan", "engine", "data", "dataset"}) out[name] = first.j[name];
  out["images"] = t.images;
  out["top1"] = 100.0 * double(t.top1) / double(t.images);
  out["top5"] = 100.0 * double(t.top5) / double(t.images);
  out["top1_correct"] = t.top1;
  out["top5_correct"] = t.top5;
  out["skipped"] = t.skipped;
  out["non_finite"] = t.non_finite;
  out["limit"] = first.j["limit"];
  out["seed"] = first.j["seed"];
  out["merged_shards"] = shards.size();
  Json part_files = Json::array();
  for (const ShardFile* f : shards) part_files.push_back(f->path);
  out["shard_files"] = part_files;
  out["seconds"] = t.seconds;
  out["forward_seconds"] = t.forward_seconds;
  if (has_ref)
    out["reference"] = {{"model", first.j["reference"]["model"]},
                        {"agreement", 100.0 * double(t.agree) / double(t.images)},
                        {"agreement_count", t.agree},
                        {"kl_mean", t.kl_sum / double(t.images)},
                        {"kl_sum", t.kl_sum}};
  out["evaluated"] = t.evaluated;
  out["predictions"] = t.predictions;
  return out;
}

}  // namespace vitq
