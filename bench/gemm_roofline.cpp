// vitq_gemm_roofline: how fast oneDNN can do the matmuls of a ViT, shape by shape.
//
// For every matmul site of the model (engine/site.h, model_sites) at batch B it times oneDNN
// on exactly that shape and sums count x time over the network:
//   linear sites    one GEMM, M = B*tokens (heads: M = B), with oneDNN's own threads;
//   attention sites B*heads independent M x N x K products, either spread over the threads
//                   with a single-threaded GEMM inside (what vitq does) or as one batched
//                   dnnl::matmul primitive.
// FP32 (dnnl_sgemm, dnnl::matmul f32) and INT8 (dnnl_gemm_u8s8s32, dnnl::matmul u8 x s8 -> s32).
// The roofline of a precision is the sum over sites of the fastest variant: a lower bound of
// the forward's time if everything but the GEMMs were free. Operands stay in cache between
// repetitions (as they do not in a real forward for the larger weights), so the bound is
// optimistic, as a bound should be. Bias, softmax, LayerNorm, GELU are not included.
#include <dnnl.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/aligned.h"
#include "core/error.h"
#include "engine/site.h"
#include "model/vit_config.h"

namespace {

using vitq::avector;
using vitq::ErrorKind;
using vitq::fail;
using json = nlohmann::ordered_json;
using dt = dnnl::memory::data_type;

// ---------------------------------------------------------------- shapes

const char* kind_name(vitq::SiteKind k) {
  switch (k) {
    case vitq::SiteKind::PatchEmbed: return "patch_embed";
    case vitq::SiteKind::Qkv: return "qkv";
    case vitq::SiteKind::MatmulQK: return "matmul_qk";
    case vitq::SiteKind::MatmulAV: return "matmul_av";
    case vitq::SiteKind::Proj: return "proj";
    case vitq::SiteKind::Fc1: return "fc1";
    case vitq::SiteKind::Fc2: return "fc2";
    case vitq::SiteKind::Head: return "head";
    case vitq::SiteKind::HeadDist: return "head_dist";
  }
  return "?";
}

// One distinct GEMM shape of the forward at batch B and how often it occurs.
struct Shape {
  std::string site;
  bool attention = false;
  int count = 0;   // occurrences per forward (e.g. depth for qkv)
  int groups = 1;  // independent products per occurrence (B*heads for attention)
  int M = 0, N = 0, K = 0;
  double flops_per_call() const { return 2.0 * groups * double(M) * N * K; }
};

std::vector<Shape> batch_shapes(const vitq::ViTConfig& cfg, int batch) {
  std::vector<Shape> out;
  for (const vitq::SiteShape& s : vitq::model_sites(cfg)) {
    Shape sh;
    sh.site = kind_name(s.id.kind);
    sh.attention = s.id.is_attention();
    sh.groups = sh.attention ? s.groups_per_image * batch : 1;
    sh.M = sh.attention ? s.M : s.M * batch;
    sh.N = s.N;
    sh.K = s.K;
    auto same = [&](const Shape& o) {
      return o.site == sh.site && o.groups == sh.groups && o.M == sh.M && o.N == sh.N && o.K == sh.K;
    };
    auto it = std::find_if(out.begin(), out.end(), same);
    if (it == out.end()) {
      sh.count = 1;
      out.push_back(sh);
    } else {
      ++it->count;
    }
  }
  return out;
}

// ---------------------------------------------------------------- timing

struct TimeOpts {
  int warmup = 3;
  int samples = 15;
  double min_sample_ms = 2.0;  // a sample repeats the call until it lasts at least this long
};

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;  // per call
  int samples = 0, calls_per_sample = 0;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Timing time_call(const std::function<void()>& f, const TimeOpts& o) {
  for (int i = 0; i < std::max(1, o.warmup); ++i) f();
  double t0 = now_ms();
  f();
  const double one = std::max(now_ms() - t0, 1e-4);
  const int inner = std::max(1, static_cast<int>(std::ceil(o.min_sample_ms / one)));
  std::vector<double> per_call;
  for (int s = 0; s < std::max(1, o.samples); ++s) {
    t0 = now_ms();
    for (int i = 0; i < inner; ++i) f();
    per_call.push_back((now_ms() - t0) / inner);
  }
  std::sort(per_call.begin(), per_call.end());
  Timing t;
  t.median_ms = per_call[per_call.size() / 2];
  t.min_ms = per_call.front();
  t.max_ms = per_call.back();
  t.samples = static_cast<int>(per_call.size());
  t.calls_per_sample = inner;
  return t;
}

// ---------------------------------------------------------------- operands

// Random operands of one shape, for both precisions. Weights are N x K row-major per group
// (vitq's "NT" layout); the "NN" variants read the same buffer as K x N (values do not matter).
struct Operands {
  avector<float> xf, wf, yf;
  avector<uint8_t> xu;
  avector<int8_t> ws;
  avector<int32_t> yi;

