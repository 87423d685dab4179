"""Makes Triton 3.6's CPU interpreter work with NumPy 2.4; imported by the interpreter tests, before
anything that imports Triton's language (it also stops a test that was started without
TRITON_INTERPRET=1, which would otherwise look for a GPU).

Triton 3.6's interpreter holds a scalar as a shape-(1,) array and turns it into a loop bound with
int(array), which NumPy 2.4 rejects ("only 0-dimensional arrays can be converted to Python
scalars", triton-lang/triton#9171): every range() with a runtime bound fails. This applies the fix
proposed there, in the same patch scope, so the interpreter restores it afterwards.
"""

import os
import sys

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("run with TRITON_INTERPRET=1 (Triton's CPU interpreter); see native/kernels/triton/README.md")

import triton.runtime.interpreter as _interp  # noqa: E402

_patch_lang_tensor = _interp._patch_lang_tensor


def _patch_lang_tensor_numpy24(tensor, scope):
    _patch_lang_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))


if _interp._patch_lang_tensor is not _patch_lang_tensor_numpy24:
    _interp._patch_lang_tensor = _patch_lang_tensor_numpy24
