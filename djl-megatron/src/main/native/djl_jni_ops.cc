// Arithmetic, comparison, math, reductions, shape operations and FFTs of DJL's contract: one ATen call each.
#include "jni_util.h"

using namespace djlm;

#define UNARY(name, expression)                                                   \
  PT_NATIVE(jlong, name, jlong handle) {                                          \
    return guard(env, __func__, [&] {                                             \
      const at::Tensor& x = tensor(handle);                                       \
      return release(expression);                                                 \
    });                                                                           \
  }

#define BINARY(name, expression)                                                  \
  PT_NATIVE(jlong, name, jlong self, jlong other) {                               \
    return guard(env, __func__, [&] {                                             \
      const at::Tensor& a = tensor(self);                                         \
      const at::Tensor& b = tensor(other);                                        \
      return release(expression);                                                 \
    });                                                                           \
  }

#define IN_PLACE(name, statement)                                                 \
  PT_NATIVE(void, name, jlong self, jlong other) {                                \
    guard(env, __func__, [&] {                                                    \
      at::Tensor& a = tensor(self);                                               \
      const at::Tensor& b = tensor(other);                                        \
      statement;                                                                  \
    });                                                                           \
  }

BINARY(torchAdd, a.add(b))
BINARY(torchSub, a.sub(b))
BINARY(torchMul, a.mul(b))
BINARY(torchTrueDivide, a.div(b))
BINARY(torchRemainder, a.remainder(b))
BINARY(torchPow, a.pow(b))
BINARY(torchMatmul, a.matmul(b))
BINARY(torchBmm, a.bmm(b))
BINARY(torchXLogY, a.xlogy(b))
BINARY(torchDot, a.dot(b))
BINARY(torchLogicalAnd, a.logical_and(b))
BINARY(torchLogicalOr, a.logical_or(b))
BINARY(torchLogicalXor, a.logical_xor(b))
BINARY(torchMaximum, a.maximum(b))
BINARY(torchMinimum, a.minimum(b))
BINARY(torchAtan2, a.atan2(b))
BINARY(torchEq, a.eq(b))
BINARY(torchNeq, a.ne(b))
BINARY(torchGt, a.gt(b))
BINARY(torchGte, a.ge(b))
BINARY(torchLt, a.lt(b))
BINARY(torchLte, a.le(b))

IN_PLACE(torchAddi, a.add_(b))
IN_PLACE(torchSubi, a.sub_(b))
IN_PLACE(torchMuli, a.mul_(b))
IN_PLACE(torchTrueDividei, a.div_(b))
IN_PLACE(torchRemainderi, a.remainder_(b))
IN_PLACE(torchPowi, a.pow_(b))

PT_NATIVE(void, torchSigni, jlong handle) {
  guard(env, __func__, [&] { tensor(handle).sign_(); });
}

PT_NATIVE(void, torchNegi, jlong handle) {
  guard(env, __func__, [&] { tensor(handle).neg_(); });
}

UNARY(torchSign, x.sign())
UNARY(torchNeg, x.neg())
UNARY(torchLogicalNot, x.logical_not())
UNARY(torchAbs, x.abs())
UNARY(torchSquare, x.square())
UNARY(torchFloor, x.floor())
UNARY(torchCeil, x.ceil())
UNARY(torchRound, x.round())
UNARY(torchTrunc, x.trunc())
UNARY(torchExp, x.exp())
UNARY(torchLgamma, x.lgamma())
UNARY(torchLog, x.log())
UNARY(torchLog10, x.log10())
UNARY(torchLog2, x.log2())
UNARY(torchSin, x.sin())
UNARY(torchCos, x.cos())
UNARY(torchTan, x.tan())
UNARY(torchASin, x.asin())
UNARY(torchAcos, x.acos())
UNARY(torchAtan, x.atan())
UNARY(torchSqrt, x.sqrt())
UNARY(torchSinh, x.sinh())
UNARY(torchCosh, x.cosh())
UNARY(torchTanh, x.tanh())
UNARY(torchSigmoid, x.sigmoid())
UNARY(torchErf, x.erf())
UNARY(torchErfinv, x.erfinv())
UNARY(torchIsNaN, x.isnan())
UNARY(torchIsInf, x.isinf())
UNARY(torchAll, x.all())
UNARY(torchAny, x.any())
UNARY(torchNone, x.any().logical_not())
UNARY(torchInverse, at::linalg_inv(x))
UNARY(torchViewAsReal, at::view_as_real_copy(x))
UNARY(torchViewAsComplex, at::view_as_complex_copy(x))
UNARY(conj, x.conj_physical())

UNARY(torchArgMax__J, x.argmax())
UNARY(torchArgMin__J, x.argmin())
UNARY(torchMax__J, x.max())
UNARY(torchMin__J, x.min())
UNARY(torchMean__J, x.mean())
UNARY(torchSum__J, x.sum())
UNARY(torchProd__J, x.prod())
UNARY(torchSqueeze__J, x.squeeze())

// DJL's clip: bounds arrive as 0-d tensors and are applied as scalars.
PT_NATIVE(jlong, torchClamp, jlong handle, jlong min, jlong max) {
  return guard(env, __func__, [&] { return release(tensor(handle).clamp(tensor(min).item(), tensor(max).item())); });
}

