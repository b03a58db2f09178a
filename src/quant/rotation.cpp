#include "quant/rotation.h"

#include <cmath>
#include <functional>

#include "core/error.h"
#include "numerics/hadamard.h"

namespace vitq {
namespace {

// A tensor as a rows × cols matrix in double; each layer is rotated in one such copy and rounded
// to float once (store).
struct DMat {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  double* row(int64_t r) { return v.data() + r * cols; }
};

DMat to_double(const Tensor& t, int64_t rows) {
  DMat m{rows, rows ? t.numel() / rows : 0, std::vector<double>(t.data.begin(), t.data.end())};
  return m;
}

void store(const DMat& m, Tensor& t) {
  for (size_t i = 0; i < m.v.size(); ++i) t.data[i] = static_cast<float>(m.v[i]);
}

// x[r] ← x[r]·A for `rows` contiguous rows of A's order.
using RowOp = std::function<void(double* x, int64_t rows)>;

// W[:, c0 : c0 + n] ← W[:, c0 : c0 + n]·A (A of order n).
void right_multiply(DMat& w, int64_t c0, int64_t n, const RowOp& a) {
  std::vector<double> buf(size_t(w.rows * n));
  for (int64_t r = 0; r < w.rows; ++r) std::copy(w.row(r) + c0, w.row(r) + c0 + n, buf.data() + r * n);
  a(buf.data(), w.rows);
  for (int64_t r = 0; r < w.rows; ++r) std::copy(buf.data() + r * n, buf.data() + (r + 1) * n, w.row(r) + c0);
}

// W[r0 : r0 + n, :] ← Aᵀ·W[r0 : r0 + n, :]: each column of the slice, as a row vector, times A.
void left_multiply_t(DMat& w, int64_t r0, int64_t n, const RowOp& a) {
  std::vector<double> buf(size_t(w.cols * n));  // the slice transposed: cols × n
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w.cols; ++c) buf[size_t(c * n + i)] = w.row(r0 + i)[c];
  a(buf.data(), w.cols);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w.cols; ++c) w.row(r0 + i)[c] = buf[size_t(c * n + i)];
}

std::vector<double> to_double(const std::vector<float>& s) { return {s.begin(), s.end()}; }

// x ← (x·H_n)∘s·scale: a randomized Hadamard rotation (R for the heads, M for the MLP) when
// scale = 1/√n.
RowOp randomized_hadamard(int n, std::vector<double> s) {
  return [n, s = std::move(s)](double* x, int64_t rows) {
    const double scale = 1.0 / std::sqrt(double(n));
    hadamard_rows(x, rows, n);
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) x[r * n + j] *= s[size_t(j)] * scale;
  };
}

// The residual stream's transforms, D = embed_dim.
struct Residual {
  int D = 0;
  std::vector<double> s;  // Q's signs, s_0 = +1

  // x ← x·Q = ((x·H)∘s)·Hᵀ / D.
  void rotate(double* x, int64_t rows) const {
    hadamard_rows(x, rows, D);
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < D; ++j) x[r * D + j] *= s[size_t(j)] / D;
    hadamard_rows(x, rows, D, /*transposed=*/true);
  }
  // x ← x·C·Q: what a writer's output becomes (centred, then rotated).
  void centre_rotate(double* x, int64_t rows) const {
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0;
      for (int j = 0; j < D; ++j) mean += x[r * D + j];
      mean /= D;
      for (int j = 0; j < D; ++j) x[r * D + j] -= mean;
    }
    rotate(x, rows);
  }
  RowOp writer() const { return [this](double* x, int64_t rows) { centre_rotate(x, rows); }; }
  RowOp reader() const { return [this](double* x, int64_t rows) { rotate(x, rows); }; }
};

// Rows of length D (tokens, pos_embed, a writer's bias): t ← t·C·Q.
void rotate_stream_rows(Tensor& t, const Residual& q) {
  DMat m = to_double(t, t.numel() / q.D);
  q.centre_rotate(m.v.data(), m.rows);
  store(m, t);
}

// Applies `edit` to the layer's weight in double and rounds it back to float once.
void edit_weight(LinearWeights& lw, const std::function<void(DMat&)>& edit) {
  DMat w = to_double(lw.w, lw.out());
  edit(w);
  store(w, lw.w);
}

