"""Islands (connected groups of selected pixels) and the morphology_* parameters."""

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._utils import VECTOR_COMPRESS, as_batch

__all__ = [
    "number_of_islands",
    "brightest_island",
    "largest_island",
    "morphology_parameters",
    "SMALL_ISLAND_MAX_PIXELS",
    "LARGE_ISLAND_MIN_PIXELS",
    "MORPHOLOGY_COLUMNS",
]

#: islands with at most this many pixels are "small"
SMALL_ISLAND_MAX_PIXELS = 2
#: islands with more than this many pixels are "large"; the rest are "medium"
LARGE_ISLAND_MIN_PIXELS = 50
#: the morphology_* columns, in ctapipe's order
MORPHOLOGY_COLUMNS = tuple(
    f"morphology_{name}" for name in ("n_pixels", "n_islands", "n_small_islands", "n_medium_islands", "n_large_islands")
)


@njit(cache=True, nogil=True)
def label_islands(mask, indptr, indices, labels, stack):
    """Label the connected groups of ``mask`` pixels 1, 2, ... in order of their lowest pixel index.

    Writes ``labels`` (0 = not selected) and returns the number of islands.  ``stack`` is
    scratch space of at least ``len(mask)`` integers.
    """
    n_islands = 0
    for pix in range(mask.shape[0]):
        labels[pix] = 0
    for start in range(mask.shape[0]):
        if not mask[start] or labels[start] != 0:
            continue
        n_islands += 1
        labels[start] = n_islands
        stack[0] = start
        top = 1
        while top > 0:
            top -= 1
            pix = stack[top]
            for k in range(indptr[pix], indptr[pix + 1]):
                neighbor = indices[k]
                if mask[neighbor] and labels[neighbor] == 0:
                    labels[neighbor] = n_islands
                    stack[top] = neighbor
                    top += 1
    return n_islands


@njit(cache=True, nogil=True)
def _label_batch(masks, indptr, indices, labels, n_islands):
    stack = np.empty(masks.shape[1], dtype=np.int64)
    for event in range(masks.shape[0]):
        n_islands[event] = label_islands(masks[event], indptr, indices, labels[event], stack)


def number_of_islands(masks, neighbors):
    """Connected components of pixel masks.

    ``masks`` is ``(n_pixels,)`` or ``(n_events, n_pixels)`` bool, ``neighbors`` the CSR
    ``(indptr, indices)``.  Returns ``(n_islands, labels)``: island counts and int32 labels
    (0 = pixel not selected, islands numbered in order of their lowest pixel index).
    """
    masks, single = as_batch(masks, dtype=np.bool_)
    indptr, indices = neighbors
    labels = np.empty(masks.shape, dtype=np.int32)
    n_islands = np.empty(masks.shape[0], dtype=np.int64)
    _label_batch(masks, indptr, indices, labels, n_islands)
    if single:
        return int(n_islands[0]), labels[0]
    return n_islands, labels


@njit(cache=True, nogil=True)
def island_with_max(labels, n_islands, values):
    """Label of the island with the largest sum of ``values`` (summed in float64).

    Index 0 (unselected pixels) takes part with a sum of 0, and the first maximum wins,
    as with ``np.argmax`` over per-label sums.
    """
    sums = np.zeros(n_islands + 1)
    for pix in range(labels.shape[0]):
        if labels[pix] > 0:
            sums[labels[pix]] += values[pix]
    best = 0
    for label in range(1, n_islands + 1):
        if sums[label] > sums[best]:
            best = label
    return best


@njit(cache=True, nogil=True)
def _brightest_batch(labels, n_islands, images, out):
    for event in range(labels.shape[0]):
        if n_islands[event] == 0:
            out[event, :] = False
            continue
        best = island_with_max(labels[event], n_islands[event], images[event])
        for pix in range(labels.shape[1]):
            out[event, pix] = labels[event, pix] == best


def brightest_island(n_islands, labels, images):
    """Mask of the island with the largest summed intensity (all False without islands).

    Arguments in the order of ctapipe's ``brightest_island(n_islands, island_labels, image)``.
    """
    labels, single = as_batch(labels, dtype=np.int32)
    images, _ = as_batch(images)
    n_islands = np.atleast_1d(np.asarray(n_islands, dtype=np.int64))
    out = np.empty(labels.shape, dtype=bool)
    _brightest_batch(labels, n_islands, images, out)
    return out[0] if single else out


@njit(cache=True, nogil=True)
def _largest_batch(labels, out):
    sizes = np.zeros(labels.shape[1] + 1, dtype=np.int64)
    for event in range(labels.shape[0]):
        row = labels[event]
        n_islands = 0
        for pix in range(row.shape[0]):
            sizes[row[pix]] += 1
            n_islands = max(n_islands, row[pix])
        best = 0
        best_size = 0
        for label in range(1, n_islands + 1):
            if sizes[label] > best_size:
                best = label
                best_size = sizes[label]
        for pix in range(row.shape[0]):
            out[event, pix] = best > 0 and row[pix] == best
        sizes[: n_islands + 1] = 0


def largest_island(labels):
    """Mask of the island with the most pixels (all False without islands; ties: lowest label)."""
    labels, single = as_batch(labels, dtype=np.int32)
    out = np.empty(labels.shape, dtype=bool)
    _largest_batch(labels, out)
    return out[0] if single else out


