"""ctypes view of libhspmn's C ABI (native/include/hspmn.h) shared by the Python checks and benchmarks:
the parameter structs and the entry points they call, each wrapped as lib.<name without hspmn_>."""

import ctypes as C


class ContextParams(C.Structure):
    _fields_ = [("backend", C.c_int32), ("device", C.c_int32), ("num_threads", C.c_int32),
                ("nan_policy", C.c_int32)]


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
        }
        for name, (res, args) in sigs.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
            setattr(self, name[len("hspmn_"):], f)

    def ok(self, status, what):
        if status != 0:
            raise RuntimeError(f"{what}: status {status}: {self.last_error().decode()}")