// A writer y = u·Wᵀ + b of the stream, output side: W ← Q·C·W (= (C·Q)ᵀ·W); its bias b ← b·C·Q
// (rotate_stream_rows).
void writer_weight(DMat& w, const Residual& q) { left_multiply_t(w, 0, q.D, q.writer()); }

// A reader of LayerNorm `ln`, input side: W ← W·diag(γ)·Q (after fold_beta).
void reader_weight(DMat& w, const LayerNormWeights& ln, const Residual& q) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int j = 0; j < q.D; ++j) w.row(r)[j] *= ln.gamma.data[size_t(j)];
  right_multiply(w, 0, q.D, q.reader());
}

// b ← b + W·β with the reader's original W (the bias is created if absent).
void fold_beta(LinearWeights& lw, const LayerNormWeights& ln) {
  if (lw.b.empty()) lw.b = Tensor({lw.w.dim(0)});
  const int64_t K = lw.in();
  for (int64_t r = 0; r < lw.out(); ++r) {
    double acc = lw.b.data[size_t(r)];
    for (int64_t j = 0; j < K; ++j) acc += double(lw.w.data[size_t(r * K + j)]) * ln.beta.data[size_t(j)];
    lw.b.data[size_t(r)] = static_cast<float>(acc);
  }
}

void reset_layernorm(LayerNormWeights& ln) {
  std::fill(ln.gamma.data.begin(), ln.gamma.data.end(), 1.0f);
  std::fill(ln.beta.data.begin(), ln.beta.data.end(), 0.0f);
}

// The heads of one block: per head h, rows q_h, k_h of qkv ← Rᵀ·(rows), v_h ← R₂ᵀ·(rows), their
// biases ← b·R (b·R₂), and attn.proj's columns of head h ← W[:, h]·R₂.
struct Heads {
  int D, H, d;
  RowOp r, r2;

  void qkv_weight(DMat& w) const {
    for (int h = 0; h < H; ++h) {
      left_multiply_t(w, int64_t(h) * d, d, r);           // q
      left_multiply_t(w, int64_t(D + h * d), d, r);       // k
      left_multiply_t(w, int64_t(2 * D + h * d), d, r2);  // v
    }
  }
  void qkv_bias(Tensor& b) const {
    if (b.empty()) return;  // no bias, nothing to rotate
    DMat m = to_double(b, 3 * H);  // rows: q heads, k heads, v heads, each of length d
    for (int row = 0; row < 3 * H; ++row) (row < 2 * H ? r : r2)(m.row(row), 1);
    store(m, b);
  }
  void proj_weight(DMat& w) const {
    for (int h = 0; h < H; ++h) right_multiply(w, int64_t(h) * d, d, r2);
  }
};

void check_order(int n, const char* what, const char* part) {
  if (!hadamard_supported(n))
    fail(ErrorKind::Usage, "rotation (", part, "): ", what, " = ", n,
         " has no Hadamard matrix of that order (supported: 2^k and 12·2^k, e.g. 64, 192, 384, 768, 3072)");
}

void check_spec(const ViTModel& m, const RotationSpec& spec) {
  const ViTConfig& c = m.cfg;
  if (spec.residual) check_order(c.embed_dim, "embed_dim", "residual stream");
  if (spec.heads) check_order(c.head_dim(), "head_dim", "attention heads");
  if (spec.mlp) check_order(c.mlp_hidden, "mlp_hidden", "MLP");
  if (spec.mlp && !m.mlp_rotation_signs.empty())
    fail(ErrorKind::Usage, "rotation (MLP): the model already has an online MLP rotation; it cannot take two");
}

// The rotations of one model, layer by layer; each layer's weight is edited in one double copy.
class Rotator {
 public:
  Rotator(const ViTConfig& c, const RotationSpec& spec)
      : spec_(spec), D_(c.embed_dim), F_(c.mlp_hidden), H_(c.num_heads), d_(c.head_dim()),
        q_{D_, to_double(rotation_signs(RotationKind::Residual, D_, spec.seed))} {
    if (spec.mlp) {
      mlp_signs = rotation_signs(RotationKind::Mlp, F_, spec.seed);
      mlp_ = randomized_hadamard(F_, to_double(mlp_signs));
    }
  }
  std::vector<float> mlp_signs;  // M's signs, empty without the MLP rotation

