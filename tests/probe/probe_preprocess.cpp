// vitq_probe subcommands for the data layer (used by tests/parity/test_preprocess.py):
//   decode      --image P [--gray] --out F.u8            decoded pixels, HWC uint8
//   resize      --image P --width W --height H --interp I [--gray] --out F.u8
//   preprocess  --image P --height H --width W --channels C --interp I --crop-pct X
//               --mean a,b,c --std a,b,c [--resize-exact] --out F.f32     CHW float32
//   dataset     --path D --index I (+ the preprocess options) --out F.f32
// decode/resize print "width height channels" of the written image; dataset prints
// "label num_classes size" and the sample's name on the next line.
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/dataset.h"
#include "data/image.h"
#include "probe.h"

namespace vitq::probe {
namespace {

struct PreprocessArgs {
  int height = 224, width = 224, channels = 3;
  std::string interp = "bicubic";
  double crop_pct = 0.875;
  std::vector<float> mean{0.485f, 0.456f, 0.406f}, std{0.229f, 0.224f, 0.225f};
  bool resize_exact = false;
};

void add_preprocess_options(CLI::App* cmd, PreprocessArgs* a) {
  cmd->add_option("--height", a->height)->required();
  cmd->add_option("--width", a->width)->required();
  cmd->add_option("--channels", a->channels);
  cmd->add_option("--interp", a->interp);
  cmd->add_option("--crop-pct", a->crop_pct);
  cmd->add_option("--mean", a->mean)->delimiter(',');
  cmd->add_option("--std", a->std)->delimiter(',');
  cmd->add_flag("--resize-exact", a->resize_exact);
}

Preprocess to_preprocess(const PreprocessArgs& a) {
  Preprocess p;
  p.height = a.height;
  p.width = a.width;
  p.channels = a.channels;
  p.crop_pct = a.crop_pct;
  p.resize_exact = a.resize_exact;
  if (!parse_interp(a.interp, &p.interp)) fail(ErrorKind::Usage, "unknown --interp ", a.interp);
  if ((a.mean.size() != 1 && a.mean.size() != 3) || (a.std.size() != 1 && a.std.size() != 3))
    fail(ErrorKind::Usage, "--mean and --std take 1 or 3 values");
  for (size_t c = 0; c < 3; ++c) {
    p.mean[c] = a.mean[a.mean.size() == 1 ? 0 : c];
    p.std[c] = a.std[a.std.size() == 1 ? 0 : c];
  }
  return p;
}

void write_image(const Image& img, const std::string& out) {
  write_raw(out, img.pixels.data(), img.pixels.size());
  std::printf("%d %d %d\n", img.width, img.height, img.channels);
}

}  // namespace

void register_preprocess(CLI::App& app) {
  struct Args {
    std::string image, out, path, interp = "bicubic";
    int width = 0, height = 0;
    size_t index = 0;
    bool gray = false;
    PreprocessArgs pre, ds_pre;
  };
  auto a = std::make_shared<Args>();

  CLI::App* dec = app.add_subcommand("decode", "decode an image to HWC uint8 (RGB, or L with --gray)");
  dec->add_option("--image", a->image)->required();
  dec->add_option("--out", a->out)->required();
  dec->add_flag("--gray", a->gray, "convert to L as PIL's convert(\"L\")");
  dec->callback([a] {
    Image img = decode_image_file(a->image);
    write_image(a->gray ? rgb_to_gray(img) : img, a->out);
  });

  CLI::App* rs = app.add_subcommand("resize", "decode then resize_pil, HWC uint8");
  rs->add_option("--image", a->image)->required();
  rs->add_option("--width", a->width)->required();
  rs->add_option("--height", a->height)->required();
  rs->add_option("--interp", a->interp);
  rs->add_option("--out", a->out)->required();
  rs->add_flag("--gray", a->gray, "convert to L before resizing");
  rs->callback([a] {
    Interp interp;
    if (!parse_interp(a->interp, &interp)) fail(ErrorKind::Usage, "unknown --interp ", a->interp);
    Image img = decode_image_file(a->image);
    if (a->gray) img = rgb_to_gray(img);
    write_image(resize_pil(img, a->width, a->height, interp), a->out);
  });

  CLI::App* pp = app.add_subcommand("preprocess", "decode then preprocess, CHW float32");
  pp->add_option("--image", a->image)->required();
  pp->add_option("--out", a->out)->required();
  add_preprocess_options(pp, &a->pre);
  pp->callback([a] {
    const Preprocess p = to_preprocess(a->pre);
    std::vector<float> out(size_t(p.channels) * size_t(p.height) * size_t(p.width));
    preprocess(decode_image_file(a->image), p, out.data());
    write_raw(a->out, out.data(), out.size());
  });

  CLI::App* ds = app.add_subcommand("dataset", "open_dataset + load one sample, CHW float32");
  ds->add_option("--path", a->path)->required();
  ds->add_option("--index", a->index)->required();
  ds->add_option("--out", a->out)->required();
  add_preprocess_options(ds, &a->ds_pre);
  ds->callback([a] {
    const Preprocess p = to_preprocess(a->ds_pre);
    std::unique_ptr<Dataset> d = open_dataset(a->path);
    std::vector<float> out(size_t(p.channels) * size_t(p.height) * size_t(p.width));
    d->load(a->index, p, out.data());
    write_raw(a->out, out.data(), out.size());
    std::printf("%d %d %zu\n%s\n", d->label(a->index), d->num_classes(), d->size(), d->name(a->index).c_str());
  });
}

}  // namespace vitq::probe
