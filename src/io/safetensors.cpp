// safetensors reader: maps the file and validates the header with the rules of the reference
// implementation (huggingface/safetensors, safetensors/src/tensor.rs), so that a file vitq
// accepts is one the reference accepts, and every rejection names the file, the tensor and
// the offending values. The writer lives in safetensors_writer.cpp.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "core/limits.h"

namespace vitq {

// safetensors data is little-endian; to_f32 and bytes() hand it out unswapped.
static_assert(std::endian::native == std::endian::little, "vitq assumes a little-endian host");

namespace {

using nlohmann::json;

using limits::kMaxSafetensorsHeaderBytes;
using limits::kMaxSafetensorsJsonDepth;

template <class... Args>
[[noreturn]] void header_error(const std::string& path, const Args&... args) {
  fail(ErrorKind::Model, path, ": header: ", args...);
}

template <class... Args>
[[noreturn]] void tensor_error(const std::string& path, const std::string& name,
                               const Args&... args) {
  fail(ErrorKind::Model, path, ": tensor '", name, "': ", args...);
}

std::string errno_text(int err) { return std::generic_category().message(err); }

// A JSON value for an error message, cut short so a huge value cannot flood the message.
std::string brief(const json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// Returns the offset of the first byte that breaks UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or npos. The reference rejects such headers
// (InvalidHeader) before parsing; nlohmann only checks inside strings.
size_t first_invalid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((s[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string::npos;
}

// nlohmann keeps only the last of duplicate keys; the safetensors format forbids duplicates
// (a duplicated tensor name would leave one byte range without owner). This parse callback
// sees every key before it is merged and throws on a repeat, and bounds the nesting depth.
class HeaderParseGuard {
 public:
  explicit HeaderParseGuard(const std::string& path) : path_(path) {}

  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxSafetensorsJsonDepth) header_error(path_, "JSON nested deeper than ", kMaxSafetensorsJsonDepth, " levels");
        if (event == json::parse_event_t::object_start) objects_.emplace_back();
        break;
      case json::parse_event_t::key: {
        Level& level = objects_.back();
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!level.keys.insert(key).second) {
          if (objects_.size() == 1) tensor_error(path_, key, "duplicate name in header");
          header_error(path_, "entry '", objects_.front().last_key, "': duplicate key '", key, "'");
        }
        level.last_key = key;
        break;
      }
      case json::parse_event_t::object_end:
        objects_.pop_back();
        break;
      default:
        break;
    }
    return true;  // keep everything; this guard only checks
  }

 private:
  struct Level {
    std::set<std::string> keys;
    std::string last_key;
  };
  const std::string& path_;
  std::vector<Level> objects_;
};

// A JSON integer >= 0. nlohmann stores integers above 2^64-1 as floats, so they fail too.
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

std::string offsets_str(uint64_t begin, uint64_t end) { return cat('[', begin, ", ", end, ']'); }

TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry) {
  if (!entry.is_object()) tensor_error(path, name, "entry is not a JSON object (", brief(entry), ")");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(field)) tensor_error(path, name, "missing field '", field, "'");
  // Other fields are ignored, as the reference does.

  TensorInfo ti;
  ti.name = name;
  const json& dtype = entry["dtype"];
  if (!dtype.is_string() || !parse_dtype(dtype.get<std::string>(), &ti.dtype))
    tensor_error(path, name, "unknown dtype ", brief(dtype),
                 " (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");

  const json& shape = entry["shape"];
  if (!shape.is_array()) tensor_error(path, name, "shape is not an array (", brief(shape), ")");
  for (size_t i = 0; i < shape.size(); ++i) {
    uint64_t d;
    if (!as_u64(shape[i], &d))
      tensor_error(path, name, "shape entry ", i, " is not a non-negative integer (", brief(shape[i]),
                   " in ", brief(shape), ")");
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      tensor_error(path, name, "shape entry ", i, " is too large (", d, ")");
    ti.shape.push_back(static_cast<int64_t>(d));
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !as_u64(offsets[0], &ti.begin) ||
      !as_u64(offsets[1], &ti.end))
    tensor_error(path, name, "data_offsets is not a pair of non-negative integers (", brief(offsets), ")");
  if (ti.begin > ti.end)
    tensor_error(path, name, "data_offsets begin > end (", offsets_str(ti.begin, ti.end), ")");

  uint64_t nbytes;
  if (!checked_nbytes(ti.shape, ti.dtype, &nbytes))
    tensor_error(path, name, "shape ", shape_str(ti.shape), " of ", dtype_name(ti.dtype),
                 " overflows a 64-bit byte count");
  if (ti.end - ti.begin != nbytes)
    tensor_error(path, name, "data_offsets ", offsets_str(ti.begin, ti.end), " span ", ti.end - ti.begin,
                 " bytes but shape ", shape_str(ti.shape), " of ", dtype_name(ti.dtype), " needs ",
                 nbytes);
  return ti;
}

