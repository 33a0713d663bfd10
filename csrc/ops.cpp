// The one place that declares the mnv4 operators. Kernels live in csrc/cpu (CPU), csrc/cuda (CUDA) and
// mnv4_kernels/triton (the *_triton ops, registered from Python); fake kernels in mnv4_kernels/ops.py.
#include <Python.h>
#include <torch/library.h>

// Importing mnv4_kernels._C from Python registers the library; the module itself has no functions.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(mnv4, m) {
  // Universal Inverted Bottleneck with BatchNorm folded into every conv (weight + bias), layer scale folded
  // into the projection:
  //   start dw k x k (no act) -> expand 1x1 + act -> mid dw k x k + act -> proj 1x1 -> (+ x if residual).
  // x [N,Cin,H,W]; start_dw_w [Cin,1,k,k]; expand_w [mid,Cin,1,1]; mid_dw_w [mid,1,k,k]; proj_w [Cout,mid,1,1].
  // The stride sits on the mid dw when present, else on the start dw. Same padding k//2. Which dw weights
  // are given selects the form: ExtraDW (both), IB (mid), ConvNext (start), FFN (neither).
  // activation: "relu" | "gelu" (exact, erf) | "none". The output's memory format follows x's.
  m.def(
      "uib(Tensor x, Tensor? start_dw_w, Tensor? start_dw_b, Tensor expand_w, Tensor expand_b, "
      "Tensor? mid_dw_w, Tensor? mid_dw_b, Tensor proj_w, Tensor proj_b, "
      "int stride=1, bool residual=False, str activation=\"relu\") -> Tensor");

  // Mobile MQA (one shared K head and one shared V head for all query heads):
  //   xn = x * norm_scale + norm_shift (the pre-norm BatchNorm as a per-channel affine)
  //   q = q_w xn [h*dk]; k = k_w dw_k(xn) [dk]; v = v_w dw_v(xn) [dv]  (dw: k x k, stride kv_stride, + bias;
  //   identity when the dw weight is absent, which needs kv_stride == 1)
  //   o = softmax(q k^T * dk^-0.5) v per head; out = o_w o (+ x if residual). Channels are head-major.
  m.def(
      "mqa(Tensor x, Tensor norm_scale, Tensor norm_shift, Tensor q_w, "
      "Tensor? k_dw_w, Tensor? k_dw_b, Tensor k_w, Tensor? v_dw_w, Tensor? v_dw_b, Tensor v_w, "
      "Tensor o_w, int num_heads, int kv_stride=1, bool residual=True) -> Tensor");
}
