// open_dataset: decides what kind of dataset a path is (see dataset.h).
#include <filesystem>

#include "core/error.h"
#include "data/dataset_internal.h"

namespace fs = std::filesystem;

namespace vitq {

std::unique_ptr<Dataset> open_dataset(const std::string& path, const DatasetOptions& opt) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) fail(ErrorKind::Data, path, ": dataset not found");
  if (fs::is_regular_file(st)) {
    if (detail::is_idx_images_name(fs::path(path).filename().string())) return detail::open_idx(path, opt);
    fail(ErrorKind::Data, path,
         ": not a dataset (expected a directory of class folders, or an IDX images file "
         "*-images-idx3-ubyte[.gz])");
  }
  if (!fs::is_directory(st)) fail(ErrorKind::Data, path, ": not a file or directory");
  const detail::IdxChoice idx = detail::find_idx_images(path, opt.use);
  if (!idx.path.empty()) return detail::open_idx(idx.path, opt, idx.why);
  return detail::open_image_folder(path, opt);
}

}  // namespace vitq