  Operands(const Shape& s, bool int8) {
    const size_t G = size_t(s.groups), M = size_t(s.M), N = size_t(s.N), K = size_t(s.K);
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    xf.resize(G * M * K);
    wf.resize(G * N * K);
    yf.resize(G * M * N);
    for (auto& v : xf) v = nd(rng);
    for (auto& v : wf) v = nd(rng);
    if (int8) {
      std::uniform_int_distribution<int> u8(0, 255), s8(-127, 127);
      xu.resize(G * M * K);
      ws.resize(G * N * K);
      yi.resize(G * M * N);
      for (auto& v : xu) v = static_cast<uint8_t>(u8(rng));
      for (auto& v : ws) v = static_cast<int8_t>(s8(rng));
    }
  }
};

void check_status(dnnl_status_t st, const char* what) {
  if (st != dnnl_success) fail(ErrorKind::Internal, what, " failed (oneDNN status ", int(st), ")");
}

// ---------------------------------------------------------------- variants

struct Variant {
  std::string name;
  std::string impl;  // oneDNN implementation, where it says
  std::function<void()> run;
  std::shared_ptr<void> keep_alive;  // primitives, memories
  bool same_product = true;          // false: reads the weights buffer as K x N (another product, same work)
};

// dnnl_sgemm / dnnl_gemm_u8s8s32, row-major, y = x . w^T. Called outside a parallel region
// oneDNN uses all OpenMP threads; inside one it runs on the calling thread.
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* x, const float* w, float* y) {
  check_status(dnnl_sgemm('N', 'T', M, N, K, 1.0f, x, K, w, K, 0.0f, y, N), "dnnl_sgemm");
}
void gemm_nt(int64_t M, int64_t N, int64_t K, const uint8_t* x, const int8_t* w, int32_t* y) {
  static const int32_t zero = 0;
  check_status(dnnl_gemm_u8s8s32('N', 'T', 'F', M, N, K, 1.0f, x, K, 0, w, K, 0, 0.0f, y, N, &zero),
               "dnnl_gemm_u8s8s32");
}

// vitq's attention scheme: every (group, block of `rb` rows) is one task of an OpenMP loop
// running a single-threaded GEMM. rb >= M means one task per group.
template <class X, class W, class Y>
void grouped_gemm(const Shape& s, const X* x, const W* w, Y* y, int rb) {
  const int row_blocks = (s.M + rb - 1) / rb;
  const int tasks = s.groups * row_blocks;
  const int64_t xs = int64_t(s.M) * s.K, ws = int64_t(s.N) * s.K, ys = int64_t(s.M) * s.N;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tasks; ++t) {
    const int g = t / row_blocks, r0 = (t % row_blocks) * rb;
    const int rows = std::min(rb, s.M - r0);
    gemm_nt(rows, s.N, s.K, x + g * xs + int64_t(r0) * s.K, w + g * ws, y + g * ys + int64_t(r0) * s.N);
  }
}

enum class WLayout { NT, NN, Packed };  // weights as N x K (strided view), K x N, or oneDNN's choice

struct MatmulState {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul prim;
  dnnl::memory src, wei, dst;
};

