// The project's own natives (org.djlmegatron.engine.TorchNative).
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <mutex>

#include "jni_util.h"

#ifdef DJLM_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

using namespace djlm;

namespace {

#ifdef DJLM_WITH_CUDA
constexpr const char* kCuda = "cuda yes";
#else
constexpr const char* kCuda = "cuda no";
#endif

void checkAttentionShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    throw std::invalid_argument("q, k, v must be [batch, heads, seq, headDim]");
  }
  if (k.sizes() != v.sizes() || q.size(0) != k.size(0) || q.size(3) != k.size(3)) {
    throw std::invalid_argument("k and v must have equal shapes, batch and head size matching q");
  }
  if (k.size(1) == 0 || q.size(1) % k.size(1) != 0) {
    throw std::invalid_argument("query heads (" + std::to_string(q.size(1)) + ") must be a multiple of key/value heads (" +
                                std::to_string(k.size(1)) + ")");
  }
}

// softmax(q k^T * scale [+ causal mask]) v from differentiable ATen ops, the softmax in fp32 for 16-bit inputs.
// Causal masking is top-left aligned (query i sees keys 0..i), as in libtorch's fused kernels.
[[maybe_unused]] at::Tensor composedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
    double scale) {
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1));
  if (scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16) {
    scores = scores.to(at::kFloat);
  }
  scores = scores.mul(scale);
  if (causal) {
    at::Tensor visible = at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).tril();
    scores = scores.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
  }
  return at::matmul(scores.softmax(-1).to(q.scalar_type()), v);
}

// Java's own Math.pow, so that bias corrections equal AdamW.java's to the last bit (C's pow may differ in an ulp).
double javaPow(JNIEnv* env, double base, double exponent) {
  jclass math = env->FindClass("java/lang/Math");
  checkJava(env);
  jmethodID pow = env->GetStaticMethodID(math, "pow", "(DD)D");
  checkJava(env);
  double out = env->CallStaticDoubleMethod(math, pow, base, exponent);
  checkJava(env);
  env->DeleteLocalRef(math);
  return out;
}

void requireCudaBuild(int device) {
#ifndef DJLM_WITH_CUDA
  throw Unsupported("CUDA device " + std::to_string(device) + " requested, but this library is built against a "
                    "libtorch without CUDA (" DJLM_LIBTORCH_VERSION ")");
#endif
}

}  // namespace

DJLM_NATIVE(jstring, nativeVersion) {
  return guard(env, __func__, [&] {
    std::string version = std::string("djl-megatron native " DJLM_NATIVE_VERSION ", libtorch " DJLM_LIBTORCH_VERSION ", ") + kCuda;
    return env->NewStringUTF(version.c_str());
  });
}

// Fused kernels where libtorch has them: scaled_dot_product_attention (libtorch >= 2.1 for the scale argument),
// grouped-query attention natively from 2.5 (enable_gqa), by repeating key/value heads before that; the
// composed math on older libtorch.
DJLM_NATIVE(jlong, sdpa, jlong qh, jlong kh, jlong vh, jboolean causal, jdouble scale) {
  return guard(env, __func__, [&] {
    const at::Tensor& q = tensor(qh);
    at::Tensor k = tensor(kh);
    at::Tensor v = tensor(vh);
    checkAttentionShapes(q, k, v);
    int64_t group = q.size(1) / k.size(1);
    bool isCausal = causal == JNI_TRUE;
#if DJLM_TORCH_AT_LEAST(2, 5)
    return release(at::scaled_dot_product_attention(q, k, v, {}, 0.0, isCausal, scale, group > 1));
#else
    if (group > 1) {  // key/value head j serves query heads j*group .. j*group+group-1
      k = k.repeat_interleave(group, 1);
      v = v.repeat_interleave(group, 1);
    }
#if DJLM_TORCH_AT_LEAST(2, 1)
    return release(at::scaled_dot_product_attention(q, k, v, {}, 0.0, isCausal, scale));
#else
    return release(composedAttention(q, k, v, isCausal, scale));
#endif
#endif
  });
}

