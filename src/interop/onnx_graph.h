// A small builder over ONNX's protobuf graph (Debian's libonnx): named initializers and nodes
// whose outputs get unique names, so that an exporter reads as the list of operators it emits.
#pragma once
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace vitq::onnx_export {

// An attribute of a node: an int, a list of ints or a float.
struct Attr {
  std::string name;
  enum Kind { Int, Ints, Float } kind;
  int64_t i = 0;
  std::vector<int64_t> ints;
  float f = 0;
  static Attr of(const char* n, int64_t v) { return {n, Int, v, {}, 0}; }
  static Attr of(const char* n, std::vector<int64_t> v) { return {n, Ints, 0, std::move(v), 0}; }
  static Attr real(const char* n, float v) { return {n, Float, 0, {}, v}; }
};

class Graph {
 public:
  explicit Graph(onnx::GraphProto* g) : g_(g) {}

  // Initializers (constants stored in the model); each returns its name.
  std::string floats(const std::string& name, const std::vector<int64_t>& dims, const float* data);
  std::string scalar(const std::string& name, float v) { return floats(name, {}, &v); }
  std::string int64s(const std::string& name, const std::vector<int64_t>& values);  // a 1-D tensor
  std::string int64_scalar(const std::string& name, int64_t v);                     // a 0-D tensor
  std::string int8s(const std::string& name, const std::vector<int64_t>& dims, const int8_t* data);
  // An all-zero INT8 or UINT8 tensor (a QuantizeLinear zero point); dims {} for a scalar.
  std::string zeros(const std::string& name, const std::vector<int64_t>& dims, int elem_type);
  // Any initializer from raw little-endian bytes (nullptr: zeros); the others call it.
  std::string raw(const std::string& name, int elem_type, const std::vector<int64_t>& dims, size_t elem_bytes,
                  const void* bytes);

  // Adds node `op` reading `inputs`; returns the name of its (first) output, "<scope>/<op>_<k>".
  std::string op(const std::string& op_type, std::initializer_list<std::string> inputs,
                 const std::vector<Attr>& attrs = {}, int outputs = 1);
  // The names of the outputs of the last node added (for nodes with several outputs).
  const std::vector<std::string>& last_outputs() const { return last_; }

  void set_scope(const std::string& s) { scope_ = s; }
  void input(const std::string& name, int elem_type, const std::vector<std::string>& dims);
  void output(const std::string& name, int elem_type, const std::vector<std::string>& dims);
  // Renames the output of the node that produced `value` (e.g. to a graph output's name).
  void rename(const std::string& value, const std::string& to);

 private:
  void add_value_info(onnx::ValueInfoProto* v, const std::string& name, int elem_type,
                      const std::vector<std::string>& dims);
  onnx::GraphProto* g_;
  std::string scope_;
  int counter_ = 0;
  std::vector<std::string> last_;
};

}  // namespace vitq::onnx_export
