// See weight_cache.h.
#include "weight_cache.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/Storage.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mnv4 {
namespace {

// (storage, offset, dims, sizes and strides of up to 4 dims, dtype, kernel table, slab width), built without
// heap allocations: a key of std::vectors made each lookup allocate, a measurable cost per block with the
// caches cold between blocks.
constexpr int64_t kMaxDims = 4;
// storage, offset, dims, sizes + strides, dtype, packed layout (fp32: "f32_<isa>_<slab>"; bf16: the LpPack name
// and the taps), so the same weight packed for two layouts has two entries
using Key = std::tuple<const void*, int64_t, int64_t, std::array<int64_t, 2 * kMaxDims>, int, std::string>;

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

// Packed weights are carved out of 2 MB-aligned chunks that Linux may back with transparent huge pages
// (madvise(MADV_HUGEPAGE), which systems with THP in "madvise" mode need): a whole model's weights are
// streamed from DRAM every pass, and with 4 KB pages the next slab's prefetches keep crossing into pages
// the TLB does not hold. MNV4_HUGEPAGES=0 leaves the chunks on 4 KB pages (read when a chunk is opened;
// benches/forward_cpu.py compares the two). A chunk is unmapped once no packed tensor in it is alive (each
// tensor's deleter holds the chunk); the space of dropped entries is not reused before that.
constexpr size_t kHugePage = size_t(2) << 20, kChunkBytes = size_t(32) << 20;

#if defined(__linux__)
char* map_chunk(size_t size, bool huge) {  // size bytes at a 2 MB boundary, zero-filled: a larger mapping, trimmed
  const size_t span = size + kHugePage;
  void* m = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  char* raw = static_cast<char*>(m);
  char* base = raw + (kHugePage - reinterpret_cast<uintptr_t>(raw) % kHugePage) % kHugePage;
  if (base > raw) munmap(raw, base - raw);
  if (raw + span > base + size) munmap(base + size, raw + span - (base + size));
#if defined(MADV_HUGEPAGE)
  if (huge) madvise(base, size, MADV_HUGEPAGE);  // a hint: without THP the pages stay 4 KB
#endif
  return base;
}
void unmap_chunk(char* base, size_t size) { munmap(base, size); }
#else
char* map_chunk(size_t size, bool) { return static_cast<char*>(std::aligned_alloc(kHugePage, size)); }
void unmap_chunk(char* base, size_t) { std::free(base); }
#endif

bool want_huge_pages() {
  const char* e = std::getenv("MNV4_HUGEPAGES");
  return !(e && std::strcmp(e, "0") == 0);
}

struct Chunk {
  char* base;
  size_t size, used;
  bool huge;  // advised for huge pages
  ~Chunk() { unmap_chunk(base, size); }
};
std::weak_ptr<Chunk> open_chunk;  // the chunk new entries go to (guarded by mu)

// n floats for a packed weight, zeroed, 64-byte aligned, in the open chunk (or a new one)
// n elements of dtype dt, zero-filled, starting on a 64-byte line of the open chunk
at::Tensor chunk_tensor(int64_t n, at::ScalarType dt) {
  const size_t bytes = (size_t(n) * c10::elementSize(dt) + 63) / 64 * 64;
  const bool huge = want_huge_pages();
  std::shared_ptr<Chunk> c = open_chunk.lock();
  if (!c || c->used + bytes > c->size || c->huge != huge) {
    const size_t size = std::max(kChunkBytes, (bytes + kHugePage - 1) / kHugePage * kHugePage);
    char* base = map_chunk(size, huge);
    TORCH_CHECK(base != nullptr, "mnv4 weight cache: cannot allocate ", size, " bytes for packed weights");
    c = std::shared_ptr<Chunk>(new Chunk{base, size, 0, huge});
    open_chunk = c;
  }
  char* p = c->base + c->used;
  c->used += bytes;
  std::memset(p, 0, bytes);
  return at::from_blob(p, {int64_t(n)}, [c](void*) mutable { c.reset(); }, at::TensorOptions().dtype(dt));
}

at::Tensor pack(const at::Tensor& kn, int64_t slab) {
  const int64_t K = kn.size(0), N = kn.size(1), slabs = (N + slab - 1) / slab;
  at::Tensor packed = chunk_tensor(K * slabs * slab, at::kFloat);
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
      bytes += it->second.data.nbytes();
      ++it;
    }
  }
  while (bytes > kCapBytes && !c.empty()) {
    auto lru = std::min_element(c.begin(), c.end(),
                                [](const auto& a, const auto& b) { return a.second.last_use < b.second.last_use; });
    bytes -= lru->second.data.nbytes();
    c.erase(lru);
  }
}

