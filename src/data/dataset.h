// Labelled image datasets: ImageFolder trees (timm/torchvision layout, optional class map)
// and MNIST/Fashion-MNIST IDX files. Samples are loaded one at a time, preprocessed into a
// caller-provided buffer, so memory stays proportional to a batch (IDX files, small by
// nature, are read whole when opened, after their header is checked against core/limits.h).
// All const methods are safe to call concurrently.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"

namespace vitq {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual int label(size_t i) const = 0;
  virtual std::string name(size_t i) const = 0;  // path, or "file.idx.gz#index"
  virtual int num_classes() const = 0;
  // Loads and preprocesses sample i into out (p.channels * p.height * p.width floats).
  // Throws Error(Data) naming the sample for a corrupt or unreadable image.
  virtual void load(size_t i, const Preprocess& p, float* out) const = 0;
  // What the dataset is, for reports: "imagefolder /path (400 images, 1000 classes, class map X)".
  virtual std::string describe() const = 0;
  // True when the labels are the indices of the sorted class folder names (an ImageFolder
  // without a class map): they match a model's classes only if the folders are all of them.
  virtual bool classes_from_folder_names() const { return false; }
};

// What a dataset is opened for. It decides the split of a directory of IDX files and whether
// labels are needed (see open_dataset).
enum class DatasetUse { Evaluation, Calibration };

struct DatasetOptions {
  std::string class_map;       // explicit class map file; empty: auto-detect (see open_dataset)
  bool auto_class_map = true;  // look for class_map.txt in the root and its parent
  DatasetUse use = DatasetUse::Evaluation;
};

// Opens `path`:
//  - a directory containing class subdirectories: ImageFolder. Classes are the sorted
//    subdirectory names, or, with a class map (one folder name per line, index = 0-based
//    line number), the map's indices; a class_map.txt in the root or its parent is used when
//    no map is given. Image files: .jpg .jpeg .png (case-insensitive), searched recursively
//    in each class folder, sorted by path. Entries whose name starts with '.' are ignored.
//    Class map lines are stripped of surrounding whitespace; a blank line keeps its index but
//    names no class; num_classes = the map's last named index + 1. A class folder missing
//    from the map, a duplicate name in the map, a class folder without images (when there is
//    no map: it would shift the indices) and an empty dataset are Error(Data).
//  - an IDX images file (`*-images-idx3-ubyte[.gz]`, its labels file found beside it by name:
//    `*-labels-idx1-ubyte[.gz]`), or a directory holding such files. From a directory, for
//    Evaluation the test split (`t10k-*`) if present, else `train-*`; for Calibration the
//    training split (`train-*`) if present, else `t10k-*`; describe() says which and why.
//    MNIST and Fashion-MNIST use this layout. For Calibration the labels file is neither
//    needed nor read (label() is -1, num_classes() 0).
//    Images are L (rows x cols) and go through preprocess() like any image (grey replicated
//    for a 3-channel model); num_classes = max label + 1. Bad magic, type, dimensions,
//    mismatched counts, truncated or oversized files are Error(Data); the header is checked
//    against the limits of core/limits.h and the file's size before the data is read.
// Throws Error(Data) naming the path for anything else.
std::unique_ptr<Dataset> open_dataset(const std::string& path, const DatasetOptions& opt = {});

// Deterministic subset: if limit == 0 or limit >= n, all indices in order; otherwise `limit`
// indices drawn without replacement by a seeded shuffle (std::mt19937_64, Fisher-Yates with
// its own bounded draw so the result is the same on every platform), then sorted.
// Exactly: rng = mt19937_64(seed); idx = [0, n); for i in [0, limit): j = i + draw(n - i);
// swap(idx[i], idx[j]); the result is sorted(idx[0:limit]). draw(b) takes r = rng() until
// r >= 2^64 mod b and returns r mod b (unbiased).
std::vector<size_t> select_subset(size_t n, size_t limit, uint64_t seed);

}  // namespace vitq
