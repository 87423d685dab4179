"""Byte-exact safetensors writing and reading for the golden cases.

Written by hand rather than through safetensors.torch.save_file so the bytes depend only on what is
passed in (tensor order as given, metadata keys as given, header padded to 8 bytes): the committed
goldens must be reproducible bit for bit. compare_goldens.py also loads every file through the
safetensors library to prove the format is the standard one.
"""

import json
import struct

import numpy as np
import torch

_ELEMENT_SIZE = {"BF16": 2, "F32": 4, "I32": 4}


def tensor_bytes(t: torch.Tensor, dtype: str) -> bytes:
    """t (any float/int dtype) as little-endian bytes of dtype ("BF16": nearest-even rounding)."""
    t = t.detach().cpu().contiguous()
    if dtype == "BF16":
        raw = t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy()
        return raw.astype("<i2").tobytes()
    if dtype == "F32":
        return t.to(torch.float64).numpy().astype("<f4").tobytes()
    if dtype == "I32":
        return t.to(torch.int64).numpy().astype("<i4").tobytes()
    raise ValueError(f"dtype: unsupported {dtype}")


def write(path: str, metadata: dict, tensors: list) -> None:
    """tensors: list of (name, dtype, torch tensor) in file order; metadata: str -> str."""
    header = {"__metadata__": dict(metadata)}
    blobs = []
    offset = 0
    for name, dtype, t in tensors:
        data = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the safetensors spec allows space padding; aligns the data
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read(path: str):
    """-> (metadata dict, {name: (dtype, shape tuple, raw bytes)}) in file order."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        tensors[name] = (info["dtype"], tuple(info["shape"]), data[lo:hi])
    return metadata, tensors


def as_numpy(dtype: str, shape, raw: bytes) -> np.ndarray:
    """Raw tensor bytes as numpy: BF16 -> float32 (exact), F32 -> float32, I32 -> int32."""
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    if dtype == "I32":
        return np.frombuffer(raw, dtype="<i4").reshape(shape)
    raise ValueError(f"dtype: unsupported {dtype}")
