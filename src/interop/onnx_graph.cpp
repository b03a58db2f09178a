#include "interop/onnx_graph.h"

#include "core/error.h"

namespace vitq::onnx_export {

// An initializer of `elem_type` with `dims`, its content `bytes` stored raw (little-endian, as
// ONNX's raw_data is); the byte count must match the dims.
std::string Graph::raw(const std::string& name, int elem_type, const std::vector<int64_t>& dims, size_t elem_bytes,
                       const void* bytes) {
  onnx::TensorProto* t = g_->add_initializer();
  t->set_name(name);
  t->set_data_type(elem_type);
  size_t n = 1;
  for (int64_t d : dims) t->add_dims(d), n *= size_t(d);
  if (bytes) t->set_raw_data(std::string(static_cast<const char*>(bytes), n * elem_bytes));
  else t->set_raw_data(std::string(n * elem_bytes, '\0'));
  return name;
}

std::string Graph::floats(const std::string& name, const std::vector<int64_t>& dims, const float* data) {
  return raw(name, onnx::TensorProto::FLOAT, dims, sizeof(float), data);
}

std::string Graph::int64s(const std::string& name, const std::vector<int64_t>& values) {
  return raw(name, onnx::TensorProto::INT64, {int64_t(values.size())}, sizeof(int64_t), values.data());
}

std::string Graph::int64_scalar(const std::string& name, int64_t v) {
  return raw(name, onnx::TensorProto::INT64, {}, sizeof(int64_t), &v);
}

std::string Graph::int8s(const std::string& name, const std::vector<int64_t>& dims, const int8_t* data) {
  return raw(name, onnx::TensorProto::INT8, dims, 1, data);
}

std::string Graph::zeros(const std::string& name, const std::vector<int64_t>& dims, int elem_type) {
  return raw(name, elem_type, dims, 1, nullptr);  // INT8 / UINT8: one byte each
}

std::string Graph::op(const std::string& op_type, std::initializer_list<std::string> inputs,
                      const std::vector<Attr>& attrs, int outputs) {
  onnx::NodeProto* n = g_->add_node();
  n->set_op_type(op_type);
  const std::string base = (scope_.empty() ? "" : scope_ + "/") + op_type + "_" + std::to_string(counter_++);
  n->set_name(base);
  for (const std::string& in : inputs) n->add_input(in);
  last_.clear();
  for (int k = 0; k < outputs; ++k) {
    last_.push_back(outputs == 1 ? base : base + ":" + std::to_string(k));
    n->add_output(last_.back());
  }
  for (const Attr& a : attrs) {
    onnx::AttributeProto* p = n->add_attribute();
    p->set_name(a.name);
    switch (a.kind) {
      case Attr::Int:
        p->set_type(onnx::AttributeProto::INT);
        p->set_i(a.i);
        break;
      case Attr::Ints:
        p->set_type(onnx::AttributeProto::INTS);
        for (int64_t v : a.ints) p->add_ints(v);
        break;
      case Attr::Float:
        p->set_type(onnx::AttributeProto::FLOAT);
        p->set_f(a.f);
        break;
    }
  }
  return last_.front();
}

void Graph::add_value_info(onnx::ValueInfoProto* v, const std::string& name, int elem_type,
                           const std::vector<std::string>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(elem_type);
  for (const std::string& d : dims) {
    onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
    if (!d.empty() && d.find_first_not_of("0123456789") == std::string::npos) dim->set_dim_value(std::stoll(d));
    else dim->set_dim_param(d);
  }
}

void Graph::input(const std::string& name, int elem_type, const std::vector<std::string>& dims) {
  add_value_info(g_->add_input(), name, elem_type, dims);
}

void Graph::output(const std::string& name, int elem_type, const std::vector<std::string>& dims) {
  add_value_info(g_->add_output(), name, elem_type, dims);
}

void Graph::rename(const std::string& value, const std::string& to) {
  for (onnx::NodeProto& n : *g_->mutable_node()) {
    for (std::string& o : *n.mutable_output())
      if (o == value) o = to;
    for (std::string& i : *n.mutable_input())
      if (i == value) i = to;
  }
}

}  // namespace vitq::onnx_export
