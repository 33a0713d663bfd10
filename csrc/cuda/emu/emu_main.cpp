// Runs the CUDA kernels' device code (csrc/cuda/uib_kernel.cuh, mqa_kernel.cuh) on the CPU emulator
// (cuda_emu.h) for one op call described by files in a folder; used by tests/test_cuda_compile.py.
//
//   emu_main DIR     reads DIR/spec.txt ("key value" lines) and DIR/<tensor>.f32 (raw float32; x is x's whole
//                    storage, indexed by the x_offset / xs0..xs3 given), writes DIR/out.f32 (the output's
//                    storage, out_numel elements in the layout os0..os3) and prints the chosen plan.
// Build: g++ -std=c++20 -O2 -pthread -DMNV4_CUDA_EMU -Icsrc csrc/cuda/emu/emu_main.cpp
// The host-side steps mirror uib_cuda / mqa_cuda in uib.cu / mqa.cu (weights as dense arrays, k_w / v_w
// transposed to fp32, the same plan choice for a given shared-memory limit).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/mqa_kernel.cuh"
#include "cuda/uib_kernel.cuh"

using namespace mnv4::cuda;

namespace {

std::map<std::string, std::string> g_spec;
std::string g_dir;

int64_t geti(const char* k) {
  auto it = g_spec.find(k);
  if (it == g_spec.end()) {
    std::fprintf(stderr, "spec is missing %s\n", k);
    std::exit(2);
  }
  return std::stoll(it->second);
}

std::vector<float> read_f32(const std::string& name, bool required = true) {
  std::ifstream f(g_dir + "/" + name + ".f32", std::ios::binary);
  if (!f) {
    if (required) {
      std::fprintf(stderr, "missing tensor %s\n", name.c_str());
      std::exit(2);
    }
    return {};
  }
  f.seekg(0, std::ios::end);
  size_t n = size_t(f.tellg()) / 4;
  f.seekg(0);
  std::vector<float> v(n);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 4));
  return v;
}

template <typename T>
T from_float(float x);
template <> float from_float<float>(float x) { return x; }
template <> __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
inline float as_float(float x) { return x; }
inline float as_float(__half x) { return __half2float(x); }
inline float as_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// A tensor converted to T (empty vector -> nullptr).
template <typename T>
struct Buf {
  std::vector<T> v;
  explicit Buf(const std::vector<float>& f) : v(f.size()) {
    for (size_t i = 0; i < f.size(); ++i) v[i] = from_float<T>(f[i]);
  }
  const void* ptr() const { return v.empty() ? nullptr : v.data(); }
};

template <typename T>
void write_out(const std::vector<T>& out) {
  std::vector<float> f(out.size());
  for (size_t i = 0; i < out.size(); ++i) f[i] = as_float(out[i]);
  std::ofstream o(g_dir + "/out.f32", std::ios::binary);
  o.write(reinterpret_cast<const char*>(f.data()), std::streamsize(f.size() * 4));
}

template <typename T>
int run_uib() {
  Buf<T> x(read_f32("x")), sw(read_f32("sw", false)), sb(read_f32("sb", false)), ew(read_f32("ew")),
      eb(read_f32("eb")), mw(read_f32("mw", false)), mb(read_f32("mb", false)), pw(read_f32("pw")), pb(read_f32("pb"));
  std::vector<T> out(size_t(geti("out_numel")), from_float<T>(NAN));
  UibArgs a{};
  a.x = x.v.data() + geti("x_offset");
  a.out = out.data();
  a.sw = sw.ptr();
  a.sb = sb.ptr();
  a.ew = ew.ptr();
  a.eb = eb.ptr();
  a.mw = mw.ptr();
  a.mb = mb.ptr();
  a.pw = pw.ptr();
  a.pb = pb.ptr();
  const char* xs[] = {"xs0", "xs1", "xs2", "xs3"};
  const char* os[] = {"os0", "os1", "os2", "os3"};
  for (int d = 0; d < 4; ++d) {
    a.xs[d] = geti(xs[d]);
    a.os[d] = geti(os[d]);
  }
  a.batch = int(geti("batch"));
  a.cin = int(geti("cin"));
  a.h = int(geti("h"));
  a.w = int(geti("w"));
  a.mid = int(geti("mid"));
  a.cout = int(geti("cout"));
  a.oh = int(geti("oh"));
  a.ow = int(geti("ow"));
  a.ks = int(geti("ks"));
  a.km = int(geti("km"));
  a.s = int(geti("stride"));
  a.ss = (!a.km && a.ks) ? a.s : 1;  // as make_uib_params: start_stride
  a.residual = int(geti("residual"));
  a.eg_h = a.km ? a.h : a.oh;
  a.eg_w = a.km ? a.w : a.ow;
  if (!choose_uib_plan<T>(a, geti("smem_limit"))) {
    std::printf("error: does not fit in shared memory (needs %lld)\n", (long long)a.smem);
    return 3;
  }
  std::printf("plan tile %dx%d mc %d smem %lld tiles %d\n", a.toh, a.tow, a.mc, (long long)a.smem, a.tiles_per_img);
  const unsigned grid = unsigned(a.batch * a.tiles_per_img);
  switch (geti("act")) {
    case 0: mnv4_emu::launch(uib_kernel<T, 0>, grid, kThreads, size_t(a.smem), a); break;
    case 1: mnv4_emu::launch(uib_kernel<T, 1>, grid, kThreads, size_t(a.smem), a); break;
    default: mnv4_emu::launch(uib_kernel<T, 2>, grid, kThreads, size_t(a.smem), a); break;
  }
  write_out(out);
  return 0;
}

