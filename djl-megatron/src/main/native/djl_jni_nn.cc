// Neural-network functions and random sampling of DJL's contract.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional.h>

#include "jni_util.h"

using namespace djlm;
namespace F = torch::nn::functional;

namespace {

// y = x W^T + b for bf16 weights on the CPU, the products in fp32. libtorch 1.13's CPU bf16 gemm (no oneDNN
// path on this host) runs at a few GFLOP/s, and with both operands contiguous it also accumulates in bf16,
// rounding the partial sums at every step of k. Widening the operands to fp32 (O(n^2) copies), multiplying with
// the fp32 BLAS (30x faster here) and rounding each result to bf16 once is what a GPU's tensor cores do: bf16
// inputs and outputs, fp32 accumulation. Gradients likewise. fp32, fp16 and CUDA keep at::linear.
template <bool kBias>
struct WideLinear : public torch::autograd::Function<WideLinear<kBias>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
      const at::Tensor& b) {
    ctx->save_for_backward({x, w});
    at::Tensor x2 = x.reshape({-1, x.size(-1)}).to(at::kFloat);
    at::Tensor wt = w.t().to(at::kFloat);
    at::Tensor y = kBias ? at::addmm(b.to(at::kFloat), x2, wt) : at::mm(x2, wt);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = w.size(0);
    return y.to(x.scalar_type()).view(shape);
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    return forward(ctx, x, w, at::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    at::Tensor gy = grads[0].reshape({-1, w.size(0)}).to(at::kFloat);
    at::Tensor gx;
    at::Tensor gw;
    if (ctx->needs_input_grad(0)) {
      gx = at::mm(gy, w.to(at::kFloat)).to(x.scalar_type()).view(x.sizes());
    }
    if (ctx->needs_input_grad(1)) {
      gw = at::mm(gy.t(), x.reshape({-1, x.size(-1)}).to(at::kFloat)).to(w.scalar_type());
    }
    if (!kBias) {
      return {gx, gw};
    }
    return {gx, gw, ctx->needs_input_grad(2) ? gy.sum(0).to(w.scalar_type()) : at::Tensor()};
  }
};

bool wideLinearPays(const at::Tensor& x, const at::Tensor& w) {
  auto t = w.scalar_type();
  return w.device().is_cpu() && x.scalar_type() == t && t == at::kBFloat16 && w.dim() == 2 && x.dim() >= 1;
}

// Pools and convolutions dispatch on the number of spatial dimensions.
int64_t spatialDims(const at::Tensor& x, int64_t leading, const char* what) {
  int64_t dims = x.dim() - leading;
  if (dims < 1 || dims > 3) {
    throw std::invalid_argument(std::string(what) + " supports 1 to 3 spatial dimensions, got " + std::to_string(dims));
  }
  return dims;
}

}  // namespace

PT_NATIVE(jlong, torchSoftmax, jlong handle, jlong dim, jint dtype) {
  return guard(env, __func__, [&] { return release(tensor(handle).softmax(dim, scalarType(dtype))); });
}

PT_NATIVE(jlong, torchLogSoftmax, jlong handle, jlong dim, jint dtype) {
  return guard(env, __func__, [&] { return release(tensor(handle).log_softmax(dim, scalarType(dtype))); });
}

PT_NATIVE(jlong, torchNNLinear, jlong input, jlong weight, jlong bias) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(input);
    const at::Tensor& w = tensor(weight);
    at::Tensor b = optionalTensor(bias);
    if (wideLinearPays(x, w) && !b.defined()) {
      return release(WideLinear<false>::apply(x, w));
    }
    if (wideLinearPays(x, w) && b.scalar_type() == w.scalar_type()) {
      return release(WideLinear<true>::apply(x, w, b));
    }
    return release(at::linear(x, w, b));
  });
}

PT_NATIVE(jlong, torchNNEmbedding, jlong input, jlong weight, jboolean sparse) {
  return guard(env, __func__, [&] {
    return release(at::embedding(tensor(weight), tensor(input), -1, false, sparse == JNI_TRUE));
  });
}