// A dnnl::matmul on the shape (batched over groups for attention), or nothing if oneDNN has
// only its reference implementation for it (too slow to be a roofline).
std::optional<Variant> make_matmul(const std::string& name, const Shape& s, dt src_t, dt wei_t, dt dst_t,
                                   WLayout layout, void* x, void* w, void* y) {
  using dims = dnnl::memory::dims;
  using tag = dnnl::memory::format_tag;
  const int64_t G = s.groups, M = s.M, N = s.N, K = s.K;
  const bool batched = s.groups > 1;
  const dims sd = batched ? dims{G, M, K} : dims{M, K};
  const dims wd = batched ? dims{G, K, N} : dims{K, N};
  const dims dd = batched ? dims{G, M, N} : dims{M, N};
  const dims nt_strides = batched ? dims{N * K, 1, K} : dims{1, K};
  const tag plain = batched ? tag::abc : tag::ab;

  auto st = std::make_shared<MatmulState>();
  try {
    dnnl::memory::desc src_md(sd, src_t, plain), dst_md(dd, dst_t, plain);
    dnnl::memory::desc user_w_md =
        layout == WLayout::NN ? dnnl::memory::desc(wd, wei_t, plain) : dnnl::memory::desc(wd, wei_t, nt_strides);
    dnnl::memory::desc w_md = layout == WLayout::Packed ? dnnl::memory::desc(wd, wei_t, tag::any) : user_w_md;
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_md, dst_md), st->eng);
    std::string impl = pd.impl_info_str();
    if (impl.find("ref") != std::string::npos) return std::nullopt;
    st->prim = dnnl::matmul(pd);
    st->src = dnnl::memory(src_md, st->eng, x);
    st->dst = dnnl::memory(dst_md, st->eng, y);
    dnnl::memory user_w(user_w_md, st->eng, w);
    if (pd.weights_desc() != user_w_md) {  // pack the constant weights once, outside the timing
      st->wei = dnnl::memory(pd.weights_desc(), st->eng);
      dnnl::reorder(user_w, st->wei).execute(st->strm, user_w, st->wei);
      st->strm.wait();
    } else {
      st->wei = user_w;
    }
    Variant v;
    v.name = name;
    v.impl = impl;
    MatmulState* p = st.get();
    v.run = [p] {
      p->prim.execute(p->strm, {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->wei}, {DNNL_ARG_DST, p->dst}});
      p->strm.wait();
    };
    v.keep_alive = st;
    return v;
  } catch (const dnnl::error& e) {
    std::fprintf(stderr, "note: %s on %s %dx%dx%dx%d unavailable: %s\n", name.c_str(), s.site.c_str(), s.groups, s.M,
                 s.N, s.K, e.what());
    return std::nullopt;
  }
}

std::vector<Variant> fp32_variants(const Shape& s, Operands& o) {
  std::vector<Variant> v;
  float *x = o.xf.data(), *w = o.wf.data(), *y = o.yf.data();
  if (!s.attention) {
    v.push_back({"sgemm", "dnnl_sgemm", [=] { gemm_nt(s.M, s.N, s.K, x, w, y); }, nullptr});
    if (auto m = make_matmul("matmul_packed", s, dt::f32, dt::f32, dt::f32, WLayout::Packed, x, w, y)) v.push_back(*m);
  } else {
    v.push_back({"grouped_sgemm_rb64", "dnnl_sgemm per task", [=] { grouped_gemm(s, x, w, y, 64); }, nullptr});
    v.push_back({"grouped_sgemm_whole", "dnnl_sgemm per task", [=] { grouped_gemm(s, x, w, y, s.M); }, nullptr});
    if (auto m = make_matmul("matmul_nt", s, dt::f32, dt::f32, dt::f32, WLayout::NT, x, w, y)) v.push_back(*m);
    if (auto m = make_matmul("matmul_nn", s, dt::f32, dt::f32, dt::f32, WLayout::NN, x, w, y)) {
      m->same_product = false;
      v.push_back(*m);
    }
  }
  return v;
}

std::vector<Variant> int8_variants(const Shape& s, Operands& o) {
  std::vector<Variant> v;
  uint8_t* x = o.xu.data();
  int8_t* w = o.ws.data();
  int32_t* y = o.yi.data();
  if (!s.attention) {
    v.push_back({"gemm_u8s8s32", "dnnl_gemm_u8s8s32", [=] { gemm_nt(s.M, s.N, s.K, x, w, y); }, nullptr});
    if (auto m = make_matmul("matmul_packed", s, dt::u8, dt::s8, dt::s32, WLayout::Packed, x, w, y)) v.push_back(*m);
  } else {
    v.push_back(
        {"grouped_gemm_u8s8s32_rb64", "dnnl_gemm_u8s8s32 per task", [=] { grouped_gemm(s, x, w, y, 64); }, nullptr});
    v.push_back(
        {"grouped_gemm_u8s8s32_whole", "dnnl_gemm_u8s8s32 per task", [=] { grouped_gemm(s, x, w, y, s.M); }, nullptr});
    if (auto m = make_matmul("matmul_nt", s, dt::u8, dt::s8, dt::s32, WLayout::NT, x, w, y)) v.push_back(*m);
    if (auto m = make_matmul("matmul_nn", s, dt::u8, dt::s8, dt::s32, WLayout::NN, x, w, y)) {
      m->same_product = false;
      v.push_back(*m);
    }
  }
  return v;
}

