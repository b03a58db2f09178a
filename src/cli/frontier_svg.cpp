#include "cli/frontier_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace vitq {

namespace {

constexpr double kW = 760, kH = 460, kLeft = 78, kRight = 24, kTop = 48, kBottom = 96;

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}

// Plot coordinates: x linear (MB or ms), y logarithmic in KL.
struct Axes {
  double x0, x1, ly0, ly1;  // data ranges (ly: log10 KL)
  double px(double mb) const { return kLeft + (mb - x0) / (x1 - x0) * (kW - kLeft - kRight); }
  double py(double kl) const { return kTop + (ly1 - std::log10(kl)) / (ly1 - ly0) * (kH - kTop - kBottom); }
};

// The x value of a report point (its fields `prefix`latency_ms / `prefix`weight_bits): MB of block
// weights, or predicted ms per image for a latency budget (the frontier's resource).
struct XAxis {
  bool latency = false;
  double of(const nlohmann::ordered_json& p, const std::string& prefix = "") const {
    return latency ? p[prefix + "latency_ms"].get<double>() : p[prefix + "weight_bits"].get<double>() / 8.0 / 1e6;
  }
  const char* label() const {
    return latency ? "predicted latency of the integer model (ms/image, latency table)"
                   : "weight size of the transformer blocks (MB)";
  }
};

}  // namespace

