// A dense row-major float tensor that owns its (64-byte aligned) storage.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/aligned.h"

namespace vitq {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[3, 224, 224]"
int64_t shape_numel(const Shape& s);

struct Tensor {
  Shape shape;
  avector<float> data;

  Tensor() = default;
  explicit Tensor(Shape s) : shape(std::move(s)), data(static_cast<size_t>(shape_numel(shape)), 0.0f) {}

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i < 0 ? i + int(shape.size()) : i)); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  bool empty() const { return data.empty(); }
};

}  // namespace vitq