// One AdamW step in place, operation for operation as org.djlmegatron.optim.AdamW does it through DJL: the
// same libtorch kernels on the same fp32 operands (scalars cast to float as Java does, as 0-d fp32 tensors
// like DJL's mul(Number)), so CPU results are bit-identical.
DJLM_NATIVE(void, adamw, jlong paramH, jlong gradH, jlong expAvgH, jlong expAvgSqH, jlong maskH, jdouble lr,
    jdouble beta1, jdouble beta2, jdouble eps, jdouble weightDecay, jlong step) {
  guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    at::Tensor& param = tensor(paramH);
    const at::Tensor& grad = tensor(gradH);
    at::Tensor& expAvg = tensor(expAvgH);
    at::Tensor& expAvgSq = tensor(expAvgSqH);
    const at::Tensor& mask = tensor(maskH);
    for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&grad, &expAvg, &expAvgSq, &mask}) {
      if (t->sizes() != param.sizes() || t->scalar_type() != param.scalar_type()) {
        throw std::invalid_argument("grad, moments and decay mask must match the parameter's shape and dtype");
      }
    }
    auto scalar = [&](double value) {
      return at::scalar_tensor(static_cast<float>(value), param.options().dtype(at::kFloat));
    };
    if (weightDecay != 0) {
      param.mul_(mask.mul(scalar(-lr * weightDecay)).add(scalar(1)));
    }
    at::Tensor g1 = grad.mul(scalar(1 - beta1));
    at::Tensor g2 = grad.square().mul(scalar(1 - beta2));
    expAvg.mul_(scalar(beta1)).add_(g1);
    expAvgSq.mul_(scalar(beta2)).add_(g2);
    double bc1 = 1 - javaPow(env, beta1, static_cast<double>(step));
    double bc2Sqrt = std::sqrt(1 - javaPow(env, beta2, static_cast<double>(step)));  // sqrt is exact in both
    at::Tensor denom = expAvgSq.sqrt().div_(scalar(bc2Sqrt)).add_(scalar(eps));
    param.add_(expAvg.div(denom).mul_(scalar(-lr / bc1)));
  });
}

// Unlike DJL's toType (run without grad), this cast is recorded by autograd.
DJLM_NATIVE(jlong, castTo, jlong handle, jint dtype) {
  return guard(env, __func__, [&] { return release(tensor(handle).to(scalarType(dtype))); });
}

DJLM_NATIVE(jlong, dataPtr, jlong handle) {
  return guard(env, __func__, [&] { return reinterpret_cast<jlong>(tensor(handle).data_ptr()); });
}

DJLM_NATIVE(jlong, cudaCurrentStream, jint device) {
  return guard(env, __func__, [&]() -> jlong {
#ifdef DJLM_WITH_CUDA
    return reinterpret_cast<jlong>(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream());
#else
    return 0;
#endif
  });
}

DJLM_NATIVE(void, cudaSynchronize, jint device) {
  guard(env, __func__, [&] {
#ifdef DJLM_WITH_CUDA
    c10::cuda::CUDAGuard onDevice(static_cast<c10::DeviceIndex>(device));
    C10_CUDA_CHECK(cudaDeviceSynchronize());
#endif
  });
}

// {allocated, reserved, peak allocated, peak reserved} bytes of the caching allocator; zeros without CUDA.
DJLM_NATIVE(jlongArray, cudaMemory, jint device) {
  return guard(env, __func__, [&] {
    std::vector<jlong> out(4, 0);
#ifdef DJLM_WITH_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    constexpr size_t aggregate = 0;  // StatType::AGGREGATE, first in every libtorch version
    out = {stats.allocated_bytes[aggregate].current, stats.reserved_bytes[aggregate].current,
        stats.allocated_bytes[aggregate].peak, stats.reserved_bytes[aggregate].peak};
#endif
    return toJava(env, out);
  });
}

DJLM_NATIVE(jint, cudaDevices) {
  return guard(env, __func__, [&]() -> jint {
#ifdef DJLM_WITH_CUDA
    return static_cast<jint>(c10::cuda::device_count());
#else
    return 0;
#endif
  });
}

// device < 0: the CPU generator; otherwise that CUDA device's.
DJLM_NATIVE(void, seed, jint device, jlong seed) {
  guard(env, __func__, [&] {
    if (device < 0) {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_current_seed(static_cast<uint64_t>(seed));
      return;
    }
    requireCudaBuild(device);
#ifdef DJLM_WITH_CUDA
    auto generator = at::cuda::detail::getDefaultCUDAGenerator(static_cast<c10::DeviceIndex>(device));
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(static_cast<uint64_t>(seed));
#endif
  });
}
