// The Python module `vitq._vitq` (pybind11): the models vitq runs — FP32, a plan simulated, a
// quantized model directory in integers or simulated — as objects with predict(), vitq's image
// preprocessing, and the command line run in-process (quantize, export, eval) so that Python
// gets the CLI's options and messages. python/vitq/__init__.py is the user-facing layer.
//
// Errors: vitq::Error becomes vitq.Error (its `exit_code` the CLI's: 2 usage, 3 model/plan,
// 4 data, 5 I/O); the GIL is released while a forward, a preprocessing or a command runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cli/app.h"
#include "cli/commands.h"
#include "core/error.h"
#include "data/image.h"
#include "model/vit_model.h"
#include "runtime/model_runner.h"
#include "runtime/quantized_model.h"

namespace py = pybind11;

namespace vitq {
namespace {

constexpr int kPredictBatch = 32;  // images per forward (bounds the activations' memory)

// One loaded model and the forward that runs it (runtime/model_runner.h decides the engine).
class Model {
 public:
  Model(const std::string& dir, const std::string& plan_path, bool simulate, bool allow_non_finite)
      : runner_(checked(dir, plan_path, simulate), {plan_path, simulate, allow_non_finite}) {}

  const ViTConfig& config() const { return runner_.config(); }
  const std::string& engine() const { return runner_.engine(); }
  std::string method() const { return runner_.plan() ? runner_.plan()->method : ""; }

  // Logits [N, classes] of preprocessed images [N, C, H, W] (or one image [C, H, W]: [classes]).
  py::array_t<float> predict(const py::array& input) {
    const ViTConfig& cfg = config();
    const int C = cfg.in_chans, S = cfg.img_size, K = cfg.num_classes;
    auto shape_str = [&] {
      std::string s = "[";
      for (py::ssize_t d = 0; d < input.ndim(); ++d) s += (d ? ", " : "") + std::to_string(input.shape(d));
      return s + "]";
    };
    const bool single = input.ndim() == 3;
    if ((input.ndim() != 4 && !single) || input.shape(input.ndim() - 3) != C || input.shape(input.ndim() - 2) != S ||
        input.shape(input.ndim() - 1) != S)
      fail(ErrorKind::Usage, "predict: expected preprocessed images [N, ", C, ", ", S, ", ", S, "] (or one [", C, ", ",
           S, ", ", S, "]), got shape ", shape_str());
    if (!py::isinstance<py::array_t<float>>(input) && !py::isinstance<py::array_t<double>>(input))
      fail(ErrorKind::Usage, "predict: expected a float32 array (preprocessed images), got dtype ",
           std::string(py::str(input.dtype())));
    const auto x = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(input);
    const int n = single ? 1 : int(input.shape(0));
    py::array_t<float> out = single ? py::array_t<float>({py::ssize_t(K)}) : py::array_t<float>({py::ssize_t(n), py::ssize_t(K)});
    const float* src = x.data();
    float* dst = out.mutable_data();
    const size_t img = size_t(C) * size_t(S) * size_t(S);
    {
      py::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> lock(mu_);  // the forwards keep their buffers: one call at a time
      for (int i = 0; i < n; i += kPredictBatch)
        runner_.run(src + size_t(i) * img, std::min(kPredictBatch, n - i), dst + size_t(i) * size_t(K));
    }
    return out;
  }