PT_NATIVE(jlong, torchNNOneHot, jlong handle, jint depth) {
  return guard(env, __func__, [&] { return release(at::one_hot(tensor(handle), depth)); });
}

PT_NATIVE(jlong, torchPad, jlong handle, jlongArray jpad, jdouble value) {
  return guard(env, __func__, [&] { return release(at::constant_pad_nd(tensor(handle), longs(env, jpad), value)); });
}

PT_NATIVE(jlong, torchNNRelu, jlong handle) {
  return guard(env, __func__, [&] { return release(at::relu(tensor(handle))); });
}

PT_NATIVE(jlong, torchNNSoftPlus, jlong handle) {
  return guard(env, __func__, [&] { return release(at::softplus(tensor(handle))); });
}

PT_NATIVE(jlong, torchNNSoftSign, jlong handle) {
  return guard(env, __func__, [&] { return release(F::softsign(tensor(handle))); });
}

PT_NATIVE(jlong, torchNNLeakyRelu, jlong handle, jdouble negativeSlope) {
  return guard(env, __func__, [&] { return release(at::leaky_relu(tensor(handle), negativeSlope)); });
}

PT_NATIVE(jlong, torchNNElu, jlong handle, jdouble alpha) {
  return guard(env, __func__, [&] { return release(at::elu(tensor(handle), alpha)); });
}

PT_NATIVE(jlong, torchNNSelu, jlong handle) {
  return guard(env, __func__, [&] { return release(at::selu(tensor(handle))); });
}

PT_NATIVE(jlong, torchNNGelu, jlong handle) {
  return guard(env, __func__, [&] { return release(at::gelu(tensor(handle))); });
}

PT_NATIVE(jlong, torchNNDropout, jlong handle, jdouble probability, jboolean training) {
  return guard(env, __func__, [&] { return release(at::dropout(tensor(handle), probability, training == JNI_TRUE)); });
}

PT_NATIVE(jlong, torchNNNormalize, jlong handle, jdouble p, jlong dim, jdouble eps) {
  return guard(env, __func__, [&] {
    return release(F::normalize(tensor(handle), F::NormalizeFuncOptions().p(p).dim(dim).eps(eps)));
  });
}

PT_NATIVE(jlong, torchNNLayerNorm, jlong input, jlongArray jshape, jlong weight, jlong bias, jdouble eps) {
  return guard(env, __func__, [&] {
    return release(at::layer_norm(tensor(input), longs(env, jshape), optionalTensor(weight), optionalTensor(bias), eps));
  });
}

PT_NATIVE(jlong, torchNNBatchNorm, jlong input, jlong runningMean, jlong runningVar, jlong weight, jlong bias,
    jboolean training, jdouble momentum, jdouble eps) {
  return guard(env, __func__, [&] {
    return release(at::batch_norm(tensor(input), optionalTensor(weight), optionalTensor(bias),
        optionalTensor(runningMean), optionalTensor(runningVar), training == JNI_TRUE, momentum, eps, true));
  });
}

PT_NATIVE(jlong, torchNNConvNd, jlong input, jlong weight, jlong bias, jlongArray jstride, jlongArray jpadding,
    jlongArray jdilation, jint groups) {
  return guard(env, __func__, [&] {
    const at::Tensor& w = tensor(weight);
    auto stride = longs(env, jstride);
    auto padding = longs(env, jpadding);
    auto dilation = longs(env, jdilation);
    at::Tensor b = optionalTensor(bias);
    switch (spatialDims(w, 2, "convolution")) {
      case 1: return release(at::conv1d(tensor(input), w, b, stride, padding, dilation, groups));
      case 2: return release(at::conv2d(tensor(input), w, b, stride, padding, dilation, groups));
      default: return release(at::conv3d(tensor(input), w, b, stride, padding, dilation, groups));
    }
  });
}

