// Probe subcommands for the rotations (quant/rotation.h): the rotated model's logits and state
// dict, and the Hadamard matrices (numerics/hadamard.h), for tests/parity/test_rotation.py.
#include <memory>
#include <vector>

#include "core/error.h"
#include "engine/vit_forward.h"
#include "io/safetensors.h"
#include "numerics/hadamard.h"
#include "probe.h"
#include "quant/rotation.h"

namespace vitq::probe {
namespace {

TensorBlob blob(const std::string& name, const Tensor& t, Shape shape) {
  TensorBlob b = make_f32_blob(name, t);
  b.shape = std::move(shape);
  return b;
}

// The model under timm names and shapes; an MLP rotation as the extra tensor
// "mlp_rotation_signs" [mlp_hidden] (not a timm tensor: the test takes it out).
std::vector<TensorBlob> timm_state_dict(const ViTModel& m) {
  const ViTConfig& c = m.cfg;
  const int64_t D = c.embed_dim, P = c.patch_size;
  std::vector<TensorBlob> v;
  auto linear = [&](const std::string& p, const LinearWeights& lw) {
    v.push_back(make_f32_blob(p + ".weight", lw.w));
    if (!lw.b.empty()) v.push_back(make_f32_blob(p + ".bias", lw.b));
  };
  auto norm = [&](const std::string& p, const LayerNormWeights& ln) {
    v.push_back(make_f32_blob(p + ".weight", ln.gamma));
    v.push_back(make_f32_blob(p + ".bias", ln.beta));
  };
  v.push_back(blob("patch_embed.proj.weight", m.patch_embed.w, {D, c.in_chans, P, P}));
  v.push_back(make_f32_blob("patch_embed.proj.bias", m.patch_embed.b));
  v.push_back(blob("cls_token", m.cls_token, {1, 1, D}));
  if (c.distilled) v.push_back(blob("dist_token", m.dist_token, {1, 1, D}));
  v.push_back(blob("pos_embed", m.pos_embed, {1, c.tokens(), D}));
  for (int i = 0; i < c.depth; ++i) {
    const std::string p = cat("blocks.", i, ".");
    const BlockWeights& b = m.blocks[size_t(i)];
    norm(p + "norm1", b.norm1);
    linear(p + "attn.qkv", b.qkv);
    linear(p + "attn.proj", b.proj);
    norm(p + "norm2", b.norm2);
    linear(p + "mlp.fc1", b.fc1);
    linear(p + "mlp.fc2", b.fc2);
  }
  norm("norm", m.norm);
  linear("head", m.head);
  if (c.distilled) linear("head_dist", m.head_dist);
  if (!m.mlp_rotation_signs.empty()) {
    Tensor s({int64_t(m.mlp_rotation_signs.size())});
    std::copy(m.mlp_rotation_signs.begin(), m.mlp_rotation_signs.end(), s.data.begin());
    v.push_back(make_f32_blob("mlp_rotation_signs", s));
  }
  return v;
}

struct RotateArgs {
  std::string model, input, out, state_dict;
  int batch = 1;
  RotationSpec spec;
  bool no_residual = false, no_heads = false;
};

void run_rotate(RotateArgs a) {
  a.spec.residual = !a.no_residual;
  a.spec.heads = !a.no_heads;
  const ViTModel m = rotate_model(load_vit_model(a.model), a.spec);
  const ViTConfig& c = m.cfg;
  const size_t img = size_t(c.in_chans) * c.img_size * c.img_size;
  const std::vector<float> x = read_f32(a.input, img * size_t(a.batch));
  const avector<float> xa(x.begin(), x.end());
  std::vector<float> logits(size_t(a.batch) * size_t(c.num_classes));
  ViTForward(m).run(xa.data(), a.batch, logits.data());
  write_raw(a.out, logits.data(), logits.size());
  if (!a.state_dict.empty()) write_safetensors(a.state_dict, timm_state_dict(m));
}

struct HadamardArgs {
  int n = 0;
  std::string out, fast_out;
};

// H_n as int8, and optionally the fast transform of the identity's rows (= H_n, as float).
void run_hadamard(const HadamardArgs& a) {
  const std::vector<int8_t> h = hadamard_matrix_i8(a.n);
  write_raw(a.out, h.data(), h.size());
  if (a.fast_out.empty()) return;
  std::vector<float> eye(h.size(), 0.0f);
  for (int i = 0; i < a.n; ++i) eye[size_t(i) * size_t(a.n) + size_t(i)] = 1.0f;
  hadamard_rows(eye.data(), a.n, a.n);
  write_raw(a.fast_out, eye.data(), eye.size());
}

}  // namespace

void register_rotate(CLI::App& app) {
  auto a = std::make_shared<RotateArgs>();
  CLI::App* c = app.add_subcommand("rotate", "Logits (and state dict) of the rotated model for a raw float32 NCHW input");
  c->add_option("--model", a->model)->required();
  c->add_option("--input", a->input, "raw float32, batch x C x H x W")->required();
  c->add_option("--batch", a->batch)->required();
  c->add_option("--out", a->out, "the rotated model's logits, raw float32")->required();
  c->add_option("--seed", a->spec.seed);
  c->add_flag("--no-residual", a->no_residual, "no residual-stream rotation (nor centring, nor LayerNorm folding)");
  c->add_flag("--no-heads", a->no_heads, "no per-head rotations");
  c->add_flag("--mlp", a->spec.mlp, "online Hadamard rotation of fc2's input");
  c->add_option("--state-dict", a->state_dict, "write the rotated weights (timm names) to this safetensors file");
  c->callback([a] { run_rotate(*a); });

  auto h = std::make_shared<HadamardArgs>();
  CLI::App* hc = app.add_subcommand("hadamard", "H_n as raw int8 (n x n, row-major)");
  hc->add_option("--n", h->n)->required();
  hc->add_option("--out", h->out)->required();
  hc->add_option("--fast-out", h->fast_out, "hadamard_rows applied to the identity, raw float32");
  hc->callback([h] { run_hadamard(*h); });
}

}  // namespace vitq::probe
