"""Walsh-Hadamard butterflies on explicit SIMD vectors, written as LLVM IR for Numba.

LLVM's auto-vectoriser turns the butterfly levels with large strides into SIMD code on its
own, but not the levels with strides 1, 2 and 4, whose partners sit in the same vector: it
emits them as scalar code (read the assembly with ``inspect_asm``). Here every level is
written on vectors explicitly, as ``numba.extending.intrinsic`` functions that emit LLVM IR,
so the compiled loop is exactly vector loads, shuffles, multiply-adds, adds, subtracts and
stores, on every target LLVM supports.

A vector has ``LANE_BYTES / itemsize`` lanes: one 64-byte cache line, 16 float32 or 8
float64 values, one AVX-512 register (LLVM splits the vector type into two AVX2 or four SSE
registers where the target has no 512-bit ones).

* A level with stride h below the vector length acts inside each vector:

      y = x * s + shuffle(x),   shuffle: lane j <- lane j ^ h,   s_j = -1 if j & h else +1

  so lane j (j & h == 0) gets a + b and lane j + h gets a - b, where a = x_j, b = x_{j+h}.
  Multiplying by +-1 is exact, so each lane is ``a + b`` or ``a - b`` rounded once: bit for
  bit the scalar butterfly. LLVM may contract the pair into one fused multiply-add (the
  ``contract`` flag), which rounds the same exact value once: the same bits again.
* A level with stride h of one vector or more pairs whole vectors: vertical adds and
  subtracts of vector k and vector k + h.

``butterfly_kernel(nvec, inner)`` builds the intrinsic ``f(x, i, stride)`` that loads the
``nvec`` vectors ``x[i + k * stride : i + k * stride + lanes]`` (k < nvec) of the
contiguous 1-D array ``x``, applies first the levels h < min(inner, lanes) inside each vector,
then log2(nvec) levels across the vectors (vector k with k + 1, then k + 2, ...), and stores
them back: with ``stride == lanes`` the nvec * lanes contiguous values get every level below
nvec * lanes in registers; with a larger stride it is nvec-point butterflies of whole vectors
(the levels stride, 2 stride, ...). Bounds are the caller's job: nothing is checked.

``prefetch(x, i)`` hints the cache line of x[i] into L2 (``llvm.prefetch``): the FWHT pulls
the next segment in while it works on the current one.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["LANE_BYTES", "butterfly_kernel", "prefetch"]

LANE_BYTES = 64


def _levels_inside(builder, vectors, vector_type, lanes, levels):
    """In-vector butterflies with strides 1, 2, ... below ``levels`` (and ``lanes``)."""
    undef = ir.Constant(vector_type, ir.Undefined)
    mask_type = ir.VectorType(ir.IntType(32), lanes)
    h = 1
    while h < min(levels, lanes):
        partner = ir.Constant(mask_type, [j ^ h for j in range(lanes)])
        sign = ir.Constant(vector_type, [-1.0 if j & h else 1.0 for j in range(lanes)])
        for k, v in enumerate(vectors):
            swapped = builder.shuffle_vector(v, undef, partner)
            signed = builder.fmul(v, sign, flags=("contract",))
            vectors[k] = builder.fadd(signed, swapped, flags=("contract",))
        h *= 2


def _levels_across(builder, vectors):
    """Butterflies between whole vectors: k with k + 1, then k + 2, ... (nvec a power of 2)."""
    h = 1
    while h < len(vectors):
        for k in range(len(vectors)):
            if k & h == 0:
                a, b = vectors[k], vectors[k + h]
                vectors[k] = builder.fadd(a, b)
                vectors[k + h] = builder.fsub(a, b)
        h *= 2


def butterfly_kernel(nvec: int, inner: int):
    """The intrinsic f(x, i, stride) described in the module docstring (nvec in 1, 2, 4, 8;
    inner: in-vector levels h < inner are applied, 1 for none)."""
    if nvec not in (1, 2, 4, 8, 16) or inner < 1:
        raise ValueError(f"nvec: expected 1, 2, 4, 8 or 16 and inner >= 1, got {nvec} and {inner}")

    @intrinsic
    def kernel(typingctx, x, i, stride):
        if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
                and x.dtype in (types.float32, types.float64)):
            return None

        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            array = context.make_array(array_type)(context, builder, args[0])
            first = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]],
                                             wraparound=False)
            itemsize = array_type.dtype.bitwidth // 8
            lanes = LANE_BYTES // itemsize
            vector_type = ir.VectorType(context.get_value_type(array_type.dtype), lanes)
            pointers = []
            for k in range(nvec):
                offset = builder.mul(args[2], ir.Constant(args[2].type, k))
                element = builder.gep(first, [offset])
                pointers.append(builder.bitcast(element, vector_type.as_pointer()))
            vectors = [builder.load(p, align=itemsize) for p in pointers]
            _levels_inside(builder, vectors, vector_type, lanes, inner)
            _levels_across(builder, vectors)
            for p, v in zip(pointers, vectors):
                builder.store(v, p, align=itemsize)
            return context.get_dummy_value()

        return types.void(x, types.intp, types.intp), codegen

    return kernel


@intrinsic
def prefetch(typingctx, x, i):
    """Hint the cache line holding x[i] into L2 (``llvm.prefetch``, read, locality 2): a
    hint only, never a fault, so i may run past the end."""
    if not (isinstance(x, types.Array) and x.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        address = builder.gep(array.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        signature_type = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, signature_type, "llvm.prefetch.p0")
        # read (0), locality 2 (L2 and outward), data cache (1)
        builder.call(fn, [builder.bitcast(address, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(x, types.intp), codegen
