"""Triton kernels for the mnv4 ops (one file per op), registered with torch.library.triton_op."""
