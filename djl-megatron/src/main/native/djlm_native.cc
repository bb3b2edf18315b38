// The project's own natives (org.djlmegatron.engine.TorchNative).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <vector>
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

// [sq, sk] fp32: 0 where query i sees key j (j <= i), -inf above the diagonal. Added to the scores it gives what
// masked_fill(-inf) gives, bit for bit (x + 0 = x, x + -inf = -inf), without masked_fill's backward pass. Each rank
// thread keeps its last mask up to 4M elements (16 MB); longer sequences build theirs per call.
at::Tensor causalAdditiveMask(int64_t sq, int64_t sk, const at::Device& device) {
  constexpr int64_t kMaxCached = int64_t{1} << 22;
  thread_local at::Tensor cached;
  if (cached.defined() && cached.size(0) == sq && cached.size(1) == sk && cached.device() == device) {
    return cached;
  }
  at::Tensor mask = at::zeros({sq, sk}, at::TensorOptions().dtype(at::kFloat).device(device));
  mask.masked_fill_(at::ones({sq, sk}, mask.options().dtype(at::kBool)).triu(1), -std::numeric_limits<double>::infinity());
  if (sq * sk <= kMaxCached) {
    cached = mask;
  }
  return mask;
}

// softmax(q k^T * scale + mask) v for one block of queries against keys 0 .. k.size(2). The scale and the mask are one
// pass (mask + scale * scores: adding 0 or -inf is exact, so the result is bit for bit the scaled scores plus the mask).
at::Tensor attendBlock(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, double scale) {
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1));
  if (scores.scalar_type() == at::kHalf || scores.scalar_type() == at::kBFloat16) {
    scores = scores.to(at::kFloat);  // the softmax in fp32 for 16-bit inputs
  }
  scores = mask.defined() ? at::add(mask, scores, scale) : scores.mul(scale);
  return at::matmul(scores.softmax(-1).to(q.scalar_type()), v);
}

// Causal self-attention runs in blocks of blockRows queries (0: one block): block i needs only keys 0 .. its last row,
// so the masked upper triangle is skipped a block at a time (3/4 of the products at 2 blocks, 9/16 at 8; smaller
// blocks skip more but give the BLAS thinner products: TorchNative.CAUSAL_BLOCK_ROWS, bench-attention). A row's
// softmax then spans fewer exact zeros: the same values up to the order of a sum.
at::Tensor attendInBlocks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal, double scale,
    int64_t blockRows) {
  int64_t sq = q.size(2);
  int64_t sk = k.size(2);
  if (!causal) {
    return attendBlock(q, k, v, at::Tensor(), scale);
  }
  at::Tensor mask = causalAdditiveMask(sq, sk, q.device());
  if (sq != sk || blockRows <= 0 || sq <= blockRows) {
    return attendBlock(q, k, v, mask, scale);
  }
  std::vector<at::Tensor> blocks;
  for (int64_t first = 0; first < sq; first += blockRows) {
    int64_t end = std::min(sq, first + blockRows);  // rows first .. end-1 see keys 0 .. end-1
    blocks.push_back(attendBlock(q.slice(2, first, end), k.slice(2, 0, end), v.slice(2, 0, end),
        mask.slice(0, first, end).slice(1, 0, end), scale));
  }
  return at::cat(blocks, 2);
}