// The cached packed copy of `weight` for `layout`, made by make() on a miss or a stale entry; undefined when
// `weight` cannot be cached (see weight_cache.h).
at::Tensor cached(const at::Tensor& weight, const std::string& layout, const std::function<at::Tensor()>& make) {
  if (weight.is_inference() || !weight.has_storage() || weight.device().type() != c10::DeviceType::CPU ||
      weight.dim() > kMaxDims)
    return at::Tensor();
  std::array<int64_t, 2 * kMaxDims> shape{};  // sizes, then strides
  for (int64_t d = 0; d < weight.dim(); ++d) shape[d] = weight.size(d), shape[kMaxDims + d] = weight.stride(d);
  const Key key{weight.storage().unsafeGetStorageImpl(), weight.storage_offset(), weight.dim(), shape,
                static_cast<int>(weight.scalar_type()), layout};
  const int64_t version = weight._version();
  std::lock_guard<std::mutex> lock(mu);
  auto& c = cache();
  auto it = c.find(key);
  if (it != c.end() && !it->second.storage.expired() && it->second.version == version) {
    it->second.last_use = ++clock_;
    return it->second.data;
  }
  at::Tensor data;
  {
    // a normal tensor even under inference_mode: a cached form may itself be a weight whose packed form the
    // ops cache (keyed on its version counter, which inference tensors lack)
    c10::InferenceMode normal(false);
    data = make();
  }
  if (it != c.end()) c.erase(it);
  evict_locked();
  c.emplace(key, Entry{weight.storage().getWeakStorageImpl(), version, data, ++clock_});
  return data;
}

template <class E>
at::Tensor lp_pack_into(const at::Tensor& kn, const cpu::LpPack& pack, int T, int64_t K, int64_t N, at::Tensor out) {
  const at::Tensor w = kn.to(at::kFloat).contiguous();
  cpu::lp_pack(pack, T, K, N, w.data_ptr<float>(), N, static_cast<E*>(out.data_ptr()));
  return out;
}

}  // namespace

at::Tensor packed_slabs(const at::Tensor& weight, const cpu::UKernels& uk, const std::function<at::Tensor()>& make_kn) {
  const int64_t slab = std::max(1, uk.conv_nhwc_tile.nr);
  const std::string layout = "f32_" + std::to_string(static_cast<int>(uk.isa)) + "_" + std::to_string(slab);
  return cached(weight, layout, [&] { return pack(make_kn(), slab); });
}

at::Tensor derived_constant(const at::Tensor& t, const char* layout, const std::function<at::Tensor()>& make) {
  at::Tensor c = cached(t, layout, make);
  return c.defined() ? c : make();
}

at::Tensor fp32_constant(const at::Tensor& t, const char* layout, const std::function<at::Tensor()>& make) {
  return t.scalar_type() == at::kFloat ? make() : derived_constant(t, layout, make);
}

template <class E>
LpWeightOperand<E> lp_weight_operand(const at::Tensor& weight, const cpu::LpPack& pack, int T, int64_t K, int64_t N,
                                     const std::function<at::Tensor()>& make_kn, const char* form) {
  const int64_t size = cpu::lp_packed_size(pack, T, K, N);
  const std::string layout = std::string(pack.name) + "_t" + std::to_string(T) + (form ? std::string("_") + form : "");
  LpWeightOperand<E> o;
  o.packed = cached(weight, layout,
                    [&] { return lp_pack_into<E>(make_kn(), pack, T, K, N, chunk_tensor(size, LpStorage<E>::dtype)); });
  if (!o.packed.defined()) {  // not cacheable: packed for this call
    if (weight.is_inference()) {
      TORCH_WARN_ONCE("mnv4: a bf16/fp16 weight is an inference tensor (made under torch.inference_mode), so its "
                      "packed form cannot be cached and is made again on every call; make the weights outside "
                      "inference_mode (mnv4_kernels.fuse does) to have them packed once");
    }
    const at::Tensor fresh = at::empty({size}, weight.options().dtype(LpStorage<E>::dtype));
    o.packed = lp_pack_into<E>(make_kn(), pack, T, K, N, fresh);
  }
  o.mat = LpBMat<E>{static_cast<const E*>(o.packed.data_ptr()), cpu::lp_slab_stride(pack, T, K), pack, T, K};
  return o;
}
template LpWeightOperand<cpu::bf16_t> lp_weight_operand<cpu::bf16_t>(const at::Tensor&, const cpu::LpPack&, int,
                                                                     int64_t, int64_t,
                                                                     const std::function<at::Tensor()>&, const char*);
template LpWeightOperand<cpu::f16_t> lp_weight_operand<cpu::f16_t>(const at::Tensor&, const cpu::LpPack&, int,
                                                                   int64_t, int64_t,
                                                                   const std::function<at::Tensor()>&, const char*);

int64_t packed_cache_entries() {
  std::lock_guard<std::mutex> lock(mu);
  evict_locked();
  return static_cast<int64_t>(cache().size());
}

}  // namespace mnv4
