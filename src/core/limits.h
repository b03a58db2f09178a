// The resource limits of every reader, in one place (documented in docs/FORMAT.md, "Limits").
// Every input is checked against them from its header, before vitq allocates or reads more than
// the header, so that a small hostile or broken file cannot cost gigabytes of memory or minutes
// of time: memory stays proportional to the declared, limited size. They are generous enough
// for real photographs, the MNIST family of IDX datasets and every published ViT.
#pragma once
#include <cstdint>

namespace vitq::limits {

// ---- JSON files (config.json, preprocessor_config.json, plan.json) ----
// Larger files are refused before they are read (a plan of ViT-L with per-channel steps and
// bias corrections is a few MB).
constexpr uint64_t kMaxJsonFileBytes = uint64_t(64) << 20;

// ---- safetensors ----
// The reference reader refuses headers above 100 MB (HeaderTooLarge) so that a corrupt length
// cannot make it allocate or parse gigabytes; the writer keeps to the same bound. Tensor count
// and shapes are bounded by the header's size and by the file: every tensor's bytes must lie
// inside the mapped file, so no declared shape allocates anything.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
// A valid header nests 3 levels ({ name: { shape: [ ] } }); anything far deeper is garbage,
// and the bound keeps the parser's stacks small (serde_json, used by the reference, stops at 128).
constexpr int kMaxSafetensorsJsonDepth = 64;

// ---- model configuration (config.json) ----
// Range checks on the architecture, before any tensor is shaped from it. ViT-22B has width
// 6144, 48 layers and 48 heads; EVA/DINOv2 giants use 1536 x 40 x 24. An absurd value is a
// clear model error (exit 3), never an allocation failure.
constexpr int kMaxImageSize = 8192;      // img_size / image_size (square)
constexpr int kMaxPatchSize = 1024;
constexpr int kMaxEmbedDim = 65536;      // embed_dim / hidden_size
constexpr int kMaxDepth = 1024;          // depth / num_hidden_layers
constexpr int kMaxHeads = 1024;          // num_heads / num_attention_heads
constexpr int kMaxMlpHidden = 1 << 20;   // intermediate_size, or embed_dim x mlp_ratio
constexpr int kMaxClasses = 1 << 24;     // num_classes / num_labels
// Patches per image, (img_size / patch_size)^2: attention holds tokens^2 scores per head, so
// this bounds the activations a config can ask for (128 x 128 patches; DINOv2 at 518 px with
// 14-px patches has 37 x 37 = 1369, SAM's 1024 px / 16 has 4096).
constexpr int kMaxPatches = 16384;

// ---- images and IDX datasets ----

// An image file (JPEG or PNG) is refused above this size before it is read (a 100-megapixel
// photo is 20-60 MB as JPEG, up to ~300 MB as 8-bit RGB PNG at worst; 256 MiB covers all real
// ones). Only this many bytes are ever read from a file named *.jpg/*.png.
constexpr uint64_t kMaxImageFileBytes = 256ull << 20;

// Decoded pixels (width x height), checked from the JPEG SOF / PNG IHDR header before any
// pixel buffer exists. PIL refuses images above 2 * Image.MAX_IMAGE_PIXELS
// (DecompressionBombError); vitq uses the same bound (~179 megapixels, e.g. 16384 x 10922).
constexpr uint64_t kMaxImagePixels = 2ull * 89478485ull;

// Any PNG chunk other than IDAT (text, ICC profile, EXIF, ...) is refused above this length,
// and the decompressed size of zTXt/iTXt/iCCP is limited to it too (libpng's
// png_set_chunk_malloc_max). vitq does not use text chunks; they are skipped unread.
constexpr uint64_t kMaxPngChunkBytes = 8ull << 20;
// Ancillary chunks libpng keeps at most (png_set_chunk_cache_max): a file of a million tiny
// sPLT chunks must not grow a list.
constexpr uint32_t kMaxPngChunkCount = 1000;

// The data of an IDX file (count x rows x cols bytes, after the header), checked from the
// header before anything else is read. Fashion-MNIST's train split is 47 MB; EMNIST's largest
// (byclass, 698k images) 547 MB.
constexpr uint64_t kMaxIdxBytes = 1ull << 30;
// Rows and columns of an IDX image.
constexpr uint32_t kMaxIdxImageSide = 16384;

}  // namespace vitq::limits
