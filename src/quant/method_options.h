// The options of a PTQ method as data. Each method keeps its options in its own struct (derived
// from MethodOptions) and declares them — flag, help, value, range — in declare(); the CLI turns
// every registered method's declarations into command-line options (cli/method_options_cli.cpp),
// grouped per method in --help. A flag declared by two methods (e.g. --candidates by easyquant
// and liu2021) is one command-line option that sets both.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace vitq {

struct Target;  // quant/target.h

struct OptionDecl {
  enum class Kind {
    Flag,       // bool, set to true by the flag
    OffSwitch,  // bool, set to false by the flag (a "--no-..." flag)
    Integer,    // int in [lo, hi]
    Real,       // double in [lo, hi] ((lo, hi] with lo_open)
    Reals,      // comma-separated doubles, each in the range
    Text,       // string
    Seed,       // uint64_t
  };
  std::string flag;  // "--lapq-p"
  std::string help;
  Kind kind = Kind::Flag;
  std::variant<bool*, int*, double*, std::vector<double>*, std::string*, uint64_t*> target;
  double lo = 0, hi = 0;
  bool lo_open = false;
};

// What a method's declare() writes to.
class OptionDecls {
 public:
  void flag(const std::string& f, bool* v, const std::string& help) { add({f, help, OptionDecl::Kind::Flag, v}); }
  void off_switch(const std::string& f, bool* v, const std::string& help) {
    add({f, help, OptionDecl::Kind::OffSwitch, v});
  }
  void integer(const std::string& f, int* v, long long lo, long long hi, const std::string& help) {
    add({f, help, OptionDecl::Kind::Integer, v, double(lo), double(hi)});
  }
  void real(const std::string& f, double* v, double lo, double hi, const std::string& help, bool lo_open = false) {
    add({f, help, OptionDecl::Kind::Real, v, lo, hi, lo_open});
  }
  void reals(const std::string& f, std::vector<double>* v, double lo, double hi, const std::string& help) {
    add({f, help, OptionDecl::Kind::Reals, v, lo, hi});
  }
  void text(const std::string& f, std::string* v, const std::string& help) { add({f, help, OptionDecl::Kind::Text, v}); }
  void seed(const std::string& f, uint64_t* v, const std::string& help) { add({f, help, OptionDecl::Kind::Seed, v}); }

  const std::vector<OptionDecl>& list() const { return list_; }

 private:
  void add(OptionDecl d) { list_.push_back(std::move(d)); }
  std::vector<OptionDecl> list_;
};

// A method's options: plain fields with their defaults, declared for the command line.
class MethodOptions {
 public:
  virtual ~MethodOptions() = default;
  virtual void declare(OptionDecls& d) = 0;
  // --fast: switch to the method's measured fast configuration where the options are still at
  // their exhaustive defaults. false: the method has no fast configuration.
  virtual bool apply_fast() { return false; }
  // Other methods whose options this one reads (e.g. bitsplit's --bitsplit-act method).
  virtual std::vector<std::string> uses_methods() const { return {}; }
  // --target: turn off the features on by default that the hardware cannot run; returns what was
  // changed, for the header ("" = nothing).
  virtual std::string fit_target(const Target& /*target*/) { return ""; }
};

// A method without options of its own.
class NoOptions : public MethodOptions {
 public:
  void declare(OptionDecls&) override {}
};

}  // namespace vitq
