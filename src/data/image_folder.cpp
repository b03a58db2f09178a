// ImageFolder datasets: root/<class folder>/**/<image>, as torchvision and timm read them.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <system_error>

#include "core/error.h"
#include "data/dataset_internal.h"

namespace fs = std::filesystem;

namespace vitq::detail {
namespace {

bool is_hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// The directory's path without a trailing separator, so that parent_path() is its parent.
fs::path normalised_dir(const std::string& root) {
  fs::path p = fs::absolute(fs::path(root)).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

struct Sample {
  std::string path;
  int label;
};

// Image files under `dir`, recursively (symlinks followed, hidden entries skipped).
void collect_images(const fs::path& dir, int label, std::vector<Sample>* out) {
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec);
  if (ec) fail(ErrorKind::Data, dir.string(), ": cannot list directory: ", ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) fail(ErrorKind::Data, dir.string(), ": cannot list directory: ", ec.message());
    const fs::path& p = it->path();
    std::error_code entry_ec;  // a broken symlink is skipped, not an error
    if (is_hidden(p)) {
      if (it->is_directory(entry_ec)) it.disable_recursion_pending();
      continue;
    }
    if (it.depth() > 16) it.disable_recursion_pending();  // guards against symlink cycles
    if (it->is_regular_file(entry_ec) && has_image_extension(p)) out->push_back({p.string(), label});
  }
}

class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(std::string root, std::vector<Sample> samples, int num_classes, std::string classes_from,
                     bool from_folder_names)
      : root_(std::move(root)), samples_(std::move(samples)), num_classes_(num_classes),
        classes_from_(std::move(classes_from)), from_folder_names_(from_folder_names) {}

  size_t size() const override { return samples_.size(); }
  int label(size_t i) const override { return samples_.at(i).label; }
  std::string name(size_t i) const override { return samples_.at(i).path; }
  int num_classes() const override { return num_classes_; }
  void load(size_t i, const Preprocess& p, float* out) const override {
    preprocess(decode_image_file(samples_.at(i).path), p, out);
  }
  bool classes_from_folder_names() const override { return from_folder_names_; }
  std::string describe() const override {
    return cat("imagefolder ", root_, " (", samples_.size(), " images, ", num_classes_, " classes, ", classes_from_,
               ")");
  }

 private:
  std::string root_;
  std::vector<Sample> samples_;
  int num_classes_;
  std::string classes_from_;
  bool from_folder_names_;
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& root, const DatasetOptions& opt) {
  const fs::path dir = normalised_dir(root);
  std::vector<std::string> folders;  // class folder names, sorted
  bool has_loose_images = false;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_hidden(it->path())) continue;  // e.g. .ipynb_checkpoints is not a class
    std::error_code entry_ec;
    if (it->is_directory(entry_ec)) folders.push_back(it->path().filename().string());
    else if (has_image_extension(it->path())) has_loose_images = true;
  }
  if (ec) fail(ErrorKind::Data, root, ": cannot list directory: ", ec.message());
  if (folders.empty())
    fail(ErrorKind::Data, root, ": no class folders", has_loose_images ? " (it holds images directly; an ImageFolder "
                                                                         "dataset needs one folder per class)" : "");
  std::sort(folders.begin(), folders.end());

  // Class indices: from a class map if one is given or found, else the sorted folder names.
  std::string map_path = opt.class_map;
  if (map_path.empty() && opt.auto_class_map) {
    for (const fs::path& cand : {dir / "class_map.txt", dir.parent_path() / "class_map.txt"})
      if (std::error_code cand_ec; fs::is_regular_file(cand, cand_ec)) {
        map_path = cand.string();
        break;
      }
  }
  std::map<std::string, int> class_index;
  int num_classes = 0;
  std::string classes_from;
  if (!map_path.empty()) {
    ClassMap map = read_class_map(map_path);
    for (int i = 0; i < map.num_classes(); ++i)
      if (!map.names[size_t(i)].empty()) class_index[map.names[size_t(i)]] = i;
    for (const std::string& f : folders)
      if (!class_index.count(f))
        fail(ErrorKind::Data, root, ": class folder '", f, "' is not in the class map ", map_path);
    num_classes = map.num_classes();
    classes_from = "class map " + map_path;
  } else {
    for (size_t i = 0; i < folders.size(); ++i) class_index[folders[i]] = int(i);
    num_classes = int(folders.size());
    classes_from = "classes = sorted folder names";
  }

  std::vector<Sample> samples;
  for (const std::string& f : folders) {
    const size_t before = samples.size();
    collect_images(dir / f, class_index.at(f), &samples);
    // Without a map an empty folder would still take an index (torchvision refuses it too).
    if (samples.size() == before && map_path.empty())
      fail(ErrorKind::Data, root, ": class folder '", f, "' holds no .jpg/.jpeg/.png image");
  }
  if (samples.empty()) fail(ErrorKind::Data, root, ": no .jpg/.jpeg/.png images in the class folders");
  std::sort(samples.begin(), samples.end(), [](const Sample& a, const Sample& b) { return a.path < b.path; });
  return std::make_unique<ImageFolderDataset>(dir.string(), std::move(samples), num_classes, classes_from,
                                              map_path.empty());
}

}  // namespace vitq::detail
