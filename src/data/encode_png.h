// PNG encoding with libpng: 8-bit grey (1 channel) or RGB (3), no ancillary chunks (no time,
// no gamma), fixed zlib settings, so the same pixels always give the same bytes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace vitq {

// Throws Error(Internal) for an image that is not 1- or 3-channel with pixels of its size.
std::vector<uint8_t> encode_png(const Image& img);

// encode_png, written to `path`; throws Error(Io) naming the path if it cannot be written.
void write_png(const std::string& path, const Image& img);

}  // namespace vitq
