"""ctypes view of libhspmn's C ABI (native/include/hspmn.h) shared by the Python checks and benchmarks:
the parameter structs and the entry points they call, each wrapped as lib.<name without hspmn_>."""

import ctypes as C
import math

import numpy as np


class ContextParams(C.Structure):
    _fields_ = [("backend", C.c_int32), ("device", C.c_int32), ("num_threads", C.c_int32),
                ("nan_policy", C.c_int32), ("cuda_stream", C.c_void_p)]


class BlockParams(C.Structure):
    _fields_ = [("dim", C.c_int32), ("num_heads", C.c_int32), ("num_kv_heads", C.c_int32),
                ("mlp_ratio", C.c_int32), ("conv_kernel", C.c_int32), ("routing", C.c_int32),
                ("rope_base", C.c_float), ("sparsity_k", C.c_float), ("router_sparsity_coef", C.c_float),
                ("router_entropy_coef", C.c_float), ("norm_eps", C.c_float), ("reserved", C.c_int32)]


class ForwardParams(C.Structure):
    _fields_ = [("training", C.c_int32), ("noise", C.c_int32), ("seed", C.c_uint64), ("step", C.c_int64),
                ("layer", C.c_int32), ("aux_target", C.c_float)]


class BackwardParams(C.Structure):
    _fields_ = [("accumulate", C.c_int32), ("reserved", C.c_int32)]


class AllocStats(C.Structure):
    _fields_ = [(n, C.c_int64) for n in ("live_tensors", "live_blocks", "live_contexts", "live_bytes",
                                         "peak_bytes")]


class TensorDesc(C.Structure):
    _fields_ = [("dtype", C.c_int32), ("memory", C.c_int32), ("ndim", C.c_int32), ("reserved", C.c_int32),
                ("shape", C.c_int64 * 4), ("numel", C.c_int64), ("nbytes", C.c_int64)]


class ModelParams(C.Structure):
    _fields_ = [("vocab_size", C.c_int32), ("num_layers", C.c_int32), ("block", BlockParams)]


class ModelForwardParams(C.Structure):
    _fields_ = [("training", C.c_int32), ("noise", C.c_int32), ("seed", C.c_uint64), ("step", C.c_int64),
                ("aux_target", C.c_float), ("reserved", C.c_int32)]


class ModelBackwardParams(C.Structure):
    _fields_ = [("loss_scale", C.c_float), ("accumulate", C.c_int32)]


class AdamwParams(C.Structure):
    _fields_ = [("step", C.c_int64), ("lr", C.c_float), ("beta1", C.c_float), ("beta2", C.c_float),
                ("eps", C.c_float), ("weight_decay", C.c_float), ("max_grad_norm", C.c_float)]


class AdamwResult(C.Structure):
    _fields_ = [("grad_norm", C.c_float), ("applied", C.c_int32)]


class SamplingParams(C.Structure):
    _fields_ = [("temperature", C.c_float), ("top_k", C.c_int32), ("top_p", C.c_float), ("reserved", C.c_int32),
                ("seed", C.c_uint64), ("draw", C.c_int64)]


