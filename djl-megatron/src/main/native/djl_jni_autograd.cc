// Autograd and DJL's built-in optimizer updates.
#include <torch/csrc/autograd/function.h>

#include "jni_util.h"

using namespace djlm;

PT_NATIVE(jboolean, torchRequiresGrad, jlong handle) {
  return guard(env, __func__, [&] { return static_cast<jboolean>(tensor(handle).requires_grad()); });
}

// DJL's JNI dereferences a missing grad_fn (the JVM dies); here it is an EngineException.
PT_NATIVE(jstring, torchGradFnName, jlong handle) {
  return guard(env, __func__, [&] {
    const auto& fn = tensor(handle).grad_fn();
    if (!fn) {
      throw std::invalid_argument("the tensor has no grad_fn (a leaf, or computed without grad)");
    }
    return env->NewStringUTF(fn->name().c_str());
  });
}

PT_NATIVE(void, torchAttachGrad, jlong handle, jboolean requiresGrad) {
  guard(env, __func__, [&] { tensor(handle).requires_grad_(requiresGrad == JNI_TRUE); });
}

// 0 when no gradient has been accumulated.
PT_NATIVE(jlong, torchGrad, jlong handle) {
  return guard(env, __func__, [&] {
    const at::Tensor& grad = tensor(handle).grad();
    return grad.defined() ? release(grad) : jlong{0};
  });
}

PT_NATIVE(jlong, torchDetachGrad, jlong handle) {
  return guard(env, __func__, [&] { return release(tensor(handle).detach()); });
}

PT_NATIVE(void, torchBackward, jlong handle, jlong grad, jboolean keepGraph, jboolean createGraph) {
  guard(env, __func__, [&] { tensor(handle).backward(tensor(grad), keepGraph == JNI_TRUE, createGraph == JNI_TRUE); });
}

PT_NATIVE(void, zeroGrad, jlong handle) {
  guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    at::Tensor grad = tensor(handle).grad();
    if (grad.defined()) {
      grad.zero_();
    }
  });
}

namespace {
// DJL's optimizers' gradient preparation: a copy, rescaled, clipped from above only (as DJL's JNI does).
at::Tensor scaledClippedGradient(jlong gradient, jfloat rescaleGrad, jfloat clipGrad) {
  at::Tensor grad = tensor(gradient).clone();
  if (rescaleGrad != 1.0f) {
    grad.mul_(rescaleGrad);
  }
  if (clipGrad >= 0.0f) {
    grad.clamp_max_(clipGrad);
  }
  return grad;
}
}  // namespace

// DJL's Adam/AdamW update (MXNet conventions, as DJL's own JNI does it): the gradient is rescaled, clipped from
// above when clipGrad >= 0, then L2-decayed (Adam) or the weight decoupled-decayed (AdamW); the step uses DJL's
// bias-corrected learning rate.
PT_NATIVE(void, adamUpdate, jlong weight, jlong gradient, jlong mean, jlong variance, jfloat lr,
    jfloat lrBiasCorrection, jfloat weightDecay, jfloat rescaleGrad, jfloat clipGrad, jfloat beta1, jfloat beta2,
    jfloat eps, jboolean adamw) {
  guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    at::Tensor& w = tensor(weight);
    at::Tensor grad = scaledClippedGradient(gradient, rescaleGrad, clipGrad);
    if (adamw == JNI_TRUE) {
      w.sub_(w.mul(lr).mul(weightDecay));
    } else {
      grad.add_(w, weightDecay);
    }
    tensor(mean).mul_(beta1).add_(grad, 1 - beta1);
    tensor(variance).mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    w.sub_(tensor(mean).mul(lrBiasCorrection).div(tensor(variance).sqrt().add(eps)));
  });
}

// DJL's SGD update: w -= lr * (min(rescale * g, clip) + wd * w), through the momentum state when momentum != 0.
PT_NATIVE(void, sgdUpdate, jlong weight, jlong gradient, jlong state, jfloat lr, jfloat weightDecay,
    jfloat rescaleGrad, jfloat clipGrad, jfloat momentum) {
  guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    at::Tensor& w = tensor(weight);
    at::Tensor grad = scaledClippedGradient(gradient, rescaleGrad, clipGrad);
    grad.add_(w, weightDecay).mul_(lr);
    if (momentum == 0.0f) {
      w.sub_(grad);
    } else {
      at::Tensor& s = tensor(state);
      s.mul_(momentum).add_(grad);
      w.sub_(s);
    }
  });
}
