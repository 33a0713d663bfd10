"""Autotuning choices shared by the Triton ops: which configs a kernel tunes over, and what its
early_config_prune sees.

MNV4_TRITON_ONE_CONFIG=1 (read when the ops are imported) gives every kernel one config, the first of its GPU
list (the one `aot_check` compiles by default), instead of autotuning over the list. It is for test runs on a
GPU: the tests check numerics, which do not depend on the config, and autotuning each new shape key over 5-11
configs compiles every one of them first (minutes for the fp32 IEEE dots). With a single config Triton's
autotuner skips pruning, so that first config must be valid for every shape on its own (every mask is in the
kernel; the pruning only clamps blocks and drops configs that are slow or duplicates).
"""

import os

ONE_CONFIG = os.environ.get("MNV4_TRITON_ONE_CONFIG") == "1"


def gpu_configs(configs):
    """The configs a kernel autotunes over on a GPU: all of `configs`, or its first under ONE_CONFIG."""
    return configs[:1] if ONE_CONFIG else list(configs)


def prune_args(named_args, kwargs):
    """Every kernel argument by name, as an early_config_prune(configs, named_args, **kwargs) is called:
    Triton's autotuner (3.6, 3.7) builds `named_args` from the positional arguments only and passes the keyword
    arguments (our constexprs: HP, KS, ...) separately, and torch.compile's wrap_triton does the same."""
    return {**named_args, **kwargs}
