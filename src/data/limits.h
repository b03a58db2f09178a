// The resource limits of the data readers, in one place (documented in docs/FORMAT.md,
// "Limits"). Every input is checked against them from its header, before vitq allocates or
// reads more than the header, so that a small hostile or broken file cannot cost gigabytes
// of memory or minutes of time: memory stays proportional to the declared, limited size.
// They are generous enough for real photographs and for the MNIST family of IDX datasets.
#pragma once
#include <cstdint>

namespace vitq::limits {

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
