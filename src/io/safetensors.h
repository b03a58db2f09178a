// Memory-mapped reader and writer for the safetensors format
// (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
// then the data buffer. The reader validates like the reference implementation and
// throws vitq::Error(ErrorKind::Model, ...) naming the file, the tensor and the problem.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vitq {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType t);        // "F32", ...
size_t dtype_size(DType t);             // bytes per element
bool parse_dtype(const std::string& s, DType* out);
// Bytes of a tensor of `shape` and `dtype` in *out; false if a dimension is negative or the
// element count (must fit int64) or byte count overflows. Used by the reader and the writer.
bool checked_nbytes(const Shape& shape, DType dtype, uint64_t* out);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data buffer
};

class SafeTensorsFile {
 public:
  // Maps and validates the file. Throws Error(Io) if it cannot be opened, Error(Model) if invalid.
  static SafeTensorsFile open(const std::string& path);

  SafeTensorsFile(SafeTensorsFile&&) noexcept;
  SafeTensorsFile& operator=(SafeTensorsFile&&) noexcept;
  ~SafeTensorsFile();

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;   // throws Error(Model) naming file and tensor
  std::vector<std::string> names() const;                  // sorted
  // The tensors not in `used`, listed for an error message ("a, b, c, d, e, ... (7 in all)");
  // empty if every tensor is in `used`.
  std::string list_unused(const std::set<std::string>& used) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::span<const uint8_t> bytes(const std::string& name) const;  // raw little-endian bytes

  // F32/F16/BF16 tensor converted to float32; other dtypes are an Error naming the tensor.
  Tensor to_f32(const std::string& name) const;
  // to_f32 and check the shape; a mismatch is an Error naming file, tensor, expected and actual shape.
  Tensor to_f32(const std::string& name, const Shape& expected) const;

 private:
  SafeTensorsFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data buffer inside the map
  std::map<std::string, TensorInfo> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: raw little-endian bytes of `dtype` with `shape`.
struct TensorBlob {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<uint8_t> data;
};
TensorBlob make_f32_blob(const std::string& name, const Tensor& t);

// Writes tensors in name order, header padded with spaces to a multiple of 8 bytes.
// Deterministic: the same inputs give the same bytes. Throws Error(Io) on failure.
void write_safetensors(const std::string& path, const std::vector<TensorBlob>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace vitq