PT_NATIVE(jlong, torchNNMaxPool, jlong handle, jlongArray jkernel, jlongArray jstride, jlongArray jpadding,
    jboolean ceilMode) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    auto kernel = longs(env, jkernel);
    auto stride = longs(env, jstride);
    auto padding = longs(env, jpadding);
    std::vector<int64_t> dilation(kernel.size(), 1);
    bool ceil = ceilMode == JNI_TRUE;
    switch (spatialDims(x, 2, "max pooling")) {
      case 1: return release(at::max_pool1d(x, kernel, stride, padding, dilation, ceil));
      case 2: return release(at::max_pool2d(x, kernel, stride, padding, dilation, ceil));
      default: return release(at::max_pool3d(x, kernel, stride, padding, dilation, ceil));
    }
  });
}

PT_NATIVE(jlong, torchNNAvgPool, jlong handle, jlongArray jkernel, jlongArray jstride, jlongArray jpadding,
    jboolean ceilMode, jboolean countIncludePad) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    auto kernel = longs(env, jkernel);
    auto stride = longs(env, jstride);
    auto padding = longs(env, jpadding);
    bool ceil = ceilMode == JNI_TRUE;
    bool includePad = countIncludePad == JNI_TRUE;
    switch (spatialDims(x, 2, "average pooling")) {
      case 1: return release(at::avg_pool1d(x, kernel, stride, padding, ceil, includePad));
      case 2: return release(at::avg_pool2d(x, kernel, stride, padding, ceil, includePad));
      default: return release(at::avg_pool3d(x, kernel, stride, padding, ceil, includePad));
    }
  });
}

PT_NATIVE(jlong, torchNNAdaptiveAvgPool, jlong handle, jlongArray joutput) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    auto output = longs(env, joutput);
    switch (spatialDims(x, 2, "adaptive average pooling")) {
      case 1: return release(at::adaptive_avg_pool1d(x, output));
      case 2: return release(at::adaptive_avg_pool2d(x, output));
      default: return release(at::adaptive_avg_pool3d(x, output));
    }
  });
}

PT_NATIVE(jlong, torchNNAdaptiveMaxPool, jlong handle, jlongArray joutput) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    auto output = longs(env, joutput);
    switch (spatialDims(x, 2, "adaptive max pooling")) {
      case 1: return release(std::get<0>(at::adaptive_max_pool1d(x, output)));
      case 2: return release(std::get<0>(at::adaptive_max_pool2d(x, output)));
      default: return release(std::get<0>(at::adaptive_max_pool3d(x, output)));
    }
  });
}

PT_NATIVE(jlong, torchNNLpPool, jlong handle, jdouble normType, jlongArray jkernel, jlongArray jstride,
    jboolean ceilMode) {
  return guard(env, __func__, [&] {
    const at::Tensor& x = tensor(handle);
    auto kernel = longs(env, jkernel);
    auto stride = longs(env, jstride);
    bool ceil = ceilMode == JNI_TRUE;
    switch (spatialDims(x, 2, "Lp pooling")) {
      case 1:
        return release(F::lp_pool1d(x, F::LPPool1dFuncOptions(normType, kernel).stride(stride).ceil_mode(ceil)));
      case 2:
        return release(F::lp_pool2d(x, F::LPPool2dFuncOptions(normType, kernel).stride(stride).ceil_mode(ceil)));
      default:
        throw Unsupported("3D Lp pooling has no libtorch function");
    }
  });
}

// Modes are DJL's InterpolationMode ordinals.
PT_NATIVE(jlong, torchNNInterpolate, jlong handle, jlongArray jsize, jint mode, jboolean alignCorners) {
  return guard(env, __func__, [&] {
    auto options = F::InterpolateFuncOptions().size(longs(env, jsize));
    switch (mode) {
      case 0: options.mode(torch::kNearest); break;
      case 1: options.mode(torch::kLinear); break;
      case 2: options.mode(torch::kBilinear); break;
      case 3: options.mode(torch::kBicubic); break;
      case 4: options.mode(torch::kTrilinear); break;
      case 5: options.mode(torch::kArea); break;
      case 6: options.mode(torch::kNearestExact); break;
      default: throw std::invalid_argument("unknown interpolation mode " + std::to_string(mode));
    }
    if (mode >= 1 && mode <= 4) {  // the nearest and area modes take no align_corners
      options.align_corners(alignCorners == JNI_TRUE);
    }
    return release(F::interpolate(tensor(handle), options));
  });
}

