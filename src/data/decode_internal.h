// Internal to src/data: the per-format decoders behind decode_image_memory, and the limits
// they share. Each returns an RGB Image or throws Error(Data, "<name>: <reason>").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/image.h"
#include "core/limits.h"

namespace vitq::detail {

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name);
Image decode_png(const uint8_t* data, size_t size, const std::string& name);

// Throws Error(Data) if width x height is empty or above limits::kMaxImagePixels.
void check_image_size(uint64_t width, uint64_t height, const std::string& name);

}  // namespace vitq::detail