// softmax(q k^T * scale [+ causal mask]) v from differentiable ATen ops. Causal masking is top-left aligned (query i
// sees keys 0..i), as in libtorch's fused kernels. 16-bit inputs on the CPU are widened to fp32 and the output (and,
// in backward, each input's gradient) rounded once: libtorch 1.13's CPU 16-bit bmm runs at a few GFLOP/s and
// accumulates in 16 bits; this is what a GPU's fused attention does (16-bit in and out, fp32 inside), as WideLinear.
[[maybe_unused]] at::Tensor composedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
    double scale, int64_t blockRows) {
  bool sixteenBit = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  if (sixteenBit && q.is_cpu()) {
    return attendInBlocks(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), causal, scale, blockRows)
        .to(q.scalar_type());
  }
  return attendInBlocks(q, k, v, causal, scale, blockRows);
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
DJLM_NATIVE(jlong, sdpa, jlong qh, jlong kh, jlong vh, jboolean causal, jdouble scale, jint blockRows) {
  return guard(env, __func__, [&] {
    const at::Tensor& q = tensor(qh);
    at::Tensor k = tensor(kh);
    at::Tensor v = tensor(vh);
    checkAttentionShapes(q, k, v);
    int64_t group = q.size(1) / k.size(1);
    bool isCausal = causal == JNI_TRUE;
    static_cast<void>(blockRows);  // only the composed attention has blocks; libtorch's kernels choose their own
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
    return release(composedAttention(q, k, v, isCausal, scale, blockRows));
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
    RECORD_FUNCTION("djlm::adamw_in_place", std::vector<c10::IValue>());
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

// GPT-2's tanh GELU as libtorch's one fused kernel (forward and backward): the formula written out in DJL
// ops is seven elementwise passes and as many saved tensors, which cost more than the MLP's matmuls on a CPU.
DJLM_NATIVE(jlong, geluTanh, jlong handle) {
  return guard(env, __func__, [&] { return release(at::gelu(tensor(handle), "tanh")); });
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

// ---- Contiguous parameter and gradient buffers (org.djlmegatron.training.buffers) ----

namespace {

// buffer[offset : offset + p.numel()] shaped as p, after checking that it fits and has p's dtype and device.
at::Tensor bufferView(const at::Tensor& p, const at::Tensor& buffer, jlong offset, const char* what) {
  if (buffer.dim() != 1 || !buffer.is_contiguous()) {
    throw std::invalid_argument(std::string(what) + " buffer must be a contiguous vector");
  }
  if (buffer.scalar_type() != p.scalar_type() || buffer.device() != p.device()) {
    throw std::invalid_argument(std::string(what) + " buffer has dtype/device " + c10::toString(buffer.scalar_type()) +
                                "/" + buffer.device().str() + ", the parameter " + c10::toString(p.scalar_type()) + "/" +
                                p.device().str());
  }
  if (offset < 0 || offset + p.numel() > buffer.numel()) {
    throw std::invalid_argument(std::string(what) + " range [" + std::to_string(offset) + ", " +
                                std::to_string(offset + p.numel()) + ") outside a buffer of " +
                                std::to_string(buffer.numel()));
  }
  return buffer.narrow(0, offset, p.numel()).view(p.sizes());
}

jdoubleArray toJava(JNIEnv* env, const std::vector<double>& values) {
  jdoubleArray out = env->NewDoubleArray(static_cast<jsize>(values.size()));
  checkJava(env);
  env->SetDoubleArrayRegion(out, 0, static_cast<jsize>(values.size()), values.data());
  return out;
}

// Chunks of a fixed size, whatever the thread count, so that reductions come out bit-identical with 1 or N threads.
constexpr int64_t kChunk = 1 << 16;

}  // namespace

// The parameter's values move into buffer[offset:] and the parameter becomes a view of it (PyTorch's p.data = view):
// the same tensor for DJL and autograd, its storage the buffer's.
DJLM_NATIVE(void, bindToBuffer, jlong paramH, jlong bufferH, jlong offset) {
  guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    at::Tensor& p = tensor(paramH);
    at::Tensor view = bufferView(p, tensor(bufferH), offset, "parameter");
    view.copy_(p);
    p.set_data(view);
  });
}

// The parameter's .grad becomes buffer[offset:]: backward's AccumulateGrad then adds into it in place (a defined
// .grad outside grad mode is accumulated with +=), so micro-batch gradients land in the buffer without a copy.
DJLM_NATIVE(void, bindGradient, jlong paramH, jlong bufferH, jlong offset) {
  guard(env, __func__, [&] {
    at::Tensor& p = tensor(paramH);
    p.mutable_grad() = bufferView(p, tensor(bufferH), offset, "gradient");
  });
}

// The parameter's .grad becomes undefined (PyTorch's p.grad = None): the storage it viewed is freed once nothing else
// holds it. ZeRO-2 drops the full-size gradients after each micro-batch's reduce-scatter.
DJLM_NATIVE(void, dropGradient, jlong paramH) {
  guard(env, __func__, [&] { tensor(paramH).mutable_grad().reset(); });
}

// ZeRO-3 (PyTorch FSDP's _free_storage / _alloc_storage): frees the tensor's storage (bytes == 0) or gives it a new
// allocation of `bytes` (contents undefined), in place on the StorageImpl. Every tensor viewing that storage (the
// parameters bound into a unit's buffer, the weights autograd saved for backward) sees the change; their version
// counters do not move, so refilling the storage through an alias does not count as an in-place modification.
DJLM_NATIVE(void, resizeStorage, jlong handle, jlong bytes) {
  guard(env, __func__, [&] {
    c10::StorageImpl* s = tensor(handle).storage().unsafeGetStorageImpl();
    if (bytes < 0) {
      throw std::invalid_argument("storage bytes must be >= 0, found " + std::to_string(bytes));
    }
    if (bytes == 0) {
      s->set_data_ptr_noswap(at::DataPtr(nullptr, s->device()));
      s->set_nbytes(0);
      return;
    }
    if (s->allocator() == nullptr) {
      throw std::invalid_argument("the storage has no allocator (it wraps foreign memory) and cannot be reallocated");
    }
    s->set_data_ptr_noswap(s->allocator()->allocate(static_cast<size_t>(bytes)));
    s->set_nbytes(static_cast<size_t>(bytes));
  });
}

DJLM_NATIVE(jlong, storageBytes, jlong handle) {
  return guard(env, __func__, [&] { return static_cast<jlong>(tensor(handle).storage().nbytes()); });
}

// One pass over an fp32 gradient vector: grad *= scale in place; returns {sum over mask != 0 of grad^2 (summed in
// double, in fixed chunks: the same value for any thread count), count of non-finite elements}.
DJLM_NATIVE(jdoubleArray, unscaleAndNorm, jlong gradH, jlong maskH, jdouble scale) {
  return guard(env, __func__, [&] {
    RECORD_FUNCTION("djlm::unscale_and_norm", std::vector<c10::IValue>());  // named in --profile traces
    at::NoGradGuard noGrad;
    at::Tensor& grad = tensor(gradH);
    const at::Tensor& mask = tensor(maskH);
    if (grad.sizes() != mask.sizes() || grad.scalar_type() != at::kFloat || mask.scalar_type() != at::kFloat) {
      throw std::invalid_argument("gradient and norm mask must be fp32 vectors of one length");
    }
    auto s = static_cast<float>(scale);
    if (!grad.is_cpu() || !grad.is_contiguous() || !mask.is_contiguous()) {  // composed ops: one launch each
      if (s != 1.0f) {
        grad.mul_(at::scalar_tensor(s, grad.options()));
      }
      double sum = grad.square().mul(mask).sum(at::kDouble).item<double>();
      double bad = grad.isfinite().logical_not().sum().item<double>();
      return toJava(env, std::vector<double>{sum, bad});
    }
    float* g = grad.data_ptr<float>();
    const float* m = mask.data_ptr<float>();
    int64_t n = grad.numel();
    int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> sums(chunks, 0.0);
    std::vector<int64_t> bads(chunks, 0);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; c++) {
        double sum = 0;
        int64_t bad = 0;
        for (int64_t i = c * kChunk, e = std::min(n, i + kChunk); i < e; i++) {
          float v = s == 1.0f ? g[i] : (g[i] *= s);
          bad += std::isfinite(v) ? 0 : 1;
          if (m[i] != 0.0f) {
            sum += static_cast<double>(v) * v;
          }
        }
        sums[c] = sum;
        bads[c] = bad;
      }
    });
    double sum = 0;
    double bad = 0;
    for (int64_t c = 0; c < chunks; c++) {  // in chunk order
      sum += sums[c];
      bad += static_cast<double>(bads[c]);
    }
    return toJava(env, std::vector<double>{sum, bad});
  });
}