@njit(cache=True, nogil=True)
def island_counts(kept, n_kept, indptr, indices, todo, queue, counts):
    """``counts[:5]`` = pixels, islands, small, medium and large islands of the selected pixels ``kept[:n_kept]``.

    ``todo`` (bool, n_pixels) must be all False on entry and is again on return; ``queue``
    is scratch of ``n_pixels`` integers.  Only the selected pixels' neighbour lists are read.
    """
    for c in range(n_kept):
        todo[kept[c]] = True
    n_islands = 0
    small = 0
    large = 0
    for c in range(n_kept):
        start = kept[c]
        if not todo[start]:
            continue
        n_islands += 1
        todo[start] = False
        # breadth first: the next pixel to expand does not wait for the last one pushed
        queue[0] = start
        head = 0
        tail = 1
        while head < tail:
            pix = queue[head]
            head += 1
            for k in range(indptr[pix], indptr[pix + 1]):
                neighbor = indices[k]
                if todo[neighbor]:
                    todo[neighbor] = False
                    queue[tail] = neighbor
                    tail += 1
        size = tail
        if size <= SMALL_ISLAND_MAX_PIXELS:
            small += 1
        elif size > LARGE_ISLAND_MIN_PIXELS:
            large += 1
    counts[0] = n_kept
    counts[1] = n_islands
    counts[2] = small
    counts[3] = n_islands - small - large
    counts[4] = large


#: pixels per block of `_compress_indices`
_INDEX_LANES = 8


@intrinsic
def _compress_indices(typingctx, flags, out):
    """Indices of the non-zero ``flags`` of the whole blocks into ``out`` (int64, ascending); returns how many.

    Per block of `_INDEX_LANES`, one LLVM vector compress of the block's indices (one
    instruction with AVX-512) and a full-width store at the next free place: ``out`` must
    hold ``len(flags)`` values; the places after the returned count are overwritten.
    """
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (flags, out)):
        return None
    if flags.dtype not in (types.boolean, types.uint8) or out.dtype != types.int64:
        return None

    def codegen(context, builder, signature, args):
        lanes = _INDEX_LANES
        fa, oa = (context.make_array(t)(context, builder, value=v) for t, v in zip(signature.args, args, strict=True))
        i64 = llvm_ir.IntType(64)
        mask_int = llvm_ir.IntType(lanes)
        index_vector = llvm_ir.VectorType(i64, lanes)
        byte_vector = llvm_ir.VectorType(llvm_ir.IntType(8), lanes)
        bits = llvm_ir.VectorType(llvm_ir.IntType(1), lanes)
        if VECTOR_COMPRESS:
            compress = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(index_vector, [index_vector, bits, index_vector]),
                f"llvm.experimental.vector.compress.v{lanes}i64",
            )
        else:  # (LLVM < 19) a compressing store
            compress = cgutils.get_or_insert_function(
                builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [index_vector, oa.data.type, bits]),
                f"llvm.masked.compressstore.v{lanes}i64",
            )
        count_bits = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(mask_int, [mask_int]), f"llvm.ctpop.i{lanes}"
        )
        offsets = llvm_ir.Constant(index_vector, [i64(k) for k in range(lanes)])
        count = cgutils.alloca_once_value(builder, i64(0))
        n = builder.extract_value(fa.shape, 0)
        with cgutils.for_range(builder, builder.udiv(n, n.type(lanes))) as block:
            first = builder.mul(block.index, n.type(lanes))
            pointer = builder.bitcast(builder.gep(fa.data, [first]), byte_vector.as_pointer())
            chosen = builder.icmp_unsigned("!=", builder.load(pointer, align=1), llvm_ir.Constant(byte_vector, None))
            base = builder.insert_element(llvm_ir.Constant(index_vector, None), first, i64(0))
            base = builder.shuffle_vector(base, base, llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), lanes), None))
            m = builder.load(count)
            if VECTOR_COMPRESS:
                packed = builder.call(
                    compress, [builder.add(base, offsets), chosen, llvm_ir.Constant(index_vector, None)]
                )
                builder.store(packed, builder.bitcast(builder.gep(oa.data, [m]), index_vector.as_pointer()), align=1)
            else:
                builder.call(compress, [builder.add(base, offsets), builder.gep(oa.data, [m]), chosen])
            added = builder.zext(builder.call(count_bits, [builder.bitcast(chosen, mask_int)]), i64)
            builder.store(builder.add(m, added), count)
        return builder.load(count)

    return types.int64(flags, out), codegen


@njit(cache=True, nogil=True)
def selected_pixels(mask, kept):
    """Indices of the True (non-zero) pixels of ``mask`` into ``kept`` (ascending, ``len(mask)`` places); returns how many."""
    n_pixels = mask.shape[0]
    n = _compress_indices(mask, kept)
    for pix in range(n_pixels - n_pixels % _INDEX_LANES, n_pixels):
        kept[n] = pix
        n += mask[pix] != 0
    return n


@njit(cache=True, nogil=True)
def _morphology_batch(masks, indptr, indices, out):
    n_pix = masks.shape[1]
    kept = np.empty(n_pix, dtype=np.int64)
    todo = np.zeros(n_pix, dtype=np.bool_)
    stack = np.empty(n_pix, dtype=np.int64)
    for event in range(masks.shape[0]):
        n_kept = selected_pixels(masks[event], kept)
        island_counts(kept, n_kept, indptr, indices, todo, stack, out[:, event])


def morphology_parameters(masks, neighbors):
    """``morphology_*`` columns (int64) of cleaning masks ``(n_events, n_pixels)``.

    n_pixels: selected pixels; n_islands: connected groups; small islands have ≤ 2 pixels,
    large ones > 50, medium ones the rest.
    """
    masks, _ = as_batch(masks, dtype=np.bool_)
    indptr, indices = neighbors
    n_events = masks.shape[0]
    out = np.empty((len(MORPHOLOGY_COLUMNS), n_events), dtype=np.int64)
    _morphology_batch(masks, indptr, indices, out)
    return dict(zip(MORPHOLOGY_COLUMNS, out, strict=True))