template <typename T>
int run_mqa() {
  Buf<T> x(read_f32("x")), sc(read_f32("scale")), sf(read_f32("shift")), qw(read_f32("qw")), kdw(read_f32("kdw", false)),
      kdb(read_f32("kdb", false)), vdw(read_f32("vdw", false)), vdb(read_f32("vdb", false)), ow(read_f32("ow"));
  const std::vector<float> kw = read_f32("kw"), vw = read_f32("vw");
  const int64_t batch = geti("batch"), C = geti("c"), H = geti("h"), W = geti("w"), heads = geti("heads");
  const int64_t dk = geti("dk"), dv = geti("dv"), cout = geti("cout"), kk = geti("kk"), kvs = geti("kv_stride");
  const int64_t KH = (H - 1) / kvs + 1, KW = (W - 1) / kvs + 1, M = KH * KW;
  // k_w [dk][C] -> k_w^T [C][dk] in fp32 after rounding to T (as .to(kFloat) of the dtype-T weight)
  std::vector<float> kwt(size_t(C * dk)), vwt(size_t(C * dv));
  for (int64_t d = 0; d < dk; ++d)
    for (int64_t c = 0; c < C; ++c) kwt[c * dk + d] = as_float(from_float<T>(kw[d * C + c]));
  for (int64_t d = 0; d < dv; ++d)
    for (int64_t c = 0; c < C; ++c) vwt[c * dv + d] = as_float(from_float<T>(vw[d * C + c]));
  std::vector<float> K(size_t(batch * M * dk), NAN), V(size_t(batch * M * dv), NAN);
  std::vector<T> out(size_t(geti("out_numel")), from_float<T>(NAN));

  MqaKvArgs ka{};
  ka.x = x.v.data() + geti("x_offset");
  const char* xs[] = {"xs0", "xs1", "xs2", "xs3"};
  const char* os[] = {"os0", "os1", "os2", "os3"};
  for (int d = 0; d < 4; ++d) ka.xs[d] = geti(xs[d]);
  ka.scale = sc.ptr();
  ka.shift = sf.ptr();
  ka.kdw = kdw.ptr();
  ka.kdb = kdb.ptr();
  ka.vdw = vdw.ptr();
  ka.vdb = vdb.ptr();
  ka.kwt = kwt.data();
  ka.vwt = vwt.data();
  ka.K = K.data();
  ka.V = V.data();
  ka.c = int(C);
  ka.h = int(H);
  ka.w = int(W);
  ka.kh = int(KH);
  ka.kw = int(KW);
  ka.m = int(M);
  ka.dk = int(dk);
  ka.dv = int(dv);
  ka.kk = int(kk);
  ka.kvs = int(kvs);
  ka.tp = kv_tile_pixels(M, C);
  ka.tiles_per_img = int((M + ka.tp - 1) / ka.tp);

  MqaAttnArgs aa{};
  aa.x = ka.x;
  aa.out = out.data();
  for (int d = 0; d < 4; ++d) {
    aa.xs[d] = geti(xs[d]);
    aa.os[d] = geti(os[d]);
  }
  aa.scale = sc.ptr();
  aa.shift = sf.ptr();
  aa.qw = qw.ptr();
  aa.ow = ow.ptr();
  aa.K = K.data();
  aa.V = V.data();
  aa.c = int(C);
  aa.h = int(H);
  aa.w = int(W);
  aa.hw = int(H * W);
  aa.m = int(M);
  aa.heads = int(heads);
  aa.dk = int(dk);
  aa.dv = int(dv);
  aa.qw_n = int(heads * dk);
  aa.hdv = int(heads * dv);
  aa.cout = int(cout);
  aa.residual = int(geti("residual"));
  aa.qscale = float(1.0 / std::sqrt(double(dk)));
  if (!choose_attn_plan<T>(aa, geti("smem_limit"))) {
    std::printf("error: does not fit in shared memory (needs %lld)\n", (long long)aa.smem);
    return 3;
  }
  std::printf("plan kv tp %d; attn tq %d nb %d kc %d smem %lld\n", ka.tp, aa.tq, aa.nb, aa.kc, (long long)aa.smem);
  mnv4_emu::launch(mqa_kv_kernel<T>, unsigned(batch * ka.tiles_per_img), kThreads, size_t(2 * ka.tp * C * 4), ka);
  mnv4_emu::launch(mqa_attn_kernel<T>, unsigned(batch * aa.tiles_per_img), kThreads, size_t(aa.smem), aa);
  write_out(out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: emu_main DIR\n");
    return 2;
  }
  g_dir = argv[1];
  std::ifstream f(g_dir + "/spec.txt");
  std::string k, v;
  while (f >> k >> v) g_spec[k] = v;
  const std::string op = g_spec["op"], dtype = g_spec["dtype"];
  if (op == "uib") {
    if (dtype == "float32") return run_uib<float>();
    if (dtype == "float16") return run_uib<__half>();
    if (dtype == "bfloat16") return run_uib<__nv_bfloat16>();
  } else if (op == "mqa") {
    if (dtype == "float32") return run_mqa<float>();
    if (dtype == "float16") return run_mqa<__half>();
    if (dtype == "bfloat16") return run_mqa<__nv_bfloat16>();
  }
  std::fprintf(stderr, "bad op/dtype %s/%s\n", op.c_str(), dtype.c_str());
  return 2;
}