// AdamW in one pass, in place, with the same fp32 operations in the same order as `adamw` above (so the same bits):
// g = grad * gradScale (the clipping coefficient, skipped at 1), p *= 1 + mask * (-lr * wd), moments, update.
// CPU fp32 contiguous tensors; anything else takes the composed path.
DJLM_NATIVE(void, adamwInPlace, jlong paramH, jlong gradH, jlong expAvgH, jlong expAvgSqH, jlong maskH,
    jdouble gradScale, jdouble lr, jdouble beta1, jdouble beta2, jdouble eps, jdouble weightDecay, jlong step) {
  guard(env, __func__, [&] {
    RECORD_FUNCTION("djlm::adamw_one_pass", std::vector<c10::IValue>());  // named in --profile traces
    at::NoGradGuard noGrad;
    at::Tensor& param = tensor(paramH);
    const at::Tensor& grad = tensor(gradH);
    at::Tensor& expAvg = tensor(expAvgH);
    at::Tensor& expAvgSq = tensor(expAvgSqH);
    const at::Tensor& mask = tensor(maskH);
    for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&param, &grad, &expAvg, &expAvgSq, &mask}) {
      if (t->sizes() != param.sizes() || t->scalar_type() != at::kFloat || !t->is_cpu() || !t->is_contiguous()) {
        throw std::invalid_argument("adamwInPlace: parameter, gradient, moments and decay mask must be contiguous CPU "
                                    "fp32 tensors of one shape");
      }
    }
    double bc1 = 1 - javaPow(env, beta1, static_cast<double>(step));
    double bc2Sqrt = std::sqrt(1 - javaPow(env, beta2, static_cast<double>(step)));
    const float scale = static_cast<float>(gradScale);
    const float decay = static_cast<float>(-lr * weightDecay);
    const float b1 = static_cast<float>(beta1), c1 = static_cast<float>(1 - beta1);
    const float b2 = static_cast<float>(beta2), c2 = static_cast<float>(1 - beta2);
    const float bc2 = static_cast<float>(bc2Sqrt), e = static_cast<float>(eps);
    const float stepSize = static_cast<float>(-lr / bc1);
    const bool decays = weightDecay != 0, scales = scale != 1.0f;
    float* p = param.data_ptr<float>();
    const float* gr = grad.data_ptr<float>();
    float* m = expAvg.data_ptr<float>();
    float* v = expAvgSq.data_ptr<float>();
    const float* dm = mask.data_ptr<float>();
    at::parallel_for(0, param.numel(), kChunk, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        float g = scales ? gr[i] * scale : gr[i];
        if (decays) {
          float factor = dm[i] * decay;
          factor = factor + 1.0f;
          p[i] = p[i] * factor;
        }
        float g1 = g * c1;
        float g2 = g * g;
        g2 = g2 * c2;
        float mi = m[i] * b1;
        mi = mi + g1;
        float vi = v[i] * b2;
        vi = vi + g2;
        m[i] = mi;
        v[i] = vi;
        float denom = std::sqrt(vi) / bc2;
        denom = denom + e;
        float update = mi / denom;
        update = update * stepSize;
        p[i] = p[i] + update;
      }
    });
  });
}
