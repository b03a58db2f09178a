// 64-byte aligned std::vector storage for GEMM operands and activations.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace vitq {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) {}
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  T* allocate(std::size_t n) {
    std::size_t bytes = (n * sizeof(T) + Align - 1) / Align * Align;
    void* p = std::aligned_alloc(Align, bytes == 0 ? Align : bytes);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const { return true; }
};

template <class T>
using avector = std::vector<T, AlignedAllocator<T>>;

}  // namespace vitq