// ---------------------------------------------------------------- measuring and reporting

struct VariantResult {
  std::string name, impl;
  Timing t;
  double max_rel_err = -1;  // vs the first variant's output; -1 = not comparable (another product)
  bool valid = true;        // false: its output disagreed with the first variant's, never the best
};

struct PrecisionResult {
  std::vector<VariantResult> variants;
  size_t best = 0;
};

// max |y - ref| / max |ref|
template <class Y>
double rel_err(const avector<Y>& y, const std::vector<Y>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num = std::max(num, std::fabs(double(y[i]) - double(ref[i])));
    den = std::max(den, std::fabs(double(ref[i])));
  }
  return den > 0 ? num / den : num;
}

// Times every variant; each one that computes the same product is checked against the first
// variant's output (y), so that a wrong stride or layout cannot pass for a fast GEMM.
template <class Y>
PrecisionResult measure(std::vector<Variant> vs, const TimeOpts& o, const avector<Y>& y, double tol) {
  PrecisionResult r;
  std::vector<Y> ref;
  for (size_t i = 0; i < vs.size(); ++i) {
    VariantResult vr{vs[i].name, vs[i].impl, time_call(vs[i].run, o)};
    if (i == 0) {
      ref.assign(y.begin(), y.end());
      vr.max_rel_err = 0;
    } else if (vs[i].same_product) {
      vr.max_rel_err = rel_err(y, ref);
      vr.valid = vr.max_rel_err <= tol;
      if (!vr.valid)
        std::fprintf(stderr, "warning: %s disagrees with %s (max rel. error %.3g): excluded\n", vr.name.c_str(),
                     vs[0].name.c_str(), vr.max_rel_err);
    }
    r.variants.push_back(vr);
  }
  for (size_t i = 1; i < r.variants.size(); ++i)
    if (r.variants[i].valid && r.variants[i].t.median_ms < r.variants[r.best].t.median_ms) r.best = i;
  return r;
}

struct SiteResult {
  Shape shape;
  PrecisionResult fp32;
  std::optional<PrecisionResult> int8;
};

struct Total {
  double ms_per_batch = 0, flops = 0;
};

void print_table(const char* title, const std::vector<SiteResult>& res, bool int8, const char* unit) {
  std::printf("\n%s\n", title);
  std::printf("%-12s %5s %-22s %-28s %10s %9s  %s\n", "site", "count", "groups x M x N x K", "variant", "ms/call", unit,
              "oneDNN implementation");
  for (const auto& r : res) {
    const PrecisionResult& p = int8 ? *r.int8 : r.fp32;
    const Shape& s = r.shape;
    char dims[64];
    std::snprintf(dims, sizeof dims, "%d x %d x %d x %d", s.groups, s.M, s.N, s.K);
    for (size_t i = 0; i < p.variants.size(); ++i) {
      const VariantResult& v = p.variants[i];
      const double rate = s.flops_per_call() / (v.t.median_ms * 1e6);
      std::printf("%-12s %5s %-22s %c%-27s %10.4f %9.1f  %s\n", i == 0 ? s.site.c_str() : "",
                  i == 0 ? std::to_string(s.count).c_str() : "", i == 0 ? dims : "", i == p.best ? '*' : ' ',
                  v.name.c_str(), v.t.median_ms, rate, v.impl.c_str());
    }
  }
}

json timing_json(const Timing& t) {
  return {{"median_ms", t.median_ms},
          {"min_ms", t.min_ms},
          {"max_ms", t.max_ms},
          {"samples", t.samples},
          {"calls_per_sample", t.calls_per_sample}};
}

