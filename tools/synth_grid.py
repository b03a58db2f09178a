#!/usr/bin/python3
"""A picture of calibration images: one row per --row LABEL=DIR (the first --per-row images of an
ImageFolder tree, in file-name order), each image cut to the model's input (the centre crop
`vitq synth` pads around; from DIR/report.json) and scaled to --size pixels, the label above its row.

  /usr/bin/python3 tools/synth_grid.py --out docs/synth_grid.png \\
      --row "ViT-Ti, class centres=out/synth/vit_ti/centres" --row "ViT-Ti, data-free=out/synth/vit_ti/free"
"""
import argparse
import glob
import json
import os

from PIL import Image, ImageDraw


def images(d, n):
    files = sorted(glob.glob(os.path.join(d, "*", "*.png")) + glob.glob(os.path.join(d, "*", "*.jpg")) +
                   glob.glob(os.path.join(d, "*", "*.JPEG")), key=os.path.basename)[:n]
    crop = None
    rep = os.path.join(d, "report.json")
    if os.path.exists(rep):
        with open(rep) as f:
            model = json.load(f)["model"]
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
        crop = cfg.get("model_args", {}).get("img_size") or cfg["pretrained_cfg"]["input_size"][-1]
    out = []
    for p in files:
        im = Image.open(p).convert("RGB")
        if crop and im.width > crop:
            l, t = round((im.width - crop) / 2), round((im.height - crop) / 2)
            im = im.crop((l, t, l + crop, t + crop))
        out.append(im)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", required=True, help="LABEL=DIR")
    ap.add_argument("--per-row", type=int, default=8)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = [(r.split("=", 1)[0], images(r.split("=", 1)[1], a.per_row)) for r in a.row]
    pad, text = 4, 16
    w = a.per_row * (a.size + pad) + pad
    h = len(rows) * (text + a.size + pad) + pad
    grid = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(grid)
    y = pad
    for label, ims in rows:
        draw.text((pad, y + 2), label, fill="black")
        y += text
        for i, im in enumerate(ims):
            grid.paste(im.resize((a.size, a.size), Image.BICUBIC), (pad + i * (a.size + pad), y))
        y += a.size + pad
    grid.save(a.out, optimize=True, **({"quality": 85} if a.out.lower().endswith((".jpg", ".jpeg")) else {}))


if __name__ == "__main__":
    main()