void parse_metadata(const std::string& path, const json& meta, std::map<std::string, std::string>* out) {
  if (!meta.is_object())
    header_error(path, "__metadata__ is not an object of strings (", brief(meta), ")");
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string())
      header_error(path, "__metadata__ value for key '", key, "' is not a string (", brief(value), ")");
    (*out)[key] = value.get<std::string>();
  }
}

// The byte ranges, sorted by offset, must tile the data buffer exactly: start at 0, no hole,
// no overlap, end at its last byte (reference: InvalidOffset, MetadataIncompleteBuffer).
// Zero-byte tensors may share an offset, as in the reference.
void check_layout(const std::string& path, const std::map<std::string, TensorInfo>& index,
                  uint64_t data_size) {
  std::vector<const TensorInfo*> sorted;
  sorted.reserve(index.size());
  for (const auto& kv : index) sorted.push_back(&kv.second);
  std::sort(sorted.begin(), sorted.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });

  const TensorInfo* prev = nullptr;
  uint64_t covered = 0;
  for (const TensorInfo* t : sorted) {
    if (t->begin < covered)
      tensor_error(path, t->name, "data_offsets ", offsets_str(t->begin, t->end), " overlap tensor '",
                   prev->name, "' ", offsets_str(prev->begin, prev->end));
    if (t->begin > covered) {
      if (!prev)
        tensor_error(path, t->name, "data_offsets ", offsets_str(t->begin, t->end),
                     " leave a hole: the first tensor must begin at 0");
      tensor_error(path, t->name, "data_offsets ", offsets_str(t->begin, t->end),
                   " leave a hole after tensor '", prev->name, "' which ends at ", prev->end);
    }
    if (t->end > data_size)
      tensor_error(path, t->name, "data_offsets ", offsets_str(t->begin, t->end),
                   " run past the end of the data buffer (", data_size, " bytes; file truncated?)");
    covered = t->end;
    prev = t;
  }
  if (covered != data_size)
    header_error(path, "tensors cover ", covered, " bytes but the data buffer has ", data_size,
                 " (", data_size - covered, " trailing bytes)");
}

void unmap(const uint8_t* p, size_t n) {
  if (p) ::munmap(const_cast<uint8_t*>(p), n);
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL: return 1;
  }
  return 0;
}

