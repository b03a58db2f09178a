// IDX datasets (MNIST, Fashion-MNIST): an images file (magic 0x00000803: unsigned bytes,
// 3 dimensions N x rows x cols) and a labels file (0x00000801: N unsigned bytes), big-endian
// 32-bit dimensions, raw or gzip-compressed (zlib's gzread reads both). Both files are read
// into memory when the dataset is opened (Fashion-MNIST's test split is 7.8 MB), which also
// validates them completely before any sample is used.
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "data/dataset_internal.h"

namespace fs = std::filesystem;

namespace vitq::detail {
namespace {

constexpr const char* kImagesSuffix = "-images-idx3-ubyte";
constexpr const char* kLabelsSuffix = "-labels-idx1-ubyte";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};

std::vector<uint8_t> read_gz_or_raw(const std::string& path) {
  std::unique_ptr<gzFile_s, GzCloser> f(gzopen(path.c_str(), "rb"));
  if (!f) fail(ErrorKind::Data, path, ": cannot open");
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  for (;;) {
    const int got = gzread(f.get(), buf, sizeof buf);
    if (got < 0) {
      int errnum = 0;
      const char* msg = gzerror(f.get(), &errnum);
      fail(ErrorKind::Data, path, ": cannot read (corrupt gzip data?): ", msg ? msg : "unknown error");
    }
    if (got == 0) break;
    data.insert(data.end(), buf, buf + got);
  }
  // A gzip stream cut short reads as a clean end of file plus a Z_BUF_ERROR.
  int errnum = Z_OK;
  const char* msg = gzerror(f.get(), &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END)
    fail(ErrorKind::Data, path, ": gzip stream is truncated or corrupt: ", msg ? msg : "unknown error");
  return data;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// Validates an IDX header of unsigned bytes with `ndims` dimensions and the payload size;
// returns the dimensions.
std::vector<uint32_t> parse_idx(const std::vector<uint8_t>& d, int ndims, const std::string& path) {
  const size_t header = 4 + 4 * size_t(ndims);
  if (d.size() < 4) fail(ErrorKind::Data, path, ": file too short for an IDX header (", d.size(), " bytes)");
  if (d[0] != 0 || d[1] != 0)
    fail(ErrorKind::Data, path, ": bad IDX magic (first two bytes must be 0; not an IDX file?)");
  if (d[2] != 0x08) fail(ErrorKind::Data, path, ": IDX data type 0x", std::hex, int(d[2]), " is not unsigned byte (0x08)");
  if (d[3] != ndims)
    fail(ErrorKind::Data, path, ": IDX file has ", int(d[3]), " dimensions, expected ", ndims,
         ndims == 3 ? " (images: count, rows, columns)" : " (labels: count)");
  if (d.size() < header) fail(ErrorKind::Data, path, ": file is truncated inside the IDX header");
  std::vector<uint32_t> dims(static_cast<size_t>(ndims));
  uint64_t payload = 1;
  for (int i = 0; i < ndims; ++i) {
    dims[size_t(i)] = be32(&d[4 + 4 * size_t(i)]);
    if (dims[size_t(i)] == 0) fail(ErrorKind::Data, path, ": IDX dimension ", i, " is 0");
    payload *= dims[size_t(i)];
    if (payload > (uint64_t(1) << 40)) fail(ErrorKind::Data, path, ": IDX dimensions are implausibly large");
  }
  const uint64_t have = d.size() - header;
  if (have < payload)
    fail(ErrorKind::Data, path, ": file is truncated: the header announces ", payload, " bytes of data, the file has ", have);
  if (have > payload) fail(ErrorKind::Data, path, ": ", have - payload, " unexpected bytes after the IDX data");
  return dims;
}

class IdxDataset : public Dataset {
 public:
  IdxDataset(std::string images_path, std::string labels_path)
      : images_path_(std::move(images_path)), labels_path_(std::move(labels_path)) {
    images_ = read_gz_or_raw(images_path_);
    const std::vector<uint32_t> idims = parse_idx(images_, 3, images_path_);
    labels_ = read_gz_or_raw(labels_path_);
    const std::vector<uint32_t> ldims = parse_idx(labels_, 1, labels_path_);
    if (idims[0] != ldims[0])
      fail(ErrorKind::Data, images_path_, ": holds ", idims[0], " images but ", labels_path_, " holds ", ldims[0],
           " labels");
    if (idims[1] > 16384 || idims[2] > 16384)
      fail(ErrorKind::Data, images_path_, ": image size ", idims[1], "x", idims[2], " is implausibly large");
    count_ = idims[0];
    rows_ = int(idims[1]);
    cols_ = int(idims[2]);
    images_.erase(images_.begin(), images_.begin() + 16);
    labels_.erase(labels_.begin(), labels_.begin() + 8);
    num_classes_ = int(*std::max_element(labels_.begin(), labels_.end())) + 1;
  }

  size_t size() const override { return count_; }
  int label(size_t i) const override { return labels_.at(i); }
  std::string name(size_t i) const override { return cat(images_path_, "#", i); }
  int num_classes() const override { return num_classes_; }
  void load(size_t i, const Preprocess& p, float* out) const override {
    if (i >= count_) fail(ErrorKind::Internal, images_path_, ": sample ", i, " out of range (", count_, " images)");
    Image img;
    img.width = cols_;
    img.height = rows_;
    img.channels = 1;
    const size_t n = size_t(rows_) * size_t(cols_);
    img.pixels.assign(images_.begin() + std::ptrdiff_t(i * n), images_.begin() + std::ptrdiff_t((i + 1) * n));
    preprocess(img, p, out);
  }
  std::string describe() const override {
    return cat("idx ", images_path_, " (", count_, " images ", rows_, "x", cols_, ", ", num_classes_,
               " classes, labels ", labels_path_, ")");
  }

 private:
  std::string images_path_, labels_path_;
  std::vector<uint8_t> images_, labels_;  // payloads, headers removed
  size_t count_ = 0;
  int rows_ = 0, cols_ = 0, num_classes_ = 0;
};

std::string labels_path_for(const std::string& images_path) {
  const fs::path p(images_path);
  std::string name = p.filename().string();
  const bool gz = ends_with(name, ".gz");
  if (gz) name.resize(name.size() - 3);
  name.replace(name.size() - std::string(kImagesSuffix).size(), std::string::npos, kLabelsSuffix);
  // Same compression first, then the other one.
  for (const std::string& cand : {name + (gz ? ".gz" : ""), name + (gz ? "" : ".gz")}) {
    const fs::path lp = p.parent_path() / cand;
    if (std::error_code ec; fs::is_regular_file(lp, ec)) return lp.string();
  }
  fail(ErrorKind::Data, images_path, ": labels file ", (p.parent_path() / name).string(), "[.gz] not found beside it");
}

}  // namespace

bool is_idx_images_name(const std::string& filename) {
  return ends_with(filename, kImagesSuffix) || ends_with(filename, std::string(kImagesSuffix) + ".gz");
}

std::string find_idx_images(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code entry_ec;
    if (is_idx_images_name(it->path().filename().string()) && it->is_regular_file(entry_ec))
      found.push_back(it->path().string());
  }
  if (found.empty()) return "";
  std::sort(found.begin(), found.end());  // .gz after raw: a raw copy wins over its archive
  for (const char* prefix : {"t10k-", "train-"})
    for (const std::string& f : found)
      if (fs::path(f).filename().string().rfind(prefix, 0) == 0) return f;
  if (found.size() == 1) return found[0];
  fail(ErrorKind::Data, dir, ": several IDX images files and none named t10k-* or train-*; give the file itself");
}

std::unique_ptr<Dataset> open_idx(const std::string& images_path) {
  if (!is_idx_images_name(fs::path(images_path).filename().string()))
    fail(ErrorKind::Data, images_path, ": not an IDX images file name (*-images-idx3-ubyte[.gz])");
  return std::make_unique<IdxDataset>(images_path, labels_path_for(images_path));
}

}  // namespace vitq::detail
