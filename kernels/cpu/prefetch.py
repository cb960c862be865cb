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


@intrinsic
def prefetch_row(typingctx, arr, row):
    """Hint the CPU to fetch every cache line of row ``row`` of the 2-D C array ``arr``."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
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
        three = ir.Constant(ir.IntType(32), 3)
        one = ir.Constant(ir.IntType(32), 1)
        line = context.get_constant(types.intp, 64)
        with cgutils.for_range_slice(builder, context.get_constant(types.intp, 0), row_bytes,
                                     line) as (off, _):
            ptr = builder.gep(base, [builder.add(start, off)])
            builder.call(fn, [ptr, zero, three, one])
        return context.get_dummy_value()

    return types.void(arr, row), codegen
