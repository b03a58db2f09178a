// Probe subcommands for the quantizer and the similarity measures (compared with numpy).
#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include "core/error.h"
#include "probe.h"
#include "numerics/quantizer.h"
#include "quant/similarity.h"

namespace vitq::probe {
namespace {

std::vector<float> read_all_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(ErrorKind::Io, path, ": cannot open");
  const size_t bytes = size_t(f.tellg());
  std::vector<float> v(bytes / sizeof(float));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  return v;
}

struct QArgs {
  std::string input, out;
  int bits = 8;
  float scale = 1.0f;
  bool is_unsigned = false;
};

struct SArgs {
  std::string a, b;
};

}  // namespace

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
    std::vector<float> x = read_all_f32(q->input);
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
    std::vector<float> a = read_all_f32(s->a), b = read_all_f32(s->b);
    if (a.size() != b.size()) fail(ErrorKind::Usage, "sizes differ");
    PairStats st = pair_stats(a.data(), b.data(), a.size());
    std::printf("{\"pearson\": %.17g, \"cosine\": %.17g, \"mse\": %.17g, \"pearson_ref\": %.17g, \"cosine_ref\": %.17g}\n",
                st.pearson(), st.cosine(), st.mse(), pearson(a.data(), b.data(), a.size()),
                cosine_similarity(a.data(), b.data(), a.size()));
  });
}

}  // namespace vitq::probe
