"""Small helpers shared by the image kernels and their Python wrappers."""

import numpy as np
from llvmlite import binding as llvm_binding
from numba import types
from numba.extending import intrinsic

__all__ = ["as_batch", "per_pixel", "weak_cast", "wide_vectors", "VECTOR_COMPRESS"]

#: LLVM has ``llvm.experimental.vector.compress`` (LLVM >= 19, llvmlite >= 0.44); the compressing
#: kernels fall back to ``llvm.masked.compressstore`` without it
VECTOR_COMPRESS = llvm_binding.llvm_version_info >= (19,)


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling kernel with the CPU's widest registers (512-bit with AVX-512).

    LLVM's default for recent Intel CPUs is 256-bit vectors; the function attributes set
    here lift that for this one function.  It changes which instructions run, never the
    arithmetic: the loops it affects do the same operations in the same order per element.
    Without AVX-512 it changes nothing.
    """

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        # string attributes are not in llvmlite's list of known ones: add them to the set directly
        # (only a hint: if a later llvmlite stores attributes differently, compile without it)
        try:
            set.add(attributes, '"prefer-vector-width"="512"')
            set.add(attributes, '"min-legal-vector-width"="512"')
        except TypeError:
            pass
        return context.get_dummy_value()

    return types.none(), codegen


def as_batch(array, dtype=None):
    """``(n_pixels,)`` or ``(n_events, n_pixels)`` -> C-contiguous 2-d array and whether it was 1-d.

    Without ``dtype``, float32 and float64 stay as they are and anything else becomes float64.
    """
    array = np.asarray(array)
    if dtype is None:
        dtype = array.dtype if array.dtype in (np.float32, np.float64) else np.float64
    single = array.ndim == 1
    if array.ndim not in (1, 2):
        raise ValueError(f"expected a (n_pixels,) or (n_events, n_pixels) array, got shape {array.shape}")
    return np.ascontiguousarray(np.atleast_2d(array), dtype=dtype), single


def weak_cast(value, like):
    """``value`` rounded to the precision numpy uses when comparing it with the array ``like``.

    numpy ≥ 2 compares a float32 array with a Python scalar in float32 but with a numpy
    float64 scalar or array in float64; the kernels compare in float64, so a threshold is
    first rounded the same way.  Returns float64.
    """
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    dtype = np.result_type(like, value)
    return np.asarray(value, dtype=dtype).astype(np.float64)


def per_pixel(value, images, name):
    """A threshold (scalar, ``(n_pixels,)`` or ``(n_events, n_pixels)``) as float64 ``(rows, n_pixels)``.

    ``rows`` is 1 (same for all events) or ``n_events``; the value is rounded like numpy
    would when comparing it with ``images`` (see `weak_cast`).
    """
    n_events, n_pixels = images.shape
    value = weak_cast(value, images)
    if value.ndim == 0:
        return np.full((1, n_pixels), value)
    if value.shape == (n_pixels,):
        return np.ascontiguousarray(value[np.newaxis])
    if value.shape == (n_events, n_pixels):
        return np.ascontiguousarray(value)
    raise ValueError(
        f"{name} must be a scalar or have shape ({n_pixels},) or ({n_events}, {n_pixels}), got {value.shape}"
    )
