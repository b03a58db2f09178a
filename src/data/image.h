// 8-bit images, decoding (libjpeg-turbo, libpng) and the resize/crop/normalise pipeline
// that timm's evaluation transform applies through PIL and torchvision.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vitq {

// Interleaved 8-bit pixels, channels = 1 (L) or 3 (RGB), row-major, no padding.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  uint8_t at(int x, int y, int c) const { return pixels[(size_t(y) * width + x) * channels + c]; }
  size_t area() const { return size_t(width) * size_t(height); }
  // An image of this size, its pixels zero.
  static Image blank(int width, int height, int channels) {
    return {width, height, channels, std::vector<uint8_t>(size_t(width) * size_t(height) * size_t(channels))};
  }
};

// Decodes a JPEG or PNG file (detected from its magic bytes, not its extension) into RGB,
// as PIL's Image.open(path).convert("RGB") does: grey is replicated, alpha and tRNS dropped,
// palette expanded (indices past the palette read as PIL's grey ramp), 1/2/4-bit grey scaled
// to 0..255, CMYK/YCCK JPEG converted with PIL's formula (Adobe-inverted CMYK). 16-bit PNG
// samples keep their high byte: that is what PIL does for RGB, RGBA and grey+alpha; for 16-bit
// grey PIL's convert("RGB") clips the 0..65535 value at 255 (white from 1/256 up), which vitq
// deliberately does not reproduce: 16-bit grey also becomes v >> 8 (decode_png.cpp).
// No EXIF rotation (PIL's open neither). A truncated file is an error (PIL: "image file is
// truncated"); libjpeg's recoverable corrupt-data warnings are ignored, as PIL ignores them.
// PNG chunk damage (bad CRC, bad length) is an error even where PIL's reader tolerates it.
// Throws Error(Data) naming the path and the reason for a missing, corrupt or unsupported file.
Image decode_image_file(const std::string& path);
Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name_for_errors);

// PIL Image.convert("L") from RGB (ITU-R 601-2 luma, PIL's integer rounding).
Image rgb_to_gray(const Image& rgb);
// Replicates a 1-channel image to 3 channels.
Image gray_to_rgb(const Image& gray);

enum class Interp { Nearest, Bilinear, Bicubic };
bool parse_interp(const std::string& s, Interp* out);  // "bilinear", "bicubic", "nearest"
const char* interp_name(Interp i);

// PIL Image.resize((width, height), resample) with PIL's antialiased separable filters,
// fixed-point coefficients and rounding, bit-identical to Pillow for 8-bit L/RGB images.
Image resize_pil(const Image& img, int width, int height, Interp interp);
// The window [x0, x0 + w) x [y0, y0 + h) of resize_pil(img, width, height, interp), same pixels,
// computed without the rest of the resized image (its cost is the window's, whatever the size).
Image resize_pil_window(const Image& img, int width, int height, Interp interp, int x0, int y0, int w, int h);

// torchvision CenterCrop on a PIL image: top = round((H - h) / 2), left = round((W - w) / 2)
// (Python round, half to even). A crop larger than the image is zero-padded first, as
// torchvision does (left/top padding (w - W) // 2, the rest right/bottom).
Image center_crop(const Image& img, int width, int height);
// The offset of a crop <= size along one axis: Python's int(round((size - crop) / 2.0)).
int center_crop_offset(int size, int crop);

// timm's evaluation transform (pretrained_cfg): Resize(floor(size / crop_pct)) of the short
// side (torchvision semantics: long side int(size * long / short); no resize if the short side
// already has that size), CenterCrop(size), ToTensor, Normalize(mean, std).
// Square input (height == width): timm passes an int to Resize (short side, aspect kept).
// Non-square input: timm passes the tuple (int(height / crop_pct), int(width / crop_pct)) and
// both sides are resized to it (aspect not kept) before the centre crop.
// channels == 1: the image is converted to L (PIL convert("L")) before resizing; channels == 3
// and an L image: grey is replicated (after resizing, which gives the same pixels).
struct Preprocess {
  int channels = 3;  // model input channels: 1 (L) or 3 (RGB)
  int height = 224, width = 224;
  Interp interp = Interp::Bicubic;
  double crop_pct = 0.875;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  // Hugging Face ViTImageProcessor: resize straight to height x width (aspect not kept),
  // no crop. Set for HF-layout checkpoints; crop_pct is then ignored.
  bool resize_exact = false;
};

// The size torchvision's Resize gives an image of in_w x in_h under `p` (before the crop).
void preprocess_resize_size(int in_w, int in_h, const Preprocess& p, int* out_w, int* out_h);

// Applies the transform to an RGB or L image; writes channels*height*width floats (CHW):
// x = float(v) / 255.0f, then (x - mean[c]) / std[c] in float32 (torchvision's order).
// Throws Error(Data) for an invalid Preprocess (sizes, crop_pct, std) or empty image.
void preprocess(const Image& img, const Preprocess& p, float* out_chw);

}  // namespace vitq
