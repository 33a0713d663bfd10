"""What a user would run instead of our kernels, each on the same weights and input.

PyTorch eager (channels_last), torch.compile, onnxruntime (CPU provider), OpenVINO (CPU plugin) and ExecuTorch
with the XNNPACK delegate. Each builder returns a runner `fn(x) -> logits tensor` or raises
`BaselineUnavailable` with the reason (not installed, wrong device or dtype, conversion failed), so callers
print why a column is missing instead of failing. Runners are built for one input shape (OpenVINO and
ExecuTorch compile a static graph) and run with `threads` threads in the runtime's own pool.
"""

import contextlib
import io
import os
import warnings

import torch


class BaselineUnavailable(RuntimeError):
    pass


def _first_line(e):
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def _cpu_fp32(example, what):
    if example.device.type != "cpu" or example.dtype != torch.float32:
        raise BaselineUnavailable(f"the {what} baseline takes an fp32 CPU input")


def eager(model, channels_last=True):
    """The model in eager mode, in its own dtype (channels_last is what PyTorch recommends for convnets)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(x):
        return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    return run


def compiled(model, example, mode=None, channels_last=True):
    """torch.compile of the model; compiles once on `example`."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    try:
        fn = torch.compile(model, mode=mode)
        with torch.inference_mode():
            fn(example)
    except Exception as e:  # inductor needs a working C++ toolchain; say why if it has none
        raise BaselineUnavailable(f"torch.compile failed: {_first_line(e)}")

    @torch.inference_mode()
    def run(x):
        return fn(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    return run


def onnx_bytes(model, example):
    """The legacy (TorchScript) ONNX export of `model` in fp32, batch dimension dynamic."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.float().eval(), (example,), buf, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, opset_version=17)
    return buf.getvalue()


def onnxruntime_cpu(model, example, threads=None, onnx=None):
    """onnxruntime (CPU provider, all graph optimisations) on the ONNX export of `model` (or `onnx` bytes)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BaselineUnavailable(f"onnxruntime is not installed ({e})")
    _cpu_fp32(example, "onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx or onnx_bytes(model, example), so, providers=["CPUExecutionProvider"])

    def run(x):
        return torch.from_numpy(sess.run(None, {"input": x.contiguous().numpy()})[0])

    return run


OPENVINO_PRECISIONS = ("f32", "bf16", "default")


def openvino_model(model, example):
    """`model` converted once by OpenVINO's PyTorch frontend (ov.convert_model), to compile per precision."""
    try:
        import openvino as ov
    except ImportError as e:
        raise BaselineUnavailable(f"openvino is not installed ({e})")
    _cpu_fp32(example, "OpenVINO")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return ov.convert_model(model.float().eval(), example_input=example)
    except Exception as e:
        raise BaselineUnavailable(f"OpenVINO conversion failed: {_first_line(e)}")


def openvino_cpu(converted, example, threads=None, precision="default"):
    """OpenVINO's CPU plugin on a model from `openvino_model`, latency hint, `threads` inference threads.

    precision: "f32" or "bf16" set INFERENCE_PRECISION_HINT; "default" leaves the plugin's choice (bf16 on
    CPUs with AVX512-BF16 or AMX). The runner's `precision` attribute says what the plugin chose."""
    import openvino as ov

    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision must be one of {OPENVINO_PRECISIONS}; got {precision!r}")
    _cpu_fp32(example, "OpenVINO")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        compiled_model = ov.Core().compile_model(converted, "CPU", config)
    except Exception as e:
        raise BaselineUnavailable(f"OpenVINO CPU compile ({precision}) failed: {_first_line(e)}")
    request = compiled_model.create_infer_request()
    output = compiled_model.output(0)

    def run(x):
        return torch.from_numpy(request.infer([x.contiguous().numpy()])[output].copy())

    run.precision = compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return run


def executorch_xnnpack(model, example, threads=None):
    """ExecuTorch with every supported op delegated to XNNPACK (fp32), loaded from the in-memory program.

    torch.export must not run under inference_mode; the program's buffer is kept alive with the runner."""
    if torch.is_inference_mode_enabled():
        raise BaselineUnavailable("torch.export cannot run under inference_mode; build this baseline outside it")
    _cpu_fp32(example, "ExecuTorch")
    try:
        with _quiet_stderr():  # torchao reports its CUDA-only extensions it cannot load on a CPU machine
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
    except ImportError as e:
        raise BaselineUnavailable(f"executorch is not installed (`make bench` installs it): {e}")
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stderr():
            warnings.simplefilter("ignore")
            exported = torch.export.export(model.float().eval(), (example,))
            program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
            buffer = program.buffer
            portable_lib._unsafe_reset_threadpool(threads or torch.get_num_threads())
            method = Runtime.get().load_program(buffer).load_method("forward")
    except Exception as e:
        raise BaselineUnavailable(f"ExecuTorch XNNPACK lowering failed: {_first_line(e)}")

    def run(x, _keep=buffer):
        return method.execute([x.contiguous()])[0]

    run.threads = portable_lib._threadpool_get_thread_count()
    return run


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (ExecuTorch's runtime logs CPU probing lines from C++ while loading)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
