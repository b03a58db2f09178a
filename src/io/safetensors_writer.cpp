// safetensors writer: byte-for-byte deterministic output (tensors and metadata keys in name
// order, compact JSON with the field order of the reference serializer, header padded with
// spaces to 8 bytes), written to a temporary file beside the target and renamed over it, so
// readers never see a half-written checkpoint.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/limits.h"
#include "io/safetensors.h"

namespace vitq {

static_assert(std::endian::native == std::endian::little, "vitq writes host bytes as little-endian");

namespace {

std::string errno_text(int err) { return std::generic_category().message(err); }

// The temporary file: closed and removed unless commit() renamed it onto the target.
class TempFile {
 public:
  explicit TempFile(const std::string& target) : target_(target) {
    // Unique per process and call; O_EXCL refuses a name that exists anyway (e.g. left
    // by a crashed process with the same pid), in which case the next counter is tried.
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = cat(target, ".tmp.", ::getpid(), '.', counter.fetch_add(1));
      // 0666 is reduced by the umask, as for any file the user creates.
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) fail(ErrorKind::Io, target_, ": cannot create ", path_, ": ", errno_text(errno));
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }

  void write(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(ErrorKind::Io, target_, ": cannot write ", path_, ": ", errno_text(errno));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  // Flushes to disk before the rename so that a crash cannot leave the new name pointing
  // at a file whose data never reached the disk.
  void commit() {
    if (::fsync(fd_) != 0) fail(ErrorKind::Io, target_, ": cannot sync ", path_, ": ", errno_text(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail(ErrorKind::Io, target_, ": cannot close ", path_, ": ", errno_text(errno));
    if (std::rename(path_.c_str(), target_.c_str()) != 0)
      fail(ErrorKind::Io, target_, ": cannot rename ", path_, " onto it: ", errno_text(errno));
    committed_ = true;
  }

 private:
  std::string target_, path_;
  int fd_ = -1;
  bool committed_ = false;
};

// The header JSON: "__metadata__" first (only if there is metadata), then the tensors in
// the given (name) order, each {"dtype", "shape", "data_offsets"} as the reference writes it.
std::string header_json(const std::string& path, const std::vector<const TensorBlob*>& order,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;  // std::map: sorted keys
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorBlob* b : order) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype_name(b->dtype);
    entry["shape"] = b->shape;
    entry["data_offsets"] = {offset, offset + b->data.size()};
    header[b->name] = std::move(entry);
    offset += b->data.size();
  }
  try {
    return header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or metadata that is not UTF-8
    fail(ErrorKind::Internal, path, ": cannot encode the safetensors header (", e.what(), ")");
  }
}

}  // namespace

TensorBlob make_f32_blob(const std::string& name, const Tensor& t) {
  if (static_cast<int64_t>(t.data.size()) != shape_numel(t.shape))
    fail(ErrorKind::Internal, "tensor '", name, "': shape ", shape_str(t.shape), " but ", t.data.size(),
         " elements");
  TensorBlob b;
  b.name = name;
  b.dtype = DType::F32;
  b.shape = t.shape;
  b.data.resize(t.data.size() * sizeof(float));
  if (!b.data.empty()) std::memcpy(b.data.data(), t.data.data(), b.data.size());  // host is little-endian
  return b;
}

void write_safetensors(const std::string& path, const std::vector<TensorBlob>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Validate everything before creating any file: these are bugs in the caller.
  std::vector<const TensorBlob*> order;
  order.reserve(tensors.size());
  for (const TensorBlob& b : tensors) {
    uint64_t nbytes;
    if (!checked_nbytes(b.shape, b.dtype, &nbytes))
      fail(ErrorKind::Internal, path, ": tensor '", b.name, "': invalid shape ", shape_str(b.shape));
    if (nbytes != b.data.size())
      fail(ErrorKind::Internal, path, ": tensor '", b.name, "': ", b.data.size(), " bytes but shape ",
           shape_str(b.shape), " of ", dtype_name(b.dtype), " needs ", nbytes);
    if (b.name == "__metadata__")
      fail(ErrorKind::Internal, path, ": tensor name '__metadata__' is reserved by the format");
    order.push_back(&b);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorBlob* a, const TensorBlob* b) { return a->name < b->name; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->name == order[i - 1]->name)
      fail(ErrorKind::Internal, path, ": tensor '", order[i]->name, "' given twice");

  std::string header = header_json(path, order, metadata);
  header.append((8 - header.size() % 8) % 8, ' ');  // data buffer starts 8-byte aligned
  if (header.size() > limits::kMaxSafetensorsHeaderBytes)  // the reader's bound: could not be read back
    fail(ErrorKind::Internal, path, ": safetensors header of ", header.size(), " bytes exceeds the ",
         limits::kMaxSafetensorsHeaderBytes, "-byte limit of readers");

  uint8_t len[8];
  const uint64_t n = header.size();
  std::memcpy(len, &n, 8);  // little-endian host

  TempFile out(path);
  out.write(len, 8);
  out.write(reinterpret_cast<const uint8_t*>(header.data()), header.size());
  for (const TensorBlob* b : order) out.write(b->data.data(), b->data.size());
  out.commit();
}

}  // namespace vitq
