// Internal to src/data: the per-format decoders behind decode_image_memory, and the limits
// they share. Each returns an RGB Image or throws Error(Data, "<name>: <reason>").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/image.h"

namespace vitq::detail {

// PIL refuses images above 2 * Image.MAX_IMAGE_PIXELS (DecompressionBombError); vitq uses the
// same bound so that a hostile header cannot make it allocate gigabytes.
constexpr uint64_t kMaxImagePixels = 2ull * 89478485ull;

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name);
Image decode_png(const uint8_t* data, size_t size, const std::string& name);

// Throws Error(Data) if width x height is empty or above kMaxImagePixels.
void check_image_size(uint64_t width, uint64_t height, const std::string& name);

}  // namespace vitq::detail