class Lib:
    def __init__(self, path):
        L = C.CDLL(path)
        P = C.c_void_p
        sigs = {
            "hspmn_last_error": (C.c_char_p, []),
            "hspmn_context_default_params": (ContextParams, []),
            "hspmn_context_create": (C.c_int, [C.POINTER(ContextParams), C.POINTER(P)]),
            "hspmn_context_destroy": (C.c_int, [P]),
            "hspmn_context_synchronize": (C.c_int, [P]),
            "hspmn_tensor_create": (C.c_int, [P, C.c_int32, C.c_int32, C.c_int32, C.POINTER(C.c_int64), C.POINTER(P)]),
            "hspmn_tensor_destroy": (C.c_int, [P]),
            "hspmn_tensor_copy_in": (C.c_int, [P, P, C.c_int64]),
            "hspmn_tensor_copy_out": (C.c_int, [P, P, C.c_int64]),
            "hspmn_block_default_params": (BlockParams, []),
            "hspmn_block_create": (C.c_int, [P, C.POINTER(BlockParams), C.c_uint64, C.POINTER(P)]),
            "hspmn_block_destroy": (C.c_int, [P]),
            "hspmn_block_set_param": (C.c_int, [P, C.c_char_p, P]),
            "hspmn_block_get_param": (C.c_int, [P, C.c_char_p, P]),
            "hspmn_block_get_grad": (C.c_int, [P, C.c_char_p, P]),
            "hspmn_forward_default_params": (ForwardParams, []),
            "hspmn_backward_default_params": (BackwardParams, []),
            "hspmn_block_forward": (C.c_int, [P, C.POINTER(ForwardParams), P, P, P]),
            "hspmn_block_forward_routed": (C.c_int, [P, C.POINTER(ForwardParams), P, P, P, P, P, P]),
            "hspmn_block_backward": (C.c_int, [P, C.POINTER(BackwardParams), P, P, P]),
            "hspmn_block_route": (C.c_int, [P, C.POINTER(ForwardParams), P, P, P, P, P, P, P]),
            "hspmn_gumbel_noise": (C.c_int, [P, C.c_uint64, C.c_int64, C.c_int32, P]),
            "hspmn_alloc_stats_get": (C.c_int, [C.POINTER(AllocStats)]),
            "hspmn_alloc_stats_reset_peak": (C.c_int, []),
            # the language model
            "hspmn_model_default_params": (ModelParams, []),
            "hspmn_model_params_validate": (C.c_int, [C.POINTER(ModelParams)]),
            "hspmn_model_create": (C.c_int, [P, C.POINTER(ModelParams), C.c_uint64, C.POINTER(P)]),
            "hspmn_model_destroy": (C.c_int, [P]),
            "hspmn_model_get_params": (C.c_int, [P, C.POINTER(ModelParams)]),
            "hspmn_model_param_count": (C.c_int, [P, C.POINTER(C.c_int32)]),
            "hspmn_model_param_name": (C.c_int, [P, C.c_int32, C.POINTER(C.c_char_p)]),
            "hspmn_model_param_describe": (C.c_int, [P, C.c_char_p, C.POINTER(TensorDesc)]),
            "hspmn_model_get_param": (C.c_int, [P, C.c_char_p, P]),
            "hspmn_model_set_param": (C.c_int, [P, C.c_char_p, P]),
            "hspmn_model_get_grad": (C.c_int, [P, C.c_char_p, P]),
            "hspmn_model_zero_grad": (C.c_int, [P]),
            "hspmn_model_forward_default_params": (ModelForwardParams, []),
            "hspmn_model_forward": (C.c_int, [P, C.POINTER(ModelForwardParams), P, P, P, P]),
            "hspmn_model_backward_default_params": (ModelBackwardParams, []),
            "hspmn_model_backward": (C.c_int, [P, C.POINTER(ModelBackwardParams)]),
            "hspmn_model_logits": (C.c_int, [P, P, P]),
            "hspmn_adamw_default_params": (AdamwParams, []),
            "hspmn_model_adamw_step": (C.c_int, [P, C.POINTER(AdamwParams), C.POINTER(AdamwResult)]),
            "hspmn_model_router_bias_step": (C.c_int, [P, C.c_float, C.c_float, C.POINTER(C.c_float)]),
            "hspmn_model_get_moment": (C.c_int, [P, C.c_char_p, C.c_int32, P]),
            "hspmn_model_set_moment": (C.c_int, [P, C.c_char_p, C.c_int32, P]),
            # cached decoding
            "hspmn_decoder_create": (C.c_int, [P, C.c_int32, C.c_int64, C.POINTER(P)]),
            "hspmn_decoder_destroy": (C.c_int, [P]),
            "hspmn_decoder_reset": (C.c_int, [P, C.c_int32]),
            "hspmn_decoder_length": (C.c_int, [P, C.c_int32, C.POINTER(C.c_int64)]),
            "hspmn_decoder_append": (C.c_int, [P, P, P, P, P]),
            "hspmn_decoder_step": (C.c_int, [P, C.c_int32, P, P, C.POINTER(SamplingParams), P, P]),
            "hspmn_decoder_capture": (C.c_int, [P, P, C.c_int32]),
            # sampling
            "hspmn_sampling_default_params": (SamplingParams, []),
            "hspmn_sample": (C.c_int, [P, P, C.POINTER(SamplingParams), P]),
            # CUDA graphs
            "hspmn_graph_capture_forward": (C.c_int, [P, C.POINTER(ForwardParams), P, P, P, C.POINTER(P)]),
            "hspmn_graph_launch": (C.c_int, [P]),
            "hspmn_graph_destroy": (C.c_int, [P]),
        }
        for name, (res, args) in sigs.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
            setattr(self, name[len("hspmn_"):], f)

    def ok(self, status, what):
        if status != 0:
            raise RuntimeError(f"{what}: status {status}: {self.last_error().decode()}")


# dtype and memory codes of hspmn.h, and what each --backend of the checks uses for every tensor
BF16, F32, I32 = 0, 1, 2
HOST, DEVICE = 0, 1
BACKENDS = {"cpu": (0, HOST), "cuda": (1, DEVICE)}  # --backend: (hspmn_backend, memory of every tensor)


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def rel(got, ref):
    """||got - ref|| / ||ref|| in float64 (0 when both are 0, inf when only ref is)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    den = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return float(num / den)


class Context:
    """A context of one backend; every tensor it makes lives in that backend's memory of BACKENDS and is
    destroyed by close()."""

    def __init__(self, lib, backend, threads):
        self.lib = lib
        self.memory = BACKENDS[backend][1]
        p = lib.context_default_params()
        p.backend, p.num_threads = BACKENDS[backend][0], threads
        h = C.c_void_p()
        lib.ok(lib.context_create(C.byref(p), C.byref(h)), "context_create")
        self.h = h
        self.tensors = []

    def tensor(self, dtype, shape, data=None):
        shape = list(shape)
        arr = (C.c_int64 * len(shape))(*shape)
        h = C.c_void_p()
        self.lib.ok(self.lib.tensor_create(self.h, dtype, self.memory, len(shape), arr, C.byref(h)), "tensor_create")
        self.tensors.append(h)
        if data is not None:
            data = np.ascontiguousarray(data)
            self.lib.ok(self.lib.tensor_copy_in(h, data.ctypes.data, data.nbytes), "copy_in")
        return h

    def read(self, h, dtype, shape):
        np_dtype = {BF16: np.uint16, F32: np.float32, I32: np.int32}[dtype]
        out = np.empty(shape, dtype=np_dtype)
        self.lib.ok(self.lib.tensor_copy_out(h, out.ctypes.data, out.nbytes), "copy_out")
        if dtype == BF16:
            out = bf16_bits_to_f32(out)
        return out

    def close(self):
        for t in self.tensors:
            self.lib.ok(self.lib.tensor_destroy(t), "tensor_destroy")
        self.tensors = []
        self.lib.ok(self.lib.context_destroy(self.h), "context_destroy")
