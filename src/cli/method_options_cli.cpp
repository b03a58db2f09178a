#include "cli/method_options_cli.h"

#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "cli/validators.h"
#include "core/error.h"

namespace vitq {
namespace {

// One command-line option and every declaration behind it (one per method that declares it).
struct Binding {
  std::vector<OptionDecl> decls;
  std::vector<std::string> methods;
};

template <class T>
std::vector<T*> targets_of(const Binding& b) {
  std::vector<T*> t;
  for (const OptionDecl& d : b.decls) t.push_back(std::get<T*>(d.target));
  return t;
}

std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string default_text(const OptionDecl& d) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, bool>) return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::string>) return *p;
        else if constexpr (std::is_same_v<T, std::vector<double>>) {
          std::string s;
          for (double v : *p) s += (s.empty() ? "" : ",") + number_text(v);
          return s;
        } else if constexpr (std::is_same_v<T, double>) return number_text(*p);
        else return std::to_string(*p);
      },
      d.target);
}

template <class T>
CLI::Option* add_value(CLI::App* cmd, const std::string& flag, const Binding& b, const std::string& help) {
  std::vector<T*> t = targets_of<T>(b);
  return cmd->add_option_function<T>(
      flag,
      [t](const T& v) {
        for (T* p : t) *p = v;
      },
      help);
}

CLI::Option* add_binding(CLI::App* cmd, const std::string& flag, const Binding& b) {
  const OptionDecl& d = b.decls.front();
  using K = OptionDecl::Kind;
  CLI::Option* o = nullptr;
  switch (d.kind) {
    case K::Flag:
    case K::OffSwitch: {
      const bool value = d.kind == K::Flag;
      std::vector<bool*> t = targets_of<bool>(b);
      return cmd->add_flag_function(
          flag,
          [t, value](std::int64_t) {
            for (bool* p : t) *p = value;
          },
          d.help);
    }
    case K::Integer:
      o = add_value<int>(cmd, flag, b, d.help);
      o->check(opt::integer((long long)d.lo, (long long)d.hi));
      break;
    case K::Real:
      o = add_value<double>(cmd, flag, b, d.help);
      o->check(opt::real(d.lo, d.hi, d.lo_open));
      break;
    case K::Reals:
      o = add_value<std::vector<double>>(cmd, flag, b, d.help);
      o->delimiter(',')->check(opt::real(d.lo, d.hi, d.lo_open));
      break;
    case K::Text: o = add_value<std::string>(cmd, flag, b, d.help); break;
    case K::Seed:
      o = add_value<uint64_t>(cmd, flag, b, d.help);
      o->check(opt::seed());
      break;
  }
  const std::string def = default_text(d);
  if (!def.empty()) o->default_str(def);
  return o;
}

}  // namespace

MethodOptionFlags add_method_options(CLI::App* cmd, MethodConfig& cfg) {
  MethodOptionFlags out;
  // Flags in the order the methods declare them; the methods of each flag in registry order.
  std::vector<std::string> order;
  std::map<std::string, Binding> by_flag;
  for (const MethodEntry& e : registered_methods()) {
    OptionDecls decls;
    cfg.of(e.name).declare(decls);
    for (const OptionDecl& d : decls.list()) {
      Binding& b = by_flag[d.flag];
      if (b.decls.empty()) order.push_back(d.flag);
      else if (b.decls.front().kind != d.kind || b.decls.front().target.index() != d.target.index())
        fail(ErrorKind::Internal, "methods ", b.methods.front(), " and ", e.name, " declare ", d.flag,
             " with different types");
      b.decls.push_back(d);
      b.methods.push_back(e.name);
    }
  }
  for (const std::string& flag : order) {
    const Binding& b = by_flag.at(flag);
    std::string group;
    for (const std::string& m : b.methods) group += (group.empty() ? "" : ", ") + m;
    CLI::Option* o = add_binding(cmd, flag, b);
    o->group("Options of --method " + group);
    out.entries_.push_back({o, b.methods});
  }
  return out;
}

std::vector<std::string> MethodOptionFlags::given_but_unused(const std::set<std::string>& used) const {
  std::vector<std::string> flags;
  for (const Entry& e : entries_) {
    if (e.option->count() == 0) continue;
    bool any = false;
    for (const std::string& m : e.methods) any |= used.count(m) > 0;
    if (!any) flags.push_back(e.option->get_name());
  }
  return flags;
}

void MethodOptionFlags::warn_unused(const std::string& method, const MethodConfig& cfg) const {
  std::set<std::string> used = {method};
  for (const std::string& m : cfg.of(method).uses_methods()) used.insert(m);
  for (const std::string& flag : given_but_unused(used)) {
    std::string owners;
    for (const Entry& e : entries_)
      if (e.option->get_name() == flag)
        for (const std::string& m : e.methods) owners += (owners.empty() ? "" : ", ") + m;
    std::fprintf(stderr, "warning: %s is an option of --method %s; it has no effect with --method %s\n", flag.c_str(),
                 owners.c_str(), method.c_str());
  }
}

}  // namespace vitq
