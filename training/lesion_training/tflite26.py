"""Tiny ctypes runner over the TF Lite 2.6 C API (the runtime the daemon uses via tflitec 0.5.2).

Library path: argument > $LESIOND_TFLITE26_LIB > /tmp/tfl26/libtensorflowlite_c.so >
extracted from ~/.cargo/registry/src/*/tflitec-0.5.2/build-res/docsrs_res.zip into training/.cache/tfl26/.
"""
from __future__ import annotations

import ctypes as C
import glob
import os
import zipfile
from pathlib import Path

import numpy as np

from .paths import CACHE

_TYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}


class QParams(C.Structure):
    _fields_ = [("scale", C.c_float), ("zero_point", C.c_int32)]


def find_library(path: str | None = None) -> str:
    for cand in (path, os.environ.get("LESIOND_TFLITE26_LIB"), "/tmp/tfl26/libtensorflowlite_c.so"):
        if cand and Path(cand).exists():
            return str(cand)
    target = CACHE / "tfl26" / "libtensorflowlite_c.so"
    if target.exists():
        return str(target)
    zips = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tflitec-0.5.2/build-res/docsrs_res.zip")))
    if not zips:
        raise FileNotFoundError("TF Lite 2.6 C library not found: pass --tflite26-lib or set LESIOND_TFLITE26_LIB")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zips[0]) as z:
        target.write_bytes(z.read("libtensorflowlite_c.so"))
    return str(target)


_LIB = None


def _lib(path: str | None = None):
    global _LIB
    if _LIB is not None:
        return _LIB
    L = C.CDLL(find_library(path))
    vp = C.c_void_p
    sig = {
        "TfLiteVersion": (C.c_char_p, []),
        "TfLiteModelCreateFromFile": (vp, [C.c_char_p]),
        "TfLiteModelDelete": (None, [vp]),
        "TfLiteInterpreterOptionsCreate": (vp, []),
        "TfLiteInterpreterOptionsDelete": (None, [vp]),
        "TfLiteInterpreterOptionsSetNumThreads": (None, [vp, C.c_int32]),
        "TfLiteInterpreterCreate": (vp, [vp, vp]),
        "TfLiteInterpreterDelete": (None, [vp]),
        "TfLiteInterpreterAllocateTensors": (C.c_int, [vp]),
        "TfLiteInterpreterGetInputTensor": (vp, [vp, C.c_int32]),
        "TfLiteInterpreterGetOutputTensor": (vp, [vp, C.c_int32]),
        "TfLiteInterpreterGetOutputTensorCount": (C.c_int32, [vp]),
        "TfLiteInterpreterInvoke": (C.c_int, [vp]),
        "TfLiteTensorCopyFromBuffer": (C.c_int, [vp, vp, C.c_size_t]),
        "TfLiteTensorCopyToBuffer": (C.c_int, [vp, vp, C.c_size_t]),
        "TfLiteTensorQuantizationParams": (QParams, [vp]),
        "TfLiteTensorType": (C.c_int, [vp]),
        "TfLiteTensorNumDims": (C.c_int32, [vp]),
        "TfLiteTensorDim": (C.c_int32, [vp, C.c_int32]),
        "TfLiteTensorByteSize": (C.c_size_t, [vp]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype = res
        f.argtypes = args
    _LIB = L
    return L


class Tensor:
    def __init__(self, L, ptr):
        self.L, self.ptr = L, ptr

    @property
    def dtype(self):
        return _TYPES[self.L.TfLiteTensorType(self.ptr)]

    @property
    def shape(self):
        return tuple(self.L.TfLiteTensorDim(self.ptr, i) for i in range(self.L.TfLiteTensorNumDims(self.ptr)))

    @property
    def quantization(self) -> tuple[float, int]:
        q = self.L.TfLiteTensorQuantizationParams(self.ptr)
        return float(q.scale), int(q.zero_point)


class Interpreter:
    """TF Lite 2.6 interpreter (C API, no delegates)."""

    def __init__(self, model_path: str | Path, num_threads: int = 2, lib: str | None = None):
        self.L = L = _lib(lib)
        self.model = L.TfLiteModelCreateFromFile(str(model_path).encode())
        if not self.model:
            raise RuntimeError(f"TF Lite 2.6 could not load {model_path}")
        self.opts = L.TfLiteInterpreterOptionsCreate()
        L.TfLiteInterpreterOptionsSetNumThreads(self.opts, num_threads)
        self.interp = L.TfLiteInterpreterCreate(self.model, self.opts)
        if not self.interp:
            raise RuntimeError(f"TF Lite 2.6 could not create an interpreter for {model_path} (unsupported op version?)")
        if L.TfLiteInterpreterAllocateTensors(self.interp) != 0:
            raise RuntimeError("TfLiteInterpreterAllocateTensors failed")
        self.input = Tensor(L, L.TfLiteInterpreterGetInputTensor(self.interp, 0))

    @staticmethod
    def version() -> str:
        return _lib().TfLiteVersion().decode()

    def run(self, x: np.ndarray) -> np.ndarray:
        L = self.L
        x = np.ascontiguousarray(x, dtype=self.input.dtype)
        if L.TfLiteTensorCopyFromBuffer(self.input.ptr, x.ctypes.data, x.nbytes) != 0:
            raise RuntimeError(f"input copy failed (expected {self.input.shape} {self.input.dtype})")
        if L.TfLiteInterpreterInvoke(self.interp) != 0:
            raise RuntimeError("TfLiteInterpreterInvoke failed")
        out = Tensor(L, L.TfLiteInterpreterGetOutputTensor(self.interp, 0))
        y = np.zeros(out.shape, dtype=out.dtype)
        if L.TfLiteTensorCopyToBuffer(out.ptr, y.ctypes.data, y.nbytes) != 0:
            raise RuntimeError("output copy failed")
        return y

    def output(self, k: int) -> tuple[np.ndarray, tuple[float, int]]:
        """Output `k` of the last `run` and its quantization (scale, zero point)."""
        L = self.L
        if not 0 <= k < L.TfLiteInterpreterGetOutputTensorCount(self.interp):
            raise IndexError(f"the model has no output {k}")
        out = Tensor(L, L.TfLiteInterpreterGetOutputTensor(self.interp, k))
        y = np.zeros(out.shape, dtype=out.dtype)
        if L.TfLiteTensorCopyToBuffer(out.ptr, y.ctypes.data, y.nbytes) != 0:
            raise RuntimeError("output copy failed")
        return y, out.quantization

    def output_quantization(self) -> tuple[float, int]:
        return Tensor(self.L, self.L.TfLiteInterpreterGetOutputTensor(self.interp, 0)).quantization

    def __del__(self):
        try:
            self.L.TfLiteInterpreterDelete(self.interp)
            self.L.TfLiteInterpreterOptionsDelete(self.opts)
            self.L.TfLiteModelDelete(self.model)
        except Exception:
            pass
