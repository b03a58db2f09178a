// 64-byte aligned std::vector storage for GEMM operands and activations.
//
// Blocks of 1 MiB and more are mapped from the system directly (mmap) and unmapped when freed.
// The calibration frees per-site buffers of tens to hundreds of MB between small long-lived
// allocations; kept in malloc's arena they fragment it and the resident size grows with every
// site (ViT-Ti, 64 images: 1.2 GB resident with 280 MB in use after 12 blocks, and
// malloc_trim gave none of it back). Mapped blocks go back to the system when freed.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace vitq {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  static_assert(Align <= 4096, "mapped blocks are page aligned");
  static constexpr std::size_t kMapBytes = std::size_t(1) << 20;
  using value_type = T;
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) {}
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  static std::size_t bytes_of(std::size_t n) {
    const std::size_t bytes = (n * sizeof(T) + Align - 1) / Align * Align;
    return bytes == 0 ? Align : bytes;
  }
  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / 2 / sizeof(T)) throw std::bad_alloc();
    const std::size_t bytes = bytes_of(n);
    if (bytes >= kMapBytes) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      return static_cast<T*>(p);
    }
    void* p = std::aligned_alloc(Align, bytes);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) {
    const std::size_t bytes = bytes_of(n);
    if (bytes >= kMapBytes) munmap(p, bytes);
    else std::free(p);
  }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const { return true; }
};

template <class T>
using avector = std::vector<T, AlignedAllocator<T>>;

}  // namespace vitq
