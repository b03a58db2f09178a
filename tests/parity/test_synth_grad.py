"""`vitq synth`'s image gradients (src/synth/vit_input_grad.h, src/synth/layer_stats.h) against
torch.autograd.

The probe (synth_grad) runs the FP32 forward of a model on a few images and returns the logits,
every block's LayerNorm 1 and 2 inputs, and the gradient with respect to the images of
  linear: Σ logits·R + Σ_l Σ layer_l·R_l for random R (the backward of every layer alone), and
  stats:  Σ_i CE(logits_i, class_i) + Σ_i (1/L) Σ_l 1/(D·scale_l) Σ_j [(μ_lj − m_lj)² + (σ_lj − s_lj)²],
          μ, σ = √(var + 1e-6) over image i's tokens, scale_l = mean_j s_lj² (the synthesis loss
          with one exact centre and no jitter).
Here the same losses are written in torch on tests/parity/ref_vit.py's forward and autograd gives
the reference. Models: the bundled Fashion-MNIST ViT (1 channel), a random DeiT-Ti (distilled:
two heads averaged, 224 px, 1000 classes) and, if ../shared is present, the CIFAR-10 ViT.
Checks: logits and layer inputs within 1e-4 of their scale, each gradient within 1e-3 of its
largest entry (float32 sums in a different order; a wrong term is off by far more)."""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

import common
import ref_vit


def torch_model(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    dims = ref_vit.timm_dims(cfg)
    sd = {k: torch.tensor(v) for k, v in ref_vit.read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    return dims, sd


def check_model(args, chk, name, model_dir, tmp, rng, n=2):
    dims, sd = torch_model(model_dir)
    dims.setdefault("distilled", False)
    C, S, D, NC = dims.get("in_chans", 3), dims["img_size"], dims["embed_dim"], dims["num_classes"]
    T = (S // dims["patch_size"]) ** 2 + (2 if dims["distilled"] else 1)
    L = 2 * dims["depth"]
    x = rng.normal(0, 1, (n, C, S, S)).astype(np.float32)
    xp = os.path.join(tmp, "x.f32")
    x.tofile(xp)

    def forward(xt):
        taps = []
        f = ref_vit.vit_forward(sd, dims["num_heads"], distilled=dims["distilled"], taps=taps)
        return f(xt), taps

    # Linear mode: the backward alone.
    R0 = rng.normal(0, 1, (n, NC)).astype(np.float32)
    R = rng.normal(0, 1, (L, n, T, D)).astype(np.float32)
    R0.tofile(os.path.join(tmp, "r0.f32"))
    R.tofile(os.path.join(tmp, "r.f32"))
    pre = os.path.join(tmp, "g")
    common.run([args.probe, "synth_grad", "--model", model_dir, "--images", n, "--x", xp, "--dlogits",
                os.path.join(tmp, "r0.f32"), "--dlayers", os.path.join(tmp, "r.f32"), "--out", pre])
    xt = torch.tensor(x, requires_grad=True)
    logits, taps = forward(xt)
    got_logits = np.fromfile(pre + ".logits.f32", "<f4").reshape(n, NC)
    got_layers = np.fromfile(pre + ".layers.f32", "<f4").reshape(L, n, T, D)
    ref_layers = np.stack([t.detach().numpy() for t in taps])
    e = np.abs(got_logits - logits.detach().numpy()).max() / max(1.0, np.abs(got_logits).max())
    chk.check(e < 1e-4, f"{name}: logits = torch's (relative {e:.2e})")
    e = np.abs(got_layers - ref_layers).max() / np.abs(ref_layers).max()
    chk.check(e < 1e-4, f"{name}: the {L} LayerNorm inputs = torch's (relative {e:.2e})")
    loss = (logits * torch.tensor(R0)).sum() + sum((t * torch.tensor(R[i])).sum() for i, t in enumerate(taps))
    loss.backward()
    ref = xt.grad.numpy()
    got = np.fromfile(pre + ".dx.f32", "<f4").reshape(ref.shape)
    e = np.abs(got - ref).max() / np.abs(ref).max()
    chk.check(e < 1e-3, f"{name}: ∂(Σ logits·R + Σ layers·R)/∂images = autograd's (max error {e:.2e} of the largest)")

    # Stats mode: cross-entropy + the exact-centre statistics loss, the target the statistics of
    # other images moved by noise.
    with torch.no_grad():
        _, other = forward(torch.tensor(rng.normal(0, 1, (n, C, S, S)).astype(np.float32)))
    mean = np.stack([t[0].mean(0).numpy() for t in other])  # L × D
    sdv = np.stack([torch.sqrt(t[0].var(0, unbiased=False) + 1e-6).numpy() for t in other])
    mean = (mean + rng.normal(0, 0.3, mean.shape) * np.abs(mean).mean()).astype(np.float32)
    sdv = (sdv * np.exp(rng.normal(0, 0.3, sdv.shape))).astype(np.float32)
    np.concatenate([mean.ravel(), sdv.ravel()]).astype(np.float32).tofile(os.path.join(tmp, "tg.f32"))
    cls = rng.integers(0, NC, n).astype(np.int32)
    cls.tofile(os.path.join(tmp, "cls.i32"))
    r = json.loads(common.run([args.probe, "synth_grad", "--model", model_dir, "--images", n, "--x", xp, "--target",
                               os.path.join(tmp, "tg.f32"), "--classes", os.path.join(tmp, "cls.i32"), "--out", pre]))
    xt = torch.tensor(x, requires_grad=True)
    logits, taps = forward(xt)
    m, s = torch.tensor(mean), torch.tensor(sdv)
    scale = (s * s).mean(1)  # L
    loss = F.cross_entropy(logits, torch.tensor(cls, dtype=torch.long), reduction="sum")
    for l, t in enumerate(taps):
        mu = t.mean(1)  # n × D
        sd_ = torch.sqrt(t.var(1, unbiased=False) + 1e-6)
        loss = loss + (((mu - m[l]) ** 2 + (sd_ - s[l]) ** 2).sum() / (L * D * scale[l]))
    loss.backward()
    ref = xt.grad.numpy()
    got = np.fromfile(pre + ".dx.f32", "<f4").reshape(ref.shape)
    e = abs(r["loss"] - loss.item()) / abs(loss.item())
    chk.check(e < 1e-4, f"{name}: synthesis loss {r['loss']:.6f} = torch's {loss.item():.6f} (relative {e:.2e})")
    e = np.abs(got - ref).max() / np.abs(ref).max()
    chk.check(e < 1e-3, f"{name}: ∂(CE + statistics loss)/∂images = autograd's (max error {e:.2e} of the largest)")


def main():
    args = common.parse_args()
    chk = common.Checker()
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    with common.tmpdir() as tmp:
        check_model(args, chk, "fashion-mnist ViT", os.path.join(args.source_dir, "models", "vit_fmnist_patch4_28"),
                    tmp, rng, n=3)
        deit = os.path.join(tmp, "deit")
        ref_vit.write_random_checkpoint(deit, "deit_tiny_distilled_patch16_224")
        check_model(args, chk, "random DeiT-Ti distilled", deit, tmp, rng, n=2)
        if common.shared_available(args, "models", "vit_cifar10_patch4_32"):
            check_model(args, chk, "CIFAR-10 ViT", os.path.join(args.shared_dir, "models", "vit_cifar10_patch4_32"),
                        tmp, rng, n=2)
    chk.finish()


if __name__ == "__main__":
    main()
