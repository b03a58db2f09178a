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
// In a directory: the IDX images file to use, and why (for reports). For evaluation the test
// split's images file (t10k-*) if present, else train-*; for calibration train-* first, then
// t10k-* (calibrating on the evaluation set would flatter the accuracy); else the only
// *-images-idx3-ubyte[.gz] file. None: path "". Several candidates: Error(Data).
struct IdxChoice {
  std::string path, why;
};
IdxChoice find_idx_images(const std::string& dir, DatasetUse use = DatasetUse::Evaluation);
// Opens an IDX images file and, unless opt.use is Calibration, the labels file beside it.
// `chosen` (why this file, e.g. from find_idx_images) goes into describe().
std::unique_ptr<Dataset> open_idx(const std::string& images_path, const DatasetOptions& opt = {},
                                  const std::string& chosen = "");

}  // namespace vitq::detail