std::string frontier_svg(const nlohmann::ordered_json& r, const std::string& title) {
  if (!r.contains("frontier") || !r.contains("uniform_widths"))
    fail(ErrorKind::Internal, "frontier_svg: not an end-to-end mixed-precision report");
  const nlohmann::ordered_json budget = r.value("budget", nlohmann::ordered_json::object());
  const XAxis xa{budget.value("resource", std::string("size")) == "latency"};
  const bool kl_floor = budget.value("kind", std::string("size")) == "kl";
  // Ranges over everything drawn; KL floored at a positive value (a predicted KL can be ≤ 0).
  std::vector<double> xs, ks;
  auto add = [&](const nlohmann::ordered_json& p, const char* kl) {
    xs.push_back(xa.of(p));
    if (p[kl].get<double>() > 0) ks.push_back(p[kl].get<double>());
  };
  for (const auto& p : r["frontier"]) add(p, "predicted_kl");
  for (const auto& p : r["checked"]) add(p, "kl");
  for (const auto& p : r["uniform_widths"]) add(p, "kl");
  if (kl_floor) ks.push_back(budget["kl"].get<double>());
  const double budget_x = kl_floor ? 0.0 : xa.of(budget);
  if (!kl_floor) xs.push_back(budget_x);
  if (ks.empty()) ks.push_back(1);
  const auto [xmin, xmax] = std::minmax_element(xs.begin(), xs.end());
  const auto [kmin, kmax] = std::minmax_element(ks.begin(), ks.end());
  const double floor_kl = *kmin / 2;
  const double pad = std::max(1e-9, (*xmax - *xmin) * 0.04);
  Axes ax{*xmin - pad, *xmax + pad, std::floor(std::log10(floor_kl)), std::ceil(std::log10(*kmax * 1.05))};
  if (ax.ly1 <= ax.ly0) ax.ly1 = ax.ly0 + 1;
  auto kl_of = [&](double v) { return std::max(v, floor_kl); };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(kW) << "\" height=\"" << num(kH) <<
                  "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << num(kW / 2) << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" << escape(title) << "</text>\n";
  // Axes, decade grid lines on y, five ticks on x.
  const double bottom = kH - kBottom, right = kW - kRight;
  for (double d = ax.ly0; d <= ax.ly1 + 1e-9; d += 1) {
    const double y = ax.py(std::pow(10.0, d));
    o << "<line x1=\"" << num(kLeft) << "\" y1=\"" << num(y) << "\" x2=\"" << num(right) << "\" y2=\"" << num(y) <<
         "\" stroke=\"#ddd\"/><text x=\"" << num(kLeft - 6) << "\" y=\"" << num(y + 4) << "\" text-anchor=\"end\">1e" <<
         std::to_string(int(d)) << "</text>\n";
  }
  for (int i = 0; i <= 4; ++i) {
    const double v = ax.x0 + (ax.x1 - ax.x0) * i / 4, x = ax.px(v);
    o << "<line x1=\"" << num(x) << "\" y1=\"" << num(bottom) << "\" x2=\"" << num(x) << "\" y2=\"" << num(bottom + 5) <<
         "\" stroke=\"black\"/><text x=\"" << num(x) << "\" y=\"" << num(bottom + 18) << "\" text-anchor=\"middle\">" <<
         num(v) << "</text>\n";
  }
  o << "<rect x=\"" << num(kLeft) << "\" y=\"" << num(kTop) << "\" width=\"" << num(right - kLeft) << "\" height=\"" <<
       num(bottom - kTop) << "\" fill=\"none\" stroke=\"black\"/>\n";
  o << "<text x=\"" << num((kLeft + right) / 2) << "\" y=\"" << num(bottom + 36) <<
       "\" text-anchor=\"middle\">" << xa.label() << "</text>\n";
  o << "<text transform=\"translate(18," << num((kTop + bottom) / 2) <<
       ") rotate(-90)\" text-anchor=\"middle\">KL(FP32 || quantized), network output</text>\n";
  // Budget: a size or latency bound (vertical), or the KL floor (horizontal).
  if (kl_floor) {
    const double by = ax.py(kl_of(budget["kl"].get<double>()));
    o << "<line class=\"budget\" x1=\"" << num(kLeft) << "\" y1=\"" << num(by) << "\" x2=\"" << num(right) <<
         "\" y2=\"" << num(by) << "\" stroke=\"#888\" stroke-dasharray=\"5,4\"/>\n";
  } else {
    const double bx = ax.px(budget_x);
    o << "<line class=\"budget\" x1=\"" << num(bx) << "\" y1=\"" << num(kTop) << "\" x2=\"" << num(bx) <<
         "\" y2=\"" << num(bottom) << "\" stroke=\"#888\" stroke-dasharray=\"5,4\"/>\n";
  }
  // The frontier as predicted.
  o << "<polyline class=\"frontier\" points=\"";
  for (size_t i = 0; i < r["frontier"].size(); ++i) {
    const auto& p = r["frontier"][i];
    o << (i ? " " : "") << num(ax.px(xa.of(p))) << "," << num(ax.py(kl_of(p["predicted_kl"].get<double>())));
  }
  o << "\" fill=\"none\" stroke=\"#999\" stroke-width=\"1.5\"/>\n";
  // Uniform plans of each width.
  for (const auto& p : r["uniform_widths"]) {
    const double x = ax.px(xa.of(p)), y = ax.py(kl_of(p["kl"].get<double>()));
    const std::string b = std::to_string(p["bits"].get<int>());
    o << "<rect class=\"uniform\" x=\"" << num(x - 5) << "\" y=\"" << num(y - 5) <<
         "\" width=\"10\" height=\"10\" fill=\"#e8871e\"/><text x=\"" << num(x + 8) << "\" y=\"" << num(y - 7) <<
         "\" fill=\"#b35f00\">W" << b << "A" << b << "</text>\n";
  }
  // Frontier points measured.
  for (const auto& p : r["checked"])
    o << "<circle class=\"checked\" cx=\"" << num(ax.px(xa.of(p))) << "\" cy=\"" <<
         num(ax.py(kl_of(p["kl"].get<double>()))) << "\" r=\"4\" fill=\"#1f6fd1\"/>\n";
  // The plan kept, as measured on the check images.
  const std::string final = r.value("final", std::string());
  const double kept_kl = final.rfind("recalibrated", 0) == 0 ? r["recalibrated_kl"].get<double>()
                         : final.rfind("composed", 0) == 0   ? r["chosen_kl_composed"].get<double>()
                                                             : r["uniform_kl"].get<double>();
  o << "<circle class=\"chosen\" cx=\"" << num(ax.px(xa.of(r, "chosen_"))) << "\" cy=\"" <<
       num(ax.py(kl_of(kept_kl))) << "\" r=\"9\" fill=\"none\" stroke=\"#d12f1f\" stroke-width=\"2.5\"/>\n";
  // Legend.
  const double ly = kH - 30;
  o << "<polyline points=\"" << num(kLeft) << "," << num(ly) << " " << num(kLeft + 24) << "," << num(ly) <<
       "\" stroke=\"#999\" stroke-width=\"1.5\"/><text x=\"" << num(kLeft + 30) << "\" y=\"" << num(ly + 4) <<
       "\">frontier, predicted from module costs</text>\n";
  o << "<circle cx=\"" << num(kLeft + 262) << "\" cy=\"" << num(ly) << "\" r=\"4\" fill=\"#1f6fd1\"/><text x=\"" <<
       num(kLeft + 272) << "\" y=\"" << num(ly + 4) << "\">measured</text>\n";
  o << "<rect x=\"" << num(kLeft + 347) << "\" y=\"" << num(ly - 5) << "\" width=\"10\" height=\"10\" fill=\"#e8871e\"/>"
       "<text x=\"" << num(kLeft + 362) << "\" y=\"" << num(ly + 4) << "\">uniform</text>\n";
  o << "<circle cx=\"" << num(kLeft + 432) << "\" cy=\"" << num(ly) <<
       "\" r=\"7\" fill=\"none\" stroke=\"#d12f1f\" stroke-width=\"2.5\"/><text x=\"" << num(kLeft + 445) << "\" y=\"" <<
       num(ly + 4) << "\">kept (" << escape(r.value("chosen", std::string("?")).substr(0, 7)) <<
       ")</text><line x1=\"" << num(kLeft + 520) << "\" y1=\"" << num(ly) << "\" x2=\"" << num(kLeft + 544) << "\" y2=\"" <<
       num(ly) << "\" stroke=\"#888\" stroke-dasharray=\"5,4\"/><text x=\"" << num(kLeft + 550) << "\" y=\"" <<
       num(ly + 4) << "\">budget</text>\n";
  o << "</svg>\n";
  return o.str();
}

}  // namespace vitq