 private:
  // The refusals in the Python keywords' names, before the runner loads anything.
  static const std::string& checked(const std::string& dir, const std::string& plan_path, bool simulate) {
    const bool quantized = is_quantized_model_dir(dir);
    if (quantized && !plan_path.empty())
      fail(ErrorKind::Usage, dir, " is a quantized model directory with its own plan; plan= is for FP32 checkpoints");
    if (!quantized && simulate)
      fail(ErrorKind::Usage, "simulate=True needs a quantized model directory; for an FP32 checkpoint give plan=");
    return dir;
  }
  ModelRunner runner_;
  std::mutex mu_;
};

// 8-bit pixels [H, W] (L) or [H, W, 1 | 3] (RGB) into an Image.
Image image_of(const py::array& a) {
  if (!py::isinstance<py::array_t<uint8_t>>(a))
    fail(ErrorKind::Usage, "preprocess: expected 8-bit pixels (dtype uint8), got dtype ", std::string(py::str(a.dtype())));
  if (a.ndim() != 2 && !(a.ndim() == 3 && (a.shape(2) == 1 || a.shape(2) == 3)))
    fail(ErrorKind::Usage, "preprocess: expected pixels [H, W] (grey) or [H, W, 3] (RGB), got ", a.ndim(), " dimensions");
  if (a.shape(0) < 1 || a.shape(1) < 1) fail(ErrorKind::Usage, "preprocess: the image is empty");
  const auto px = py::array_t<uint8_t, py::array::c_style>::ensure(a);
  Image im;
  im.height = int(a.shape(0));
  im.width = int(a.shape(1));
  im.channels = a.ndim() == 2 ? 1 : int(a.shape(2));
  im.pixels.assign(px.data(), px.data() + px.size());
  return im;
}

py::array_t<float> preprocess_image(const Image& im, const ViTConfig& cfg) {
  const Preprocess& p = cfg.preprocess;
  py::array_t<float> out({py::ssize_t(p.channels), py::ssize_t(p.height), py::ssize_t(p.width)});
  float* dst = out.mutable_data();
  py::gil_scoped_release unlocked;
  preprocess(im, p, dst);
  return out;
}

}  // namespace
}  // namespace vitq

PYBIND11_MODULE(_vitq, m) {
  using namespace vitq;
  m.doc() = "vitq's C++ core (use the vitq package)";
  m.attr("__version__") = VITQ_VERSION;
  static py::exception<Error> error(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object exc = py::reinterpret_borrow<py::object>(error.ptr())(e.what());
      exc.attr("exit_code") = e.exit_code();
      PyErr_SetObject(error.ptr(), exc.ptr());
    }
  });

  py::class_<Model>(m, "Model")
      .def(py::init<const std::string&, const std::string&, bool, bool>(), py::arg("dir"), py::arg("plan") = "",
           py::arg("simulate") = false, py::arg("allow_non_finite") = false)
      .def("predict", &Model::predict, py::arg("images"))
      .def_property_readonly("engine", &Model::engine)
      .def_property_readonly("method", &Model::method)
      .def_property_readonly("config", [](const Model& md) {
        const ViTConfig& c = md.config();
        const Preprocess& p = c.preprocess;
        py::dict d;
        d["architecture"] = c.architecture;
        d["img_size"] = c.img_size;
        d["patch_size"] = c.patch_size;
        d["in_chans"] = c.in_chans;
        d["embed_dim"] = c.embed_dim;
        d["depth"] = c.depth;
        d["num_heads"] = c.num_heads;
        d["num_classes"] = c.num_classes;
        d["interpolation"] = interp_name(p.interp);
        d["crop_pct"] = p.crop_pct;
        d["mean"] = std::vector<float>(p.mean.begin(), p.mean.begin() + p.channels);
        d["std"] = std::vector<float>(p.std.begin(), p.std.begin() + p.channels);
        return d;
      })
      .def("preprocess_file", [](const Model& md, const std::string& path) {
        Image im;
        {
          py::gil_scoped_release unlocked;
          im = decode_image_file(path);
        }
        return preprocess_image(im, md.config());
      })
      .def("preprocess_pixels", [](const Model& md, const py::array& px) { return preprocess_image(image_of(px), md.config()); });

  m.def("run_cli", [](const std::vector<std::string>& args) {
    py::gil_scoped_release unlocked;
    run_app(args);
  }, py::arg("args"), "Runs `vitq args...` in this process; raises vitq.Error with the CLI's message");
  m.def("set_threads", [](int n) { set_threads(n); }, py::arg("threads"),
        "Threads for every later forward and command (0 = all cores)");
}