bool parse_dtype(const std::string& s, DType* out) {
  for (DType t : {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16,
                  DType::I8, DType::U8, DType::BOOL}) {
    if (s == dtype_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

bool checked_nbytes(const Shape& shape, DType dtype, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  // Tensor sizes are int64 elsewhere in vitq (shape_numel), so the element count must fit.
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  return !__builtin_mul_overflow(n, static_cast<uint64_t>(dtype_size(dtype)), out);
}

SafeTensorsFile SafeTensorsFile::open(const std::string& path) {
  SafeTensorsFile f;  // owns the mapping from here on, so every throw below unmaps it
  f.path_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::Io, path, ": cannot open: ", errno_text(errno));
  struct stat st {};
  const int stat_rc = ::fstat(fd, &st);
  const int stat_err = errno;
  if (stat_rc != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    if (stat_rc != 0) fail(ErrorKind::Io, path, ": cannot stat: ", errno_text(stat_err));
    fail(ErrorKind::Io, path, ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {  // mmap of length 0 is an error (EINVAL); an empty file is rejected below
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    ::close(fd);  // the mapping keeps the file referenced
    if (p == MAP_FAILED) fail(ErrorKind::Io, path, ": cannot map: ", errno_text(map_err));
    f.map_ = static_cast<const uint8_t*>(p);
    f.map_size_ = size;
  } else {
    ::close(fd);
  }

  if (size < 8) header_error(path, "file is ", size, " bytes, too short for the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, f.map_, 8);  // little-endian u64 (host checked above)
  if (n > kMaxSafetensorsHeaderBytes)
    header_error(path, "header length ", n, " exceeds the limit of ", kMaxSafetensorsHeaderBytes, " bytes");
  if (n > size - 8)
    header_error(path, "header length ", n, " runs past the end of the file (", size, " bytes)");

  const uint8_t* text = f.map_ + 8;
  if (size_t bad = first_invalid_utf8(text, n); bad != std::string::npos)
    header_error(path, "not valid UTF-8 (byte ", bad, " of the header)");
  if (n == 0 || text[0] != '{') header_error(path, "does not start with '{' (not a JSON object)");

  json root;
  try {
    const char* begin = reinterpret_cast<const char*>(text);
    root = json::parse(begin, begin + n, HeaderParseGuard(path), /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    header_error(path, "invalid JSON (", e.what(), ")");
  }
  if (!root.is_object()) header_error(path, "not a JSON object");

  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      parse_metadata(path, value, &f.metadata_);
    } else {
      f.index_.emplace(key, parse_entry(path, key, value));
    }
  }
  const uint64_t data_size = size - 8 - n;
  check_layout(path, f.index_, data_size);
  f.data_ = text + n;
  return f;
}

SafeTensorsFile::SafeTensorsFile(SafeTensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)),
      data_(std::exchange(o.data_, nullptr)),
      index_(std::move(o.index_)),
      metadata_(std::move(o.metadata_)) {}

SafeTensorsFile& SafeTensorsFile::operator=(SafeTensorsFile&& o) noexcept {
  if (this != &o) {
    unmap(map_, map_size_);
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    data_ = std::exchange(o.data_, nullptr);
    index_ = std::move(o.index_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafeTensorsFile::~SafeTensorsFile() { unmap(map_, map_size_); }

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) tensor_error(path_, name, "not found in the file");
  return it->second;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);  // std::map: already sorted
  return out;
}

std::string SafeTensorsFile::list_unused(const std::set<std::string>& used) const {
  std::vector<std::string> extra;
  for (const auto& n : names())
    if (!used.count(n)) extra.push_back(n);
  std::string list;
  for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
  if (extra.size() > 5) list += cat(", ... (", extra.size(), " in all)");
  return list;
}

std::span<const uint8_t> SafeTensorsFile::bytes(const std::string& name) const {
  const TensorInfo& ti = info(name);
  return {data_ + ti.begin, static_cast<size_t>(ti.end - ti.begin)};
}

Tensor SafeTensorsFile::to_f32(const std::string& name) const {
  const TensorInfo& ti = info(name);
  if (ti.dtype != DType::F32 && ti.dtype != DType::F16 && ti.dtype != DType::BF16)
    tensor_error(path_, name, "dtype ", dtype_name(ti.dtype),
                 " cannot be converted to float32 (supported: F32, F16, BF16)");
  Tensor t(ti.shape);
  const uint8_t* src = data_ + ti.begin;
  const size_t n = t.data.size();
  // The mapped data has no alignment guarantee (offsets are only byte offsets), so every
  // element is read with memcpy rather than through a float* / uint16_t* cast.
  if (ti.dtype == DType::F32) {
    if (n) std::memcpy(t.ptr(), src, n * sizeof(float));
  } else {
    float (*convert)(uint16_t) = ti.dtype == DType::F16 ? f16_to_f32 : bf16_to_f32;
    float* dst = t.ptr();
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = convert(h);
    }
  }
  return t;
}

Tensor SafeTensorsFile::to_f32(const std::string& name, const Shape& expected) const {
  const TensorInfo& ti = info(name);
  if (ti.shape != expected)
    tensor_error(path_, name, "shape ", shape_str(ti.shape), " but expected ", shape_str(expected));
  return to_f32(name);
}

}  // namespace vitq
