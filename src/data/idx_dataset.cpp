// IDX datasets (MNIST, Fashion-MNIST): an images file (magic 0x00000803: unsigned bytes,
// 3 dimensions N x rows x cols) and a labels file (0x00000801: N unsigned bytes), big-endian
// 32-bit dimensions, raw or gzip-compressed (zlib's gzread reads both). The payloads are held
// in memory (Fashion-MNIST's test split is 7.8 MB), which also validates them completely
// before any sample is used. Each file is read as a stream: its header first, validated
// (magic, dimensions, the declared size against limits::kMaxIdxBytes and against what the
// file can hold: a raw file's size exactly, a gzip file's size times deflate's maximum ratio),
// and only then exactly the declared data, so that memory follows the real data, never a
// hostile header.
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "data/dataset_internal.h"
#include "core/limits.h"

namespace fs = std::filesystem;

namespace vitq::detail {
namespace {

constexpr const char* kImagesSuffix = "-images-idx3-ubyte";
constexpr const char* kLabelsSuffix = "-labels-idx1-ubyte";
// Deflate expands at most 1032:1 (258-byte matches coded in 2 bits); a gzip file of n bytes
// cannot hold more than this times n bytes of data (plus a little for tiny files).
constexpr uint64_t kMaxDeflateRatio = 1032;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};

// One IDX file of unsigned bytes, read as a stream: open() then header() then payload().
class IdxReader {
 public:
  IdxReader(std::string path, int ndims) : path_(std::move(path)), ndims_(ndims) {
    struct stat st {};
    if (stat(path_.c_str(), &st) != 0) fail(ErrorKind::Data, path_, ": cannot open");
    file_bytes_ = uint64_t(st.st_size);
    f_.reset(gzopen(path_.c_str(), "rb"));
    if (!f_) fail(ErrorKind::Data, path_, ": cannot open");
  }

  // Reads and validates the header; returns the dimensions. Nothing past the header is read.
  std::vector<uint32_t> header() {
    uint8_t h[4 + 4 * 3];
    const size_t header_bytes = 4 + 4 * size_t(ndims_);
    const size_t got = read(h, 4);
    if (got < 4) fail(ErrorKind::Data, path_, ": file too short for an IDX header (", got, " bytes)");
    if (h[0] != 0 || h[1] != 0)
      fail(ErrorKind::Data, path_, ": bad IDX magic (first two bytes must be 0; not an IDX file?)");
    if (h[2] != 0x08)
      fail(ErrorKind::Data, path_, ": IDX data type 0x", std::hex, int(h[2]), " is not unsigned byte (0x08)");
    if (h[3] != ndims_)
      fail(ErrorKind::Data, path_, ": IDX file has ", int(h[3]), " dimensions, expected ", ndims_,
           ndims_ == 3 ? " (images: count, rows, columns)" : " (labels: count)");
    if (read(h + 4, header_bytes - 4) < header_bytes - 4)
      fail(ErrorKind::Data, path_, ": file is truncated inside the IDX header");
    std::vector<uint32_t> dims(static_cast<size_t>(ndims_));
    payload_ = 1;
    for (int i = 0; i < ndims_; ++i) {
      dims[size_t(i)] = be32(&h[4 + 4 * size_t(i)]);
      if (dims[size_t(i)] == 0) fail(ErrorKind::Data, path_, ": IDX dimension ", i, " is 0");
      payload_ *= dims[size_t(i)];  // < 2^96 would overflow; checked against the limit at each step
      if (payload_ > limits::kMaxIdxBytes)
        fail(ErrorKind::Data, path_, ": IDX dimensions ", dims_text(h), " declare more than the limit of ",
             limits::kMaxIdxBytes, " bytes of data (", limits::kMaxIdxBytes >> 20, " MiB)");
    }
    const uint64_t total = header_bytes + payload_;
    if (gzdirect(f_.get())) {  // raw: the file's size must be exactly header + data
      if (file_bytes_ < total)
        fail(ErrorKind::Data, path_, ": file is truncated: the header (", dims_text(h), ") announces ", payload_,
             " bytes of data, the file has ", file_bytes_ - header_bytes);
      if (file_bytes_ > total)
        fail(ErrorKind::Data, path_, ": ", file_bytes_ - total, " unexpected bytes after the IDX data");
    } else if (total > file_bytes_ * kMaxDeflateRatio + 4096) {
      fail(ErrorKind::Data, path_, ": file is truncated: the header (", dims_text(h), ") announces ", payload_,
           " bytes of data, more than a gzip file of ", file_bytes_, " bytes can hold");
    }
    return dims;
  }

  // Reads exactly the declared data and checks that nothing follows it.
  std::vector<uint8_t> payload() {
    std::vector<uint8_t> data;
    data.reserve(size_t(std::min<uint64_t>(payload_, uint64_t(64) << 20)));
    constexpr size_t kStep = size_t(16) << 20;
    while (data.size() < payload_) {
      const size_t want = size_t(std::min<uint64_t>(payload_ - data.size(), kStep));
      const size_t have = data.size();
      data.resize(have + want);
      const size_t got = read(data.data() + have, want);
      data.resize(have + got);
      if (got < want) break;
    }
    if (data.size() < payload_)
      fail(ErrorKind::Data, path_, ": file is truncated: the header announces ", payload_,
           " bytes of data, the file has ", data.size());
    uint8_t extra[1];
    if (read(extra, 1) != 0) fail(ErrorKind::Data, path_, ": unexpected bytes after the IDX data");
    return data;
  }

