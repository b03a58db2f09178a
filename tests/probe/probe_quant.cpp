// Probe subcommands for the quantizer and the similarity measures (compared with numpy), GPTQ
// rounding (compared with a PyTorch GPTQ) and the ridge update (compared with numpy's lstsq).
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "core/error.h"
#include "probe.h"
#include "numerics/level_grid.h"
#include "numerics/quantizer.h"
#include "quant/compensation.h"
#include "quant/gptq.h"
#include "quant/ridge_update.h"
#include "quant/similarity.h"

namespace vitq::probe {
namespace {

struct QArgs {
  std::string input, out;
  int bits = 8;
  float scale = 1.0f;
  bool is_unsigned = false;
};

struct SArgs {
  std::string a, b;
};

struct GArgs {
  std::string w, h, out;
  int n = 0, k = 0, bits = 4, block = 128;
  double damp = 0.01;
  bool act_order = false;
};

// The gptq subcommand: grid fit (weighted by diag H), RTN and GPTQ codes, the output errors.
void register_gptq(CLI::App& app) {
  auto a = std::make_shared<GArgs>();
  CLI::App* c = app.add_subcommand("gptq", "GPTQ and RTN codes of a weight W [n,k] (raw f32) with H [k,k] (raw f64)");
  c->add_option("--w", a->w)->required();
  c->add_option("--h", a->h)->required();
  c->add_option("--n", a->n)->required();
  c->add_option("--k", a->k)->required();
  c->add_option("--bits", a->bits)->required();
  c->add_option("--block", a->block);
  c->add_option("--damp", a->damp);
  c->add_flag("--act-order", a->act_order);
  c->add_option("--out", a->out, "prefix: writes PREFIX.gptq.i16, PREFIX.rtn.i16 (codes), PREFIX.step.f32, "
                                  "PREFIX.offset.f32, PREFIX.ratio.f32 (the grid); prints JSON")
      ->required();
  c->callback([a] {
    const std::vector<float> W = read_raw<float>(a->w);
    const std::vector<double> H = read_raw<double>(a->h);
    const size_t n = size_t(a->n), k = size_t(a->k);
    if (W.size() != n * k || H.size() != k * k) fail(ErrorKind::Usage, "W or H does not have the given shape");
    std::vector<double> hd(k);
    for (size_t i = 0; i < k; ++i) hd[i] = H[i * k + i];
    const ChannelGrid g = fit_channel_grid(W.data(), a->n, a->k, a->bits, hd.data());
    std::vector<int16_t> rtn(W.size()), gq(W.size());
    round_to_grid(W.data(), a->n, a->k, g, rtn.data());
    GptqOptions o;
    o.block = a->block;
    o.damp = a->damp;
    o.act_order = a->act_order;
    GptqInfo info;
    const auto t0 = std::chrono::steady_clock::now();
    gptq_round(W.data(), a->n, a->k, H.data(), g, o, gq.data(), &info);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_raw(a->out + ".gptq.i16", gq.data(), gq.size());
    write_raw(a->out + ".rtn.i16", rtn.data(), rtn.size());
    write_raw(a->out + ".step.f32", g.step.data(), n);
    write_raw(a->out + ".offset.f32", g.offset.data(), n);
    write_raw(a->out + ".ratio.f32", g.ratio.data(), n);
    std::printf("{\"error_gptq\": %.17g, \"error_rtn\": %.17g, \"damp\": %.17g, \"retries\": %d, \"dead\": %d, "
                "\"seconds\": %.6f}\n",
                weighted_output_error(W.data(), gq.data(), g, a->n, a->k, H.data()),
                weighted_output_error(W.data(), rtn.data(), g, a->n, a->k, H.data()), info.damp, info.retries,
                info.dead, seconds);
  });
}

struct RArgs {
  std::string x, y, w, b, out, target = "fp";
  int rows = 0, n = 0, k = 0, bits = 0;
  double damp = 0.01;
};

// The ridge subcommand: ridge_fit on a linear site with input X, FP target Y, weights W, bias b.
void register_ridge(CLI::App& app) {
  auto a = std::make_shared<RArgs>();
  CLI::App* c = app.add_subcommand("ridge", "The ridge update of W [n,k], b [n] from inputs X [rows,k] and targets "
                                            "Y [rows,n] (raw f32), the inputs per-token quantized at --bits (0: not)");
  for (auto [name, dst] : {std::pair{"--x", &a->x}, {"--y", &a->y}, {"--w", &a->w}, {"--b", &a->b}})
    c->add_option(name, *dst)->required();
  c->add_option("--rows", a->rows)->required();
  c->add_option("--n", a->n)->required();
  c->add_option("--k", a->k)->required();
  c->add_option("--bits", a->bits);
  c->add_option("--damp", a->damp);
  c->add_option("--target", a->target, "fp (Y) | local (X·Wᵀ + b)");
  c->add_option("--out", a->out, "prefix: writes PREFIX.w.f32, PREFIX.b.f32; prints JSON")->required();
  c->callback([a] {
    const std::vector<float> X = read_raw<float>(a->x), Y = read_raw<float>(a->y), W = read_raw<float>(a->w),
                             B = read_raw<float>(a->b);
    const size_t rows = size_t(a->rows), n = size_t(a->n), k = size_t(a->k);
    if (X.size() != rows * k || Y.size() != rows * n || W.size() != n * k || B.size() != n)
      fail(ErrorKind::Usage, "X, Y, W or b does not have the given shape");
    SiteObservation obs;
    obs.shape = {{SiteKind::Fc1, 0}, 1, a->rows, a->n, a->k};
    obs.images = 1;
    obs.x = X.data();
    obs.w = W.data();
    obs.bias = B.data();
    obs.target = Y.data();
    OperandQuant q;
    if (a->bits > 0) {
      q.bits = a->bits;
      q.per_token = true;
    }
    const RidgeFit f =
        ridge_fit(obs, q, RidgeOptions{a->damp, a->target == "local" ? RidgeTarget::Local : RidgeTarget::Fp});
    write_raw(a->out + ".w.f32", f.w.data(), f.w.size());
    write_raw(a->out + ".b.f32", f.b.data(), f.b.size());
    std::printf("{\"error_before\": %.17g, \"error_after\": %.17g}\n", f.rel_error_before, f.rel_error_after);
  });
}

struct CArgs {
  std::string x, e, y, out;
  int rows = 0, d = 0;
  double damp = 1e-4;
};

// The qwt subcommand: the block error compensation fitted to inputs X and errors E.
void register_qwt(CLI::App& app) {
  auto a = std::make_shared<CArgs>();
  CLI::App* c = app.add_subcommand("qwt", "QwT compensation W [d,d], b [d] fitted to errors E [rows,d] from inputs "
                                          "X [rows,d]; Y [rows,d] the target outputs (raw f32)");
  for (auto [name, dst] : {std::pair{"--x", &a->x}, {"--e", &a->e}, {"--y", &a->y}}) c->add_option(name, *dst)->required();
  c->add_option("--rows", a->rows)->required();
  c->add_option("--d", a->d)->required();
  c->add_option("--damp", a->damp);
  c->add_option("--out", a->out, "prefix: writes PREFIX.w.f32, PREFIX.b.f32; prints JSON")->required();
  c->callback([a] {
    const std::vector<float> X = read_raw<float>(a->x), E = read_raw<float>(a->e), Y = read_raw<float>(a->y);
    const size_t n = size_t(a->rows) * size_t(a->d);
    if (X.size() != n || E.size() != n || Y.size() != n) fail(ErrorKind::Usage, "X, E or Y does not have the given shape");
    const CompensationFit f = fit_compensation(X.data(), E.data(), Y.data(), a->rows, a->d, a->damp);
    write_raw(a->out + ".w.f32", f.comp.w.data(), f.comp.w.size());
    write_raw(a->out + ".b.f32", f.comp.b.data(), f.comp.b.size());
    std::printf("{\"r2\": %.17g, \"error_before\": %.17g, \"error_after\": %.17g, \"used\": %s}\n", f.r2,
                f.rel_error_before, f.rel_error_after, f.used() ? "true" : "false");
  });
}

}  // namespace

struct LArgs {
  std::string input, grid, out;
  int bits = 8, row = 64;
  float token_clip = 1.0f;
};

void register_quant(CLI::App& app) {
  auto q = std::make_shared<QArgs>();
  CLI::App* c = app.add_subcommand("quantize", "Integer codes (int32) and fake-quantized values (f32) of an input");
  c->add_option("--input", q->input)->required();
  c->add_option("--bits", q->bits)->required();
  c->add_option("--scale", q->scale)->required();
  c->add_flag("--unsigned", q->is_unsigned);
  c->add_option("--out", q->out, "prefix: writes PREFIX.i32 (codes via quantize_one), PREFIX.i16 (quantize_to_i16), "
                                  "PREFIX.f32 (fake_quantize)")
      ->required();
  c->callback([q] {
    std::vector<float> x = read_raw<float>(q->input);
    const QRange r = qrange(q->bits, q->is_unsigned ? Grid::Unsigned : Grid::Signed);
    std::vector<int32_t> codes(x.size());
    for (size_t i = 0; i < x.size(); ++i) codes[i] = quantize_one(x[i], q->scale, r);
    std::vector<int16_t> c16(x.size());
    quantize_to_i16(x.data(), c16.data(), x.size(), q->scale, r);
    std::vector<float> fq(x.size());
    fake_quantize(x.data(), fq.data(), x.size(), q->scale, r);
    write_raw(q->out + ".i32", codes.data(), codes.size());
    write_raw(q->out + ".i16", c16.data(), c16.size());
    write_raw(q->out + ".f32", fq.data(), fq.size());
  });

  auto s = std::make_shared<SArgs>();
  CLI::App* sc = app.add_subcommand("similarity", "Pearson, cosine and MSE of two f32 vectors (prints JSON)");
  sc->add_option("--a", s->a)->required();
  sc->add_option("--b", s->b)->required();
  sc->callback([s] {
    std::vector<float> a = read_raw<float>(s->a), b = read_raw<float>(s->b);
    if (a.size() != b.size()) fail(ErrorKind::Usage, "sizes differ");
    PairStats st = pair_stats(a.data(), b.data(), a.size());
    std::printf("{\"pearson\": %.17g, \"cosine\": %.17g, \"mse\": %.17g, \"pearson_ref\": %.17g, \"cosine_ref\": %.17g}\n",
                st.pearson(), st.cosine(), st.mse(), pearson(a.data(), b.data(), a.size()),
                cosine_similarity(a.data(), b.data(), a.size()));
  });

  auto l = std::make_shared<LArgs>();
  CLI::App* lc = app.add_subcommand("levels", "A level grid's table and the levels of an input (i32), and per-token codes");
  lc->add_option("--input", l->input)->required();
  lc->add_option("--grid", l->grid, "log2 | logsqrt2 | float")->required();
  lc->add_option("--bits", l->bits)->required();
  lc->add_option("--row", l->row, "row length for the per-token codes (PREFIX.tok.i32 codes, PREFIX.tok.f32 steps)")
      ->required();
  lc->add_option("--token-clip", l->token_clip, "the per-token codes' clip ratio of the row range");
  lc->add_option("--out", l->out, "prefix: PREFIX.table.i32 (levels), PREFIX.i32 (the input's levels)")->required();
  lc->callback([l] {
    std::vector<float> x = read_raw<float>(l->input);
    const LevelGrid& g = LevelGrid::get(l->grid == "log2" ? Grid::Log2 : l->grid == "logsqrt2" ? Grid::LogSqrt2 : Grid::Float, l->bits);
    std::vector<int32_t> lv(x.size());
    std::vector<float> f(x.size());
    quantize_levels_f32(x.data(), f.data(), x.size(), g);
    for (size_t i = 0; i < x.size(); ++i) lv[i] = int32_t(f[i]);
    write_raw(l->out + ".table.i32", g.levels().data(), g.levels().size());
    write_raw(l->out + ".i32", lv.data(), lv.size());
    // Per-token codes of the input as rows of --row values (at --bits, when <= 8).
    const size_t n = size_t(l->row), rows = x.size() / n;
    std::vector<int32_t> codes(rows * n);
    std::vector<float> steps(rows);
    for (size_t r = 0; r < rows; ++r) {
      const TokenQuant t = token_quant(x.data() + r * n, n, std::min(l->bits, 8), l->token_clip);
      steps[r] = t.delta;
      for (size_t k = 0; k < n; ++k) codes[r * n + k] = quantize_one(x[r * n + k], t.delta, t.range(std::min(l->bits, 8)));
    }
    write_raw(l->out + ".tok.i32", codes.data(), codes.size());
    write_raw(l->out + ".tok.f32", steps.data(), steps.size());
  });

  register_gptq(app);
  register_ridge(app);
  register_qwt(app);
}

}  // namespace vitq::probe
