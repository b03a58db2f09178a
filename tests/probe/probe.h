// vitq_probe: a test-only tool that exposes intermediate results of the library as raw
// little-endian float32 / uint8 files, so that the Python parity tests can compare them with
// PIL and PyTorch. Each source file registers its subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace vitq::probe {

void register_preprocess(CLI::App& app);  // probe_preprocess.cpp
void register_forward(CLI::App& app);     // probe_forward.cpp
void register_quant(CLI::App& app);       // probe_quant.cpp
void register_rotate(CLI::App& app);      // probe_rotate.cpp
void register_recon(CLI::App& app);       // probe_recon.cpp
void register_synth(CLI::App& app);       // probe_synth.cpp

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

// The whole file as elements of T (raw little-endian); throws vitq::Error(Io) if it cannot be opened.
template <class T>
std::vector<T> read_raw(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(ErrorKind::Io, path, ": cannot open");
  const size_t bytes = size_t(f.tellg());
  std::vector<T> v(bytes / sizeof(T));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  return v;
}

// `expected` float32 values; throws vitq::Error(Data) if the file holds any other number of bytes.
inline std::vector<float> read_f32(const std::string& path, size_t expected) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(ErrorKind::Io, path, ": cannot open");
  const size_t bytes = size_t(f.tellg());
  if (bytes != expected * sizeof(float))
    fail(ErrorKind::Data, path, ": has ", bytes, " bytes, expected ", expected * sizeof(float));
  return read_raw<float>(path);
}

}  // namespace vitq::probe
