// Class map files (timm's --class-map convention: line i names the folder of class i).
#include <fstream>
#include <map>

#include "core/error.h"
#include "data/dataset_internal.h"

namespace vitq::detail {
namespace {

std::string strip(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

ClassMap read_class_map(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::Data, path, ": cannot open class map");
  ClassMap map;
  map.path = path;
  std::map<std::string, size_t> seen;  // name -> line index
  std::string line;
  while (std::getline(in, line)) {
    std::string name = strip(line);
    if (!name.empty()) {
      auto [it, inserted] = seen.emplace(name, map.names.size());
      if (!inserted)
        fail(ErrorKind::Data, path, ": class '", name, "' appears on lines ", it->second + 1, " and ",
             map.names.size() + 1);
    }
    map.names.push_back(std::move(name));
  }
  if (in.bad()) fail(ErrorKind::Data, path, ": cannot read class map");
  while (!map.names.empty() && map.names.back().empty()) map.names.pop_back();
  if (map.names.empty()) fail(ErrorKind::Data, path, ": class map names no class");
  return map;
}

}  // namespace vitq::detail