// Recurrent layers: the flat parameter list is libtorch's (w_ih, w_hh[, b_ih, b_hh]) per layer and direction.

PT_NATIVE(jlongArray, torchNNRnn, jlong input, jlong hx, jlongArray jparams, jboolean hasBiases, jint numLayers,
    jint activation, jdouble dropRate, jboolean training, jboolean bidirectional, jboolean batchFirst) {
  return guard(env, __func__, [&] {
    auto params = tensors(env, jparams);
    std::tuple<at::Tensor, at::Tensor> out;
    if (activation == 0) {  // RNN.Activation.RELU
      out = at::rnn_relu(tensor(input), tensor(hx), params, hasBiases, numLayers, dropRate, training, bidirectional,
          batchFirst);
    } else if (activation == 1) {  // RNN.Activation.TANH
      out = at::rnn_tanh(tensor(input), tensor(hx), params, hasBiases, numLayers, dropRate, training, bidirectional,
          batchFirst);
    } else {
      throw std::invalid_argument("unknown RNN activation " + std::to_string(activation));
    }
    return releaseAll(env, {std::get<0>(out), std::get<1>(out)});
  });
}

PT_NATIVE(jlongArray, torchNNGru, jlong input, jlong hx, jlongArray jparams, jboolean hasBiases, jint numLayers,
    jdouble dropRate, jboolean training, jboolean bidirectional, jboolean batchFirst) {
  return guard(env, __func__, [&] {
    auto out = at::gru(tensor(input), tensor(hx), tensors(env, jparams), hasBiases, numLayers, dropRate, training,
        bidirectional, batchFirst);
    return releaseAll(env, {std::get<0>(out), std::get<1>(out)});
  });
}

PT_NATIVE(jlongArray, torchNNLstm, jlong input, jlongArray jhx, jlongArray jparams, jboolean hasBiases, jint numLayers,
    jdouble dropRate, jboolean training, jboolean bidirectional, jboolean batchFirst) {
  return guard(env, __func__, [&] {
    auto out = at::lstm(tensor(input), tensors(env, jhx), tensors(env, jparams), hasBiases, numLayers, dropRate,
        training, bidirectional, batchFirst);
    return releaseAll(env, {std::get<0>(out), std::get<1>(out), std::get<2>(out)});
  });
}

// Random sampling from libtorch's default generators (seeded by torchManualSeed).

PT_NATIVE(jlong, torchRandint, jlong low, jlong high, jlongArray jshape, jint dtype, jint layout, jintArray jdevice,
    jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::randint(low, high, longs(env, jshape), creationOptions(env, dtype, layout, jdevice)),
        layout, requiresGrad);
  });
}

PT_NATIVE(jlong, torchRandPerm, jlong n, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::randperm(n, creationOptions(env, dtype, layout, jdevice)), layout, requiresGrad);
  });
}

PT_NATIVE(jlong, torchNormal, jdouble mean, jdouble std, jlongArray jshape, jint dtype, jint layout, jintArray jdevice,
    jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    at::Tensor t = at::empty(longs(env, jshape), creationOptions(env, dtype, layout, jdevice)).normal_(mean, std);
    return finishCreation(t, layout, requiresGrad);
  });
}

PT_NATIVE(jlong, tensorUniform, jdouble low, jdouble high, jlongArray jshape, jint dtype, jint layout,
    jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    at::Tensor t = at::empty(longs(env, jshape), creationOptions(env, dtype, layout, jdevice)).uniform_(low, high);
    return finishCreation(t, layout, requiresGrad);
  });
}
