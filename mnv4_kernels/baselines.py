"""What a user would run instead of our kernels: PyTorch eager (channels_last), torch.compile, onnxruntime.

Each builder returns a zero-argument-free runner `fn(x) -> logits tensor` or raises `BaselineUnavailable`
with the reason, so callers can print why a column is missing instead of failing.
"""

import io
import warnings

import torch


class BaselineUnavailable(RuntimeError):
    pass


def eager(model, channels_last=True):
    """The reference model in eager mode (channels_last is what PyTorch recommends for convnets)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(x):
        return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    return run


def compiled(model, example, mode=None, channels_last=True):
    """torch.compile of the reference model; compiles once on `example` (raises BaselineUnavailable)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    try:
        fn = torch.compile(model, mode=mode)
        with torch.inference_mode():
            fn(example)
    except Exception as e:  # inductor needs a working C++ toolchain; say why if it has none
        raise BaselineUnavailable(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")

    @torch.inference_mode()
    def run(x):
        return fn(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    return run


def onnxruntime_cpu(model, example, threads=None):
    """onnxruntime (CPU provider) on the ONNX export (legacy exporter) of `model` with the same weights."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BaselineUnavailable(f"onnxruntime is not installed ({e})")
    if example.device.type != "cpu" or example.dtype != torch.float32:
        raise BaselineUnavailable("the onnxruntime baseline runs fp32 on the CPU only")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.float().eval(), (example,), buf, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

    def run(x):
        return torch.from_numpy(sess.run(None, {"input": x.contiguous().numpy()})[0])

    return run
