"""A software prefetch for Numba kernels (``llvm.prefetch``), a hint with no semantics.

Shuffled epochs read rows in a random order; the hardware prefetcher cannot guess the next
row, and the out-of-order window does not reach it either, because each row's index is
computed just before its use. Prefetching a row a few positions ahead overlaps those misses.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _prefetch_intrinsic(locality: int, name: str, doc: str):
    """An intrinsic prefetching every cache line of one row of a 2-D C array, with LLVM's
    ``locality`` hint (3: keep in every cache level, L1 included; 2: L2 and outer)."""

    def intrinsic_fn(typingctx, arr, row):
        if not (isinstance(arr, types.Array) and arr.ndim == 2
                and isinstance(row, types.Integer)):
            return None
        return types.void(arr, row), _codegen

    def _codegen(context, builder, signature, args):
        return _emit(context, builder, signature, args, locality)

    intrinsic_fn.__name__ = intrinsic_fn.__qualname__ = name
    intrinsic_fn.__doc__ = doc
    return intrinsic(intrinsic_fn)


def _emit(context, builder, signature, args, locality):
    """The loop of ``llvm.prefetch`` calls over a row's cache lines."""
    ary_val, row_val = args
    ary = context.make_array(signature.args[0])(context, builder, ary_val)
    i8p = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]),
        "llvm.prefetch.p0",
    )
    strides = cgutils.unpack_tuple(builder, ary.strides, 2)
    shape = cgutils.unpack_tuple(builder, ary.shape, 2)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
        context.get_data_type(signature.args[0].dtype)))
    row_bytes = builder.mul(shape[1], itemsize)
    start = builder.mul(context.cast(builder, row_val, signature.args[1], types.intp),
                        strides[0])
    base = builder.bitcast(ary.data, i8p)
    zero = ir.Constant(ir.IntType(32), 0)
    hint = ir.Constant(ir.IntType(32), locality)
    one = ir.Constant(ir.IntType(32), 1)
    line = context.get_constant(types.intp, 64)
    with cgutils.for_range_slice(builder, context.get_constant(types.intp, 0), row_bytes,
                                 line) as (off, _):
        ptr = builder.gep(base, [builder.add(start, off)])
        builder.call(fn, [ptr, zero, hint, one])
    return context.get_dummy_value()


prefetch_row = _prefetch_intrinsic(
    3, "prefetch_row", "Hint the CPU to fetch every cache line of row ``row`` of the 2-D C "
    "array ``arr`` into every cache level (the row is about to be read).")
prefetch_row_l2 = _prefetch_intrinsic(
    2, "prefetch_row_l2", "Like ``prefetch_row``, into L2 and outer levels only (a row read "
    "a block later, which should not evict L1).")