  // Patch embedding, tokens and position embedding write the stream.
  void embedding(ViTModel& m) const {
    if (!spec_.residual) return;
    edit_weight(m.patch_embed, [&](DMat& w) { writer_weight(w, q_); });
    for (Tensor* t : {&m.patch_embed.b, &m.cls_token, &m.pos_embed}) rotate_stream_rows(*t, q_);
    if (m.cfg.distilled) rotate_stream_rows(m.dist_token, q_);
  }

  void block(BlockWeights& b, int index) const {
    attention(b, index);
    mlp(b);
    if (!spec_.residual) return;
    reset_layernorm(b.norm1);
    reset_layernorm(b.norm2);
  }

  // head (and head_dist) read the final LayerNorm.
  void classifier(ViTModel& m) const {
    if (!spec_.residual) return;
    for (LinearWeights* lw : {&m.head, &m.head_dist}) {
      if (lw->w.empty()) continue;  // no head_dist
      fold_beta(*lw, m.norm);
      edit_weight(*lw, [&](DMat& w) { reader_weight(w, m.norm, q_); });
    }
    reset_layernorm(m.norm);
  }

 private:
  // qkv reads norm1 (input side) and holds the heads' Q, K, V (output side); proj writes the
  // stream (output side) and reads the heads' outputs (input side).
  void attention(BlockWeights& b, int index) const {
    const Heads heads{D_, H_, d_, head_rotation(RotationKind::QueryKey, index),
                      head_rotation(RotationKind::Value, index)};
    if (spec_.residual) fold_beta(b.qkv, b.norm1);
    edit_weight(b.qkv, [&](DMat& w) {
      if (spec_.residual) reader_weight(w, b.norm1, q_);
      if (spec_.heads) heads.qkv_weight(w);
    });
    if (spec_.heads) heads.qkv_bias(b.qkv.b);
    edit_weight(b.proj, [&](DMat& w) {
      if (spec_.residual) writer_weight(w, q_);
      if (spec_.heads) heads.proj_weight(w);
    });
    if (spec_.residual) rotate_stream_rows(b.proj.b, q_);
  }

  // fc1 reads norm2; fc2 writes the stream (output side) and reads h·M (input side: W ← W·M).
  void mlp(BlockWeights& b) const {
    if (spec_.residual) {
      fold_beta(b.fc1, b.norm2);
      edit_weight(b.fc1, [&](DMat& w) { reader_weight(w, b.norm2, q_); });
    }
    edit_weight(b.fc2, [&](DMat& w) {
      if (spec_.residual) writer_weight(w, q_);
      if (spec_.mlp) right_multiply(w, 0, F_, mlp_);
    });
    if (spec_.residual) rotate_stream_rows(b.fc2.b, q_);
  }

  RowOp head_rotation(RotationKind kind, int block) const {
    return randomized_hadamard(d_, to_double(rotation_signs(kind, d_, spec_.seed, block)));
  }

  RotationSpec spec_;
  int D_, F_, H_, d_;
  Residual q_;
  RowOp mlp_;
};

}  // namespace

std::vector<float> rotation_signs(RotationKind kind, int n, uint64_t seed, int block) {
  std::vector<float> s = random_signs(n, seed, rotation_stream(kind, block));
  if (kind == RotationKind::Residual && n > 0) s[0] = 1.0f;  // Q·1 = 1 needs s_0 = +1
  return s;
}

std::vector<double> residual_rotation_matrix(int D, uint64_t seed) {
  check_order(D, "embed_dim", "residual stream");
  const Residual q{D, to_double(rotation_signs(RotationKind::Residual, D, seed))};
  std::vector<double> m(size_t(D) * size_t(D), 0.0);  // identity, rotated row by row: I·Q = Q
  for (int i = 0; i < D; ++i) m[size_t(i) * size_t(D) + size_t(i)] = 1.0;
  q.rotate(m.data(), D);
  return m;
}

ViTModel rotate_model(const ViTModel& model, const RotationSpec& spec) {
  check_spec(model, spec);
  ViTModel m = model;
  const Rotator rot(m.cfg, spec);
  rot.embedding(m);
  for (int i = 0; i < m.cfg.depth; ++i) rot.block(m.blocks[size_t(i)], i);
  rot.classifier(m);
  if (spec.residual) m.cfg.qkv_bias = true;  // the folded β made a qkv bias
  if (spec.mlp) m.mlp_rotation_signs = rot.mlp_signs;
  return m;
}

}  // namespace vitq
