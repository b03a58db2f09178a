// vitq_probe: a test-only tool that exposes intermediate results of the library as raw
// little-endian float32 / uint8 files, so that the Python parity tests can compare them with
// PIL and PyTorch. Each source file registers its subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

namespace vitq::probe {

void register_preprocess(CLI::App& app);  // probe_preprocess.cpp
void register_forward(CLI::App& app);     // probe_forward.cpp
void register_quant(CLI::App& app);       // probe_quant.cpp
void register_rotate(CLI::App& app);      // probe_rotate.cpp

// Writes n elements of T to path; throws vitq::Error(Io) on failure.
template <class T>
void write_raw(const std::string& path, const T* data, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, sizeof(T), n, f) != n) {
    if (f) std::fclose(f);
    throw std::runtime_error("cannot write " + path);
  }
  std::fclose(f);
}

}  // namespace vitq::probe