 private:
  // Reads up to n bytes; fewer only at the end of the data. A corrupt or truncated gzip
  // stream is an error.
  size_t read(uint8_t* out, size_t n) {
    size_t done = 0;
    while (done < n) {
      const int got = gzread(f_.get(), out + done, unsigned(n - done));
      if (got < 0) {
        int errnum = 0;
        const char* msg = gzerror(f_.get(), &errnum);
        fail(ErrorKind::Data, path_, ": cannot read (corrupt gzip data?): ", msg ? msg : "unknown error");
      }
      if (got == 0) break;
      done += size_t(got);
    }
    if (done < n) {
      // A gzip stream cut short reads as a clean end of file plus a Z_BUF_ERROR.
      int errnum = Z_OK;
      const char* msg = gzerror(f_.get(), &errnum);
      if (errnum != Z_OK && errnum != Z_STREAM_END)
        fail(ErrorKind::Data, path_, ": gzip stream is truncated or corrupt: ", msg ? msg : "unknown error");
    }
    return done;
  }

  std::string dims_text(const uint8_t* h) const {
    std::string t;
    for (int i = 0; i < ndims_; ++i) t += (i ? " x " : "") + std::to_string(be32(&h[4 + 4 * size_t(i)]));
    return t;
  }

  std::string path_;
  int ndims_;
  uint64_t file_bytes_ = 0, payload_ = 0;
  std::unique_ptr<gzFile_s, GzCloser> f_;
};

class IdxDataset : public Dataset {
 public:
  // labels_path "": no labels (calibration); label() is then -1 and num_classes() 0.
  IdxDataset(std::string images_path, std::string labels_path, std::string chosen)
      : images_path_(std::move(images_path)), labels_path_(std::move(labels_path)), chosen_(std::move(chosen)) {
    IdxReader images(images_path_, 3);
    const std::vector<uint32_t> idims = images.header();
    if (idims[1] > limits::kMaxIdxImageSide || idims[2] > limits::kMaxIdxImageSide)
      fail(ErrorKind::Data, images_path_, ": image size ", idims[1], "x", idims[2], " is above the limit of ",
           limits::kMaxIdxImageSide, " per side");
    if (!labels_path_.empty()) {
      IdxReader labels(labels_path_, 1);
      const std::vector<uint32_t> ldims = labels.header();
      if (idims[0] != ldims[0])
        fail(ErrorKind::Data, images_path_, ": holds ", idims[0], " images but ", labels_path_, " holds ", ldims[0],
             " labels");
      labels_ = labels.payload();
      num_classes_ = int(*std::max_element(labels_.begin(), labels_.end())) + 1;
    }
    images_ = images.payload();
    count_ = idims[0];
    rows_ = int(idims[1]);
    cols_ = int(idims[2]);
  }

  size_t size() const override { return count_; }
  int label(size_t i) const override { return labels_.empty() ? -1 : int(labels_.at(i)); }
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
    return cat("idx ", images_path_, " (", count_, " images ", rows_, "x", cols_, ", ",
               labels_path_.empty() ? std::string("labels not read") : cat(num_classes_, " classes, labels ", labels_path_),
               chosen_.empty() ? "" : "; " + chosen_, ")");
  }

 private:
  std::string images_path_, labels_path_, chosen_;
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

IdxChoice find_idx_images(const std::string& dir, DatasetUse use) {
  std::vector<std::string> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code entry_ec;
    if (is_idx_images_name(it->path().filename().string()) && it->is_regular_file(entry_ec))
      found.push_back(it->path().string());
  }
  if (found.empty()) return {};
  std::sort(found.begin(), found.end());  // .gz after raw: a raw copy wins over its archive
  const bool calib = use == DatasetUse::Calibration;
  const char* const want = calib ? "train-" : "t10k-";
  const char* const other = calib ? "t10k-" : "train-";
  const char* const purpose = calib ? "calibration" : "evaluation";
  auto named = [&](const char* prefix) -> std::string {
    for (const std::string& f : found)
      if (fs::path(f).filename().string().rfind(prefix, 0) == 0) return f;
    return "";
  };
  if (std::string f = named(want); !f.empty())
    return {f, cat(calib ? "the training split" : "the test split", " (", want, "*), chosen in ", dir, " for ",
                   purpose)};
  if (std::string f = named(other); !f.empty())
    return {f, cat(calib ? "the test split" : "the training split", " (", other, "*): ", dir, " has no ", want,
                   "* file for ", purpose)};
  if (found.size() == 1) return {found[0], cat("the only IDX images file in ", dir)};
  fail(ErrorKind::Data, dir, ": several IDX images files and none named t10k-* or train-*; give the file itself");
}

std::unique_ptr<Dataset> open_idx(const std::string& images_path, const DatasetOptions& opt, const std::string& chosen) {
  if (!is_idx_images_name(fs::path(images_path).filename().string()))
    fail(ErrorKind::Data, images_path, ": not an IDX images file name (*-images-idx3-ubyte[.gz])");
  // Calibration uses the images only: it does not need (or read) the labels file.
  const std::string labels = opt.use == DatasetUse::Calibration ? "" : labels_path_for(images_path);
  return std::make_unique<IdxDataset>(images_path, labels, chosen);
}

}  // namespace vitq::detail
