// Internal to src/data (and its unit tests): the dataset kinds behind open_dataset.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace vitq::detail {

// A parsed class map: names[i] is the folder of class i ("" for a blank line).
struct ClassMap {
  std::string path;
  std::vector<std::string> names;
  int num_classes() const { return static_cast<int>(names.size()); }
};

// Reads a class map (one folder name per line, index = 0-based line number). Surrounding
// whitespace and "\r" are stripped; blank lines keep their index but name no class, blank
// lines at the end are dropped. Duplicate names and a map without names are Error(Data).
ClassMap read_class_map(const std::string& path);

std::unique_ptr<Dataset> open_image_folder(const std::string& root, const DatasetOptions& opt);

// True for "<prefix>-images-idx3-ubyte" and "<prefix>-images-idx3-ubyte.gz".
bool is_idx_images_name(const std::string& filename);
// In a directory: the test split's images file (t10k-*) if present, else train-*, else the only
// *-images-idx3-ubyte[.gz] file; "" if there is none. Several candidates: Error(Data).
std::string find_idx_images(const std::string& dir);
// Opens an IDX images file and the labels file beside it.
std::unique_ptr<Dataset> open_idx(const std::string& images_path);

}  // namespace vitq::detail
