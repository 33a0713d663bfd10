import os

import torch

# Triton runs on CPU tensors only under its interpreter, which must be chosen before triton is imported.
# On a CPU-only torch there is no other way to run it; on a CUDA torch the real compiler is used.
if torch.version.cuda is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MNV4_SHARED", os.path.join(os.path.dirname(REPO), "shared"))


def pytest_collection_modifyitems(config, items):
    """GPU tests skip, with the reason, where no CUDA device is visible (checked after import, once)."""
    gpu_items = [it for it in items if it.get_closest_marker("gpu")]
    if not gpu_items:
        return
    if torch.version.cuda is None:
        reason = f"needs a CUDA device; torch {torch.__version__} is a CPU-only build"
    elif not torch.cuda.is_available():
        reason = "needs a CUDA device; none is visible"
    else:
        return
    for it in gpu_items:
        it.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the repo (spec, golden vectors, class names); MNV4_SHARED overrides."""
    if not os.path.isdir(SHARED):
        pytest.fail(f"the shared folder is missing: expected {SHARED} (set MNV4_SHARED)")
    return SHARED


@pytest.fixture
def num_threads(request):
    """torch's intra-op thread count set to the (indirect) parameter for one test, then restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        torch.set_num_threads(old)