PT_NATIVE(jlong, torchDiff, jlong handle, jint n, jint dim) {
  return guard(env, __func__, [&] { return release(at::diff(tensor(handle), n, dim)); });
}

// Reductions over one dimension.

PT_NATIVE(jlong, torchArgMax__JJZ, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] { return release(tensor(handle).argmax(dim, keepDim == JNI_TRUE)); });
}

PT_NATIVE(jlong, torchArgMin__JJZ, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] { return release(tensor(handle).argmin(dim, keepDim == JNI_TRUE)); });
}

PT_NATIVE(jlong, torchMax__JJZ, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] { return release(std::get<0>(tensor(handle).max(dim, keepDim == JNI_TRUE))); });
}

PT_NATIVE(jlong, torchMin__JJZ, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] { return release(std::get<0>(tensor(handle).min(dim, keepDim == JNI_TRUE))); });
}

PT_NATIVE(jlong, torchMean__JJZ, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] {
    return release(tensor(handle).mean(at::IntArrayRef{dim}, keepDim == JNI_TRUE));
  });
}

PT_NATIVE(jlong, torchSum__J_3JZ, jlong handle, jlongArray jdims, jboolean keepDim) {
  return guard(env, __func__, [&] {
    return release(tensor(handle).sum(at::IntArrayRef(longs(env, jdims)), keepDim == JNI_TRUE));
  });
}

PT_NATIVE(jlong, torchProd__JJZ, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] { return release(tensor(handle).prod(dim, keepDim == JNI_TRUE)); });
}

// dtype -1: keep the input's dtype.
PT_NATIVE(jlong, torchCumProd, jlong handle, jlong dim, jint dtype) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    return release(dtype == -1 ? x.cumprod(dim) : x.cumprod(dim, scalarType(dtype)));
  });
}

PT_NATIVE(jlong, torchCumSum, jlong handle, jlong dim) {
  return guard(env, __func__, [&] { return release(tensor(handle).cumsum(dim)); });
}

PT_NATIVE(jlongArray, torchMedian, jlong handle, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] {
    auto result = tensor(handle).median(dim, keepDim == JNI_TRUE);
    return releaseAll(env, {std::get<0>(result), std::get<1>(result)});
  });
}

PT_NATIVE(jlong, torchQuantile, jlong handle, jfloat q, jlong dim, jboolean keepDim) {
  return guard(env, __func__, [&] {
    return release(at::quantile(tensor(handle), static_cast<double>(q), dim, keepDim == JNI_TRUE));
  });
}

PT_NATIVE(jlong, torchNorm, jlong handle, jint ord, jlongArray jdims, jboolean keepDim) {
  return guard(env, __func__, [&] {
    return release(tensor(handle).norm(at::Scalar(static_cast<int64_t>(ord)), at::IntArrayRef(longs(env, jdims)),
        keepDim == JNI_TRUE));
  });
}

// Sorting and selection. DJL's argSort passes "descending" in its third argument.

PT_NATIVE(jlong, torchArgSort, jlong handle, jlong dim, jboolean descending) {
  return guard(env, __func__, [&] { return release(tensor(handle).argsort(dim, descending == JNI_TRUE)); });
}

PT_NATIVE(jlong, torchSort, jlong handle, jlong dim, jboolean descending) {
  return guard(env, __func__, [&] { return release(std::get<0>(tensor(handle).sort(dim, descending == JNI_TRUE))); });
}

PT_NATIVE(jlongArray, torchTopK, jlong handle, jlong k, jlong dim, jboolean largest, jboolean sorted) {
  return guard(env, __func__, [&] {
    auto result = tensor(handle).topk(k, dim, largest == JNI_TRUE, sorted == JNI_TRUE);
    return releaseAll(env, {std::get<0>(result), std::get<1>(result)});
  });
}

// dim < 0: unique over the flattened array. Always returns {values, inverse, counts}.
PT_NATIVE(jlongArray, torchUnique, jlong handle, jlong dim, jboolean sorted, jboolean returnInverse,
    jboolean returnCounts) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    bool s = sorted == JNI_TRUE, inverse = returnInverse == JNI_TRUE, counts = returnCounts == JNI_TRUE;
    auto result = dim < 0 ? at::_unique2(x, s, inverse, counts) : at::unique_dim(x, dim, s, inverse, counts);
    return releaseAll(env, {std::get<0>(result), std::get<1>(result), std::get<2>(result)});
  });
}

// Shape operations.

PT_NATIVE(jlong, torchReshape, jlong handle, jlongArray jshape) {
  return guard(env, __func__, [&] { return release(tensor(handle).reshape(longs(env, jshape))); });
}

PT_NATIVE(jlong, torchExpand, jlong handle, jlongArray jshape) {
  return guard(env, __func__, [&] { return release(tensor(handle).expand(longs(env, jshape))); });
}

PT_NATIVE(jlong, torchPermute, jlong handle, jlongArray jdims) {
  return guard(env, __func__, [&] { return release(tensor(handle).permute(longs(env, jdims))); });
}

