"""What the swiglu_gemm checks compare with (the interpreter test and swiglu_gemm_gpu.py).

gate = c W_gate^T, up = c W_up^T, act = silu(gate) * up, with the rounding points of the CUDA path
(native/kernels/triton/swiglu_gemm.py's docstring): gate and up are rounded to `dtype` before the
activation, act is rounded to `dtype` after it. dtype None: no rounding at all (float64 math).
"""

import torch


def reference(c, w_gate, w_up, dtype=None):
    """c: [N, D], w_gate, w_up: [F, D] -> (act, gate, up), [N, F] each, in float64 (values of dtype
    when it is given)."""
    c, w_gate, w_up = (t.to(torch.float64) for t in (c, w_gate, w_up))
    gate = c @ w_gate.T
    up = c @ w_up.T
    if dtype is not None:
        gate, up = (t.to(dtype).to(torch.float64) for t in (gate, up))
    act = gate * torch.sigmoid(gate) * up
    if dtype is not None:
        act = act.to(dtype).to(torch.float64)
    return act, gate, up
