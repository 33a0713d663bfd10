// See weight_cache.h.
#include "weight_cache.h"

#include <ATen/ops/zeros.h>
#include <c10/core/Storage.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

namespace mnv4 {
namespace {

// (storage, offset, dims, sizes and strides of up to 4 dims, dtype, slab width), built without heap
// allocations: with a key of two std::vectors the two lookups of a UIB call took 2-5 us with the caches
// cold between blocks (Conv-M@224 b1, 21 blocks: 79 us a pass, now 41; temporary timestamps inside uib_cpu)
constexpr int64_t kMaxDims = 4;
using Key = std::tuple<const void*, int64_t, int64_t, std::array<int64_t, 2 * kMaxDims>, int, int64_t>;

struct Entry {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  int64_t version;
  at::Tensor data;  // the packed copy (a tensor: its memory starts on a 64-byte line)
  uint64_t last_use;
};

constexpr size_t kCapBytes = size_t(512) << 20;

std::mutex mu;
std::map<Key, Entry>& cache() {
  static std::map<Key, Entry> c;
  return c;
}
uint64_t clock_ = 0;

at::Tensor pack(const at::Tensor& kn, int64_t slab) {
  const int64_t K = kn.size(0), N = kn.size(1), slabs = (N + slab - 1) / slab;
  at::Tensor packed = at::zeros({K * slabs * slab}, kn.options().dtype(at::kFloat));
  float* dst = packed.data_ptr<float>();
  const float* src = kn.data_ptr<float>();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < slabs; ++j) {
      const int64_t n0 = j * slab, w = std::min(slab, N - n0);
      std::memcpy(dst + (j * K + k) * slab, src + k * N + n0, w * sizeof(float));
    }
  return packed;
}

void evict_locked() {
  auto& c = cache();
  size_t bytes = 0;
  for (auto it = c.begin(); it != c.end();) {
    if (it->second.storage.expired()) {
      it = c.erase(it);
    } else {
      bytes += it->second.data.numel() * sizeof(float);
      ++it;
    }
  }
  while (bytes > kCapBytes && !c.empty()) {
    auto lru = std::min_element(c.begin(), c.end(),
                                [](const auto& a, const auto& b) { return a.second.last_use < b.second.last_use; });
    bytes -= lru->second.data.numel() * sizeof(float);
    c.erase(lru);
  }
}

}  // namespace

at::Tensor packed_slabs(const at::Tensor& weight, int64_t slab, const std::function<at::Tensor()>& make_kn) {
  if (weight.is_inference() || !weight.has_storage() || weight.device().type() != c10::DeviceType::CPU ||
      weight.dim() > kMaxDims)
    return at::Tensor();
  std::array<int64_t, 2 * kMaxDims> shape{};  // sizes, then strides
  for (int64_t d = 0; d < weight.dim(); ++d) shape[d] = weight.size(d), shape[kMaxDims + d] = weight.stride(d);
  const Key key{weight.storage().unsafeGetStorageImpl(), weight.storage_offset(), weight.dim(), shape,
                static_cast<int>(weight.scalar_type()), slab};
  const int64_t version = weight._version();
  std::lock_guard<std::mutex> lock(mu);
  auto& c = cache();
  auto it = c.find(key);
  if (it != c.end() && !it->second.storage.expired() && it->second.version == version) {
    it->second.last_use = ++clock_;
    return it->second.data;
  }
  at::Tensor data = pack(make_kn(), slab);
  if (it != c.end()) c.erase(it);
  evict_locked();
  c.emplace(key, Entry{weight.storage().getWeakStorageImpl(), version, data, ++clock_});
  return data;
}

int64_t packed_cache_entries() {
  std::lock_guard<std::mutex> lock(mu);
  evict_locked();
  return static_cast<int64_t>(cache().size());
}

TORCH_LIBRARY_FRAGMENT(mnv4_cpu, m) {
  // tests: entries of the packed-weight cache (csrc/cpu/weight_cache.h) whose weights are still alive
  m.def("packed_cache_entries() -> int", [] { return packed_cache_entries(); });
}

}  // namespace mnv4