PT_NATIVE(jlong, torchFlip, jlong handle, jlongArray jdims) {
  return guard(env, __func__, [&] { return release(tensor(handle).flip(longs(env, jdims))); });
}

PT_NATIVE(jlong, torchRot90, jlong handle, jlong k, jlongArray jdims) {
  return guard(env, __func__, [&] { return release(tensor(handle).rot90(k, longs(env, jdims))); });
}

PT_NATIVE(jlong, torchTranspose, jlong handle, jlong dim1, jlong dim2) {
  return guard(env, __func__, [&] { return release(tensor(handle).transpose(dim1, dim2)); });
}

PT_NATIVE(jlong, torchFlatten, jlong handle, jlong startDim, jlong endDim) {
  return guard(env, __func__, [&] { return release(tensor(handle).flatten(startDim, endDim)); });
}

PT_NATIVE(jlong, torchUnsqueeze, jlong handle, jlong dim) {
  return guard(env, __func__, [&] { return release(tensor(handle).unsqueeze(dim)); });
}

PT_NATIVE(jlong, torchSqueeze__JJ, jlong handle, jlong dim) {
  return guard(env, __func__, [&] { return release(tensor(handle).squeeze(dim)); });
}

PT_NATIVE(jlong, torchDiagonal, jlong handle, jlong offset, jlong dim1, jlong dim2) {
  return guard(env, __func__, [&] { return release(tensor(handle).diagonal(offset, dim1, dim2)); });
}

PT_NATIVE(jlongArray, torchSplit__JJJ, jlong handle, jlong size, jlong dim) {
  return guard(env, __func__, [&] { return releaseAll(env, tensor(handle).split(size, dim)); });
}

// Explicit section sizes (DJL converts split indices to sizes before calling).
PT_NATIVE(jlongArray, torchSplit__J_3JJ, jlong handle, jlongArray jsizes, jlong dim) {
  return guard(env, __func__, [&] { return releaseAll(env, tensor(handle).split_with_sizes(longs(env, jsizes), dim)); });
}

PT_NATIVE(jlong, torchStack, jlongArray handles, jlong dim) {
  return guard(env, __func__, [&] { return release(at::stack(tensors(env, handles), dim)); });
}

PT_NATIVE(jlong, torchCat, jlongArray handles, jlong dim) {
  return guard(env, __func__, [&] { return release(at::cat(tensors(env, handles), dim)); });
}

PT_NATIVE(jlong, torchRepeat, jlong handle, jlongArray jrepeats) {
  return guard(env, __func__, [&] { return release(tensor(handle).repeat(longs(env, jrepeats))); });
}

PT_NATIVE(jlong, torchRepeatInterleave, jlong handle, jlong repeats, jlong dim) {
  return guard(env, __func__, [&] { return release(tensor(handle).repeat_interleave(repeats, dim)); });
}

// FFTs.

PT_NATIVE(jlong, torchFft, jlong handle, jlong n, jlong dim) {
  return guard(env, __func__, [&] { return release(at::fft_fft(tensor(handle), n, dim)); });
}

PT_NATIVE(jlong, torchIfft, jlong handle, jlong n, jlong dim) {
  return guard(env, __func__, [&] { return release(at::fft_ifft(tensor(handle), n, dim)); });
}

PT_NATIVE(jlong, torchRfft, jlong handle, jlong n, jlong dim) {
  return guard(env, __func__, [&] { return release(at::fft_rfft(tensor(handle), n, dim)); });
}

PT_NATIVE(jlong, torchIrfft, jlong handle, jlong n, jlong dim) {
  return guard(env, __func__, [&] { return release(at::fft_irfft(tensor(handle), n, dim)); });
}

PT_NATIVE(jlong, torchFft2, jlong handle, jlongArray jsizes, jlongArray jdims) {
  return guard(env, __func__, [&] {
    auto sizes = longs(env, jsizes);
    return release(at::fft_fft2(tensor(handle), at::OptionalIntArrayRef(at::IntArrayRef(sizes)), longs(env, jdims)));
  });
}

PT_NATIVE(jlong, torchIfft2, jlong handle, jlongArray jsizes, jlongArray jdims) {
  return guard(env, __func__, [&] {
    auto sizes = longs(env, jsizes);
    return release(at::fft_ifft2(tensor(handle), at::OptionalIntArrayRef(at::IntArrayRef(sizes)), longs(env, jdims)));
  });
}

// window handle -1 (or 0): no window (an undefined tensor, which libtorch treats as absent). {} leaves an
// optional argument unset whether the libtorch uses c10::optional or std::optional.
PT_NATIVE(jlong, torchStft, jlong handle, jlong nFft, jlong hopLength, jlong window, jboolean center,
    jboolean normalize, jboolean returnComplex) {
  return guard(env, __func__, [&] {
    at::Tensor w = window == -1 ? at::Tensor() : optionalTensor(window);
    return release(tensor(handle).stft(nFft, hopLength, {}, w, center == JNI_TRUE, "reflect", normalize == JNI_TRUE,
        {}, returnComplex == JNI_TRUE));
  });
}