json precision_json(const Shape& s, const PrecisionResult& p) {
  json vs = json::array();
  for (const auto& v : p.variants) {
    json j = {{"name", v.name}, {"impl", v.impl}, {"gflops", s.flops_per_call() / (v.t.median_ms * 1e6)}};
    if (v.max_rel_err >= 0) j["max_rel_err_vs_first"] = v.max_rel_err;
    j["valid"] = v.valid;
    j.update(timing_json(v.t));
    vs.push_back(j);
  }
  return {{"best", p.variants[p.best].name}, {"best_ms", p.variants[p.best].t.median_ms}, {"variants", vs}};
}

json total_json(const Total& t, int batch) {
  return {{"ms_per_batch", t.ms_per_batch},
          {"ms_per_image", t.ms_per_batch / batch},
          {"gflop_per_image", t.flops / batch / 1e9},
          {"gflops", t.flops / (t.ms_per_batch * 1e6)}};
}

struct Args {
  std::string model, json_out;
  vitq::ViTConfig dims;
  int batch = 1, threads = 0;
  bool quick = false, no_int8 = false;
  TimeOpts time;
};

int run(const Args& a) {
  if (a.batch < 1) fail(ErrorKind::Usage, "--batch must be >= 1");
  if (a.threads < 0) fail(ErrorKind::Usage, "--threads must be >= 0 (0 = all cores)");
  omp_set_num_threads(a.threads > 0 ? a.threads : omp_get_num_procs());
  const int threads = omp_get_max_threads();
  vitq::ViTConfig cfg = a.model.empty() ? a.dims : vitq::load_vit_config(a.model);
  if (cfg.embed_dim % cfg.num_heads != 0) fail(ErrorKind::Usage, "embed dim must be divisible by heads");
  TimeOpts to = a.time;
  if (a.quick) to = {1, 3, 0.5};

  const dnnl_version_t* ver = dnnl_version();
  std::printf("oneDNN %d.%d.%d, %d threads; model %s (dim %d, depth %d, heads %d, mlp %d, tokens %d), batch %d\n",
              ver->major, ver->minor, ver->patch, threads, a.model.empty() ? "from dims" : a.model.c_str(),
              cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, cfg.tokens(), a.batch);

  std::vector<SiteResult> res;
  for (const Shape& s : batch_shapes(cfg, a.batch)) {
    std::fprintf(stderr, "timing %s (%d x %d x %d x %d)...\n", s.site.c_str(), s.groups, s.M, s.N, s.K);
    Operands ops(s, !a.no_int8);
    SiteResult r{s, measure(fp32_variants(s, ops), to, ops.yf, 1e-4), std::nullopt};
    if (!a.no_int8) r.int8 = measure(int8_variants(s, ops), to, ops.yi, 0.0);
    res.push_back(std::move(r));
  }

  // Totals: the variant vitq uses today, and the best oneDNN variant per shape (the roofline).
  Total f_vitq, f_best, i_api, i_best;
  for (const auto& r : res) {
    const double n = r.shape.count, fl = n * r.shape.flops_per_call();
    auto add = [&](Total& t, double ms) {
      t.ms_per_batch += n * ms;
      t.flops += fl;
    };
    add(f_vitq, r.fp32.variants.front().t.median_ms);  // sgemm / grouped_sgemm_rb64
    add(f_best, r.fp32.variants[r.fp32.best].t.median_ms);
    if (r.int8) {
      add(i_api, r.int8->variants.front().t.median_ms);  // gemm_u8s8s32 / grouped rb64
      add(i_best, r.int8->variants[r.int8->best].t.median_ms);
    }
  }

  print_table("FP32 (ms per call, median; * = fastest)", res, false, "GFLOP/s");
  if (!a.no_int8) print_table("INT8 u8 x s8 -> s32 (ms per call, median; * = fastest)", res, true, "GOP/s");

  std::printf("\n%-44s %12s %12s %10s\n", "per forward", "ms/batch", "ms/image", "GFLOP/s");
  auto line = [&](const char* what, const Total& t) {
    std::printf("%-44s %12.3f %12.3f %10.1f\n", what, t.ms_per_batch, t.ms_per_batch / a.batch,
                t.flops / (t.ms_per_batch * 1e6));
  };
  line("FP32, vitq's scheme (sgemm + grouped rb64)", f_vitq);
  line("FP32 GEMM roofline (best oneDNN per shape)", f_best);
  if (!a.no_int8) {
    line("INT8, gemm_u8s8s32 (+ grouped rb64)", i_api);
    line("INT8 GEMM roofline (best oneDNN per shape)", i_best);
  }
  std::printf("matmul work: %.3f GFLOP per image\n", f_best.flops / a.batch / 1e9);

  if (!a.json_out.empty()) {
    json j;
    j["tool"] = "vitq_gemm_roofline";
    j["onednn"] = vitq::cat(ver->major, ".", ver->minor, ".", ver->patch);
    j["model"] = a.model.empty() ? "dims" : a.model;
    j["config"] = {{"embed_dim", cfg.embed_dim},     {"depth", cfg.depth},         {"num_heads", cfg.num_heads},
                   {"mlp_hidden", cfg.mlp_hidden},   {"img_size", cfg.img_size},   {"patch_size", cfg.patch_size},
                   {"num_classes", cfg.num_classes}, {"distilled", cfg.distilled}, {"tokens", cfg.tokens()}};
    j["batch"] = a.batch;
    j["threads"] = threads;
    j["timing"] = {{"warmup", to.warmup}, {"samples", to.samples}, {"min_sample_ms", to.min_sample_ms}};
    json sites = json::array();
    for (const auto& r : res) {
      const Shape& s = r.shape;
      json js = {{"site", s.site},   {"attention", s.attention},
                 {"count", s.count}, {"groups", s.groups},
                 {"M", s.M},         {"N", s.N},
                 {"K", s.K},         {"flops_per_call", s.flops_per_call()}};
      js["fp32"] = precision_json(s, r.fp32);
      if (r.int8) js["int8"] = precision_json(s, *r.int8);
      sites.push_back(js);
    }
    j["sites"] = sites;
    j["totals"]["fp32"] = {{"vitq_scheme", total_json(f_vitq, a.batch)}, {"best", total_json(f_best, a.batch)}};
    if (!a.no_int8)
      j["totals"]["int8"] = {{"gemm_api", total_json(i_api, a.batch)}, {"best", total_json(i_best, a.batch)}};
    j["roofline_ms_per_image"] = {{"fp32", f_best.ms_per_batch / a.batch}};
    if (!a.no_int8) j["roofline_ms_per_image"]["int8"] = i_best.ms_per_batch / a.batch;
    std::ofstream f(a.json_out);
    f << j.dump(2) << "\n";
    if (!f) fail(ErrorKind::Io, a.json_out, ": write failed");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vitq_gemm_roofline: oneDNN FP32 and INT8 GEMM throughput on every matmul shape of a ViT, summed into\n"
      "a lower bound ('GEMM roofline') of the forward's time per image"};
  Args a;
  vitq::ViTConfig& d = a.dims;
  app.add_option("--model", a.model, "Checkpoint directory (config.json is read); otherwise the dims below");
  app.add_option("--embed-dim", d.embed_dim, "Embedding dim (without --model)")->capture_default_str();
  app.add_option("--depth", d.depth, "Blocks (without --model)")->capture_default_str();
  app.add_option("--heads", d.num_heads, "Attention heads (without --model)")->capture_default_str();
  app.add_option("--mlp-hidden", d.mlp_hidden, "MLP hidden width (without --model)")->capture_default_str();
  app.add_option("--img-size", d.img_size, "Input size (without --model)")->capture_default_str();
  app.add_option("--patch-size", d.patch_size, "Patch size (without --model)")->capture_default_str();
  app.add_option("--classes", d.num_classes, "Classes (without --model)")->capture_default_str();
  app.add_flag("--distilled", d.distilled, "Distillation token and head (without --model)");
  app.add_option("--batch", a.batch, "Images per forward")->capture_default_str();
  app.add_option("--threads", a.threads, "OpenMP threads (0 = all cores)")->capture_default_str();
  app.add_option("--warmup", a.time.warmup, "Untimed calls per variant")->capture_default_str();
  app.add_option("--samples", a.time.samples, "Timed samples per variant (median reported)")->capture_default_str();
  app.add_option("--min-sample-ms", a.time.min_sample_ms, "A sample repeats the call for at least this long")
      ->capture_default_str();
  app.add_flag("--quick", a.quick, "Few samples (smoke test; overrides the three options above)");
  app.add_flag("--no-int8", a.no_int8, "FP32 only");
  app.add_option("--json", a.json_out, "Write all timings and totals as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return run(a);
  } catch (const vitq::Error& e) {
    std::fprintf(stderr, "vitq_gemm_roofline: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vitq_gemm_roofline: error: %s\n", e.what());
    return 1;
  }
}
