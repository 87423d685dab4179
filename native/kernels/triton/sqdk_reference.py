"""What the sqdk_attention checks hold the Triton kernels to: hspmn_ref.sqdk_attention's output and its
gradients by autograd, and lse as the kernels define it. test_sqdk_interpret.py (the CPU, Triton's
interpreter) and gpu_check.py (a GPU) both call reference().
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "reference"))

import torch  # noqa: E402

import hspmn_ref  # noqa: E402


def reference(q, k, v, do, pos):
    """o, lse, dq, dk, dv of hspmn_ref.sqdk_attention, in q's dtype, on q's device."""
    with torch.device(q.device):  # the reference builds its masks with torch.arange
        q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        o = hspmn_ref.sqdk_attention(q, k, v, pos)
        dq, dk, dv = torch.autograd.grad(o, (q, k, v), do.to(o.dtype))
        # lse as the kernel defines it: natural log-sum-exp of the scaled, causally masked scores
        with torch.no_grad():
            Dh, S, group = q.shape[3], k.shape[1], q.shape[2] // k.shape[2]
            kh = k.repeat_interleave(group, dim=2)
            scores = torch.einsum("bchd,bshd->bhcs", q, kh) / math.sqrt(Dh)
            allowed = torch.arange(S)[None, None, :] <= pos.clamp(min=0)[:, :, None]
            lse = torch.logsumexp(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
            lse = lse * (pos >= 0)[:, None, :]
    return o.detach(), lse, dq, dk, dv
