// Tensor creation, properties, conversion and memory of DJL's contract.
#include <cstring>

#include "jni_util.h"

using namespace djlm;

namespace {

// Buffers up to this size are copied into libtorch memory instead of aliased. DJL wraps every Number operand
// (mul(Number), div(Number), ...) in a tensor over a small direct buffer and frees it right after the op,
// while autograd may keep that tensor for backward: aliasing it produced random Inf/NaN gradients.
constexpr int64_t kCopyAtMostBytes = 64;

int64_t byteSize(const std::vector<int64_t>& shape, at::ScalarType type) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw std::invalid_argument("negative dimension in shape");
    }
    n *= d;
  }
  return n * static_cast<int64_t>(c10::elementSize(type));
}

// A CPU tensor over a Java direct buffer: aliased (DJL's semantics: the Java array keeps the buffer alive),
// or copied when small.
at::Tensor javaMemory(JNIEnv* env, jobject buffer, const std::vector<int64_t>& shape, at::ScalarType type) {
  void* address = buffer == nullptr ? nullptr : env->GetDirectBufferAddress(buffer);
  if (address == nullptr) {
    throw std::invalid_argument("the buffer is not a direct ByteBuffer");
  }
  int64_t bytes = byteSize(shape, type);
  if (env->GetDirectBufferCapacity(buffer) < bytes) {
    throw std::invalid_argument("direct buffer of " + std::to_string(env->GetDirectBufferCapacity(buffer)) +
                                " bytes is smaller than the " + std::to_string(bytes) + " bytes of the tensor");
  }
  auto options = at::TensorOptions().dtype(type);
  if (bytes <= kCopyAtMostBytes) {
    at::Tensor copy = at::empty(shape, options);
    std::memcpy(copy.data_ptr(), address, bytes);
    return copy;
  }
  return at::from_blob(address, shape, options);
}

at::ScalarType blobType(jint dtype) {
  return dtype == 9 ? at::typeMetaToScalarType(at::get_default_dtype()) : scalarType(dtype);
}

}  // namespace

PT_NATIVE(jlong, torchFromBlob, jobject buffer, jlongArray jshape, jint dtype, jint layout, jintArray jdevice,
    jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    at::Tensor t = javaMemory(env, buffer, longs(env, jshape), blobType(dtype));
    if (layout == 1) {
      t = t.to_sparse();
    }
    c10::Device target = device(env, jdevice);
    if (!target.is_cpu()) {
      t = t.to(target);
    }
    return finishCreation(t, layout, requiresGrad);
  });
}

// Replaces the tensor's storage by the buffer's contents (DJL's NDArray.set(Buffer)): on the CPU the new
// storage is the Java buffer itself (or a copy when small), elsewhere a device copy.
PT_NATIVE(void, torchSet, jlong handle, jobject buffer) {
  guard(env, __func__, [&] {
    at::Tensor& t = tensor(handle);
    at::Tensor source = javaMemory(env, buffer, t.sizes().vec(), t.scalar_type());
    at::AutoDispatchBelowADInplaceOrView skipAutograd;  // a storage swap, not a recorded in-place op
    t.set_(t.is_cpu() ? source : source.to(t.device()));
  });
}

PT_NATIVE(jlong, torchEmpty, jlongArray jshape, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::empty(longs(env, jshape), creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchZeros, jlongArray jshape, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::zeros(longs(env, jshape), creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchOnes, jlongArray jshape, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::ones(longs(env, jshape), creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchFull, jlongArray jshape, jdouble value, jint dtype, jint layout, jintArray jdevice,
    jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::full(longs(env, jshape), value, creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchZerosLike, jlong handle, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::zeros_like(tensor(handle), creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchOnesLike, jlong handle, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::ones_like(tensor(handle), creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchArange, jfloat start, jfloat end, jfloat step, jint dtype, jint layout, jintArray jdevice,
    jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::arange(start, end, step, creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchLinspace, jfloat start, jfloat end, jint steps, jint dtype, jint layout, jintArray jdevice,
    jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::linspace(start, end, steps, creationOptions(env, dtype, layout, jdevice)), layout,
        requiresGrad);
  });
}

PT_NATIVE(jlong, torchEye, jint n, jint m, jint dtype, jint layout, jintArray jdevice, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    return finishCreation(at::eye(n, m, creationOptions(env, dtype, layout, jdevice)), layout, requiresGrad);
  });
}

PT_NATIVE(jlong, torchHannWindow, jlong length, jboolean periodic, jintArray jdevice) {
  return guard(env, __func__, [&] {
    return release(at::hann_window(length, periodic == JNI_TRUE, at::TensorOptions().device(device(env, jdevice))));
  });
}

PT_NATIVE(jlong, torchSparseCoo, jlongArray jshape, jlong indices, jlong values, jboolean requiresGrad) {
  return guard(env, __func__, [&] {
    const at::Tensor& v = tensor(values);
    at::Tensor t = at::sparse_coo_tensor(tensor(indices), v, longs(env, jshape), v.options().layout(at::kSparse));
    return finishCreation(t, 1, requiresGrad);
  });
}

PT_NATIVE(void, torchDeleteTensor, jlong handle) {
  guard(env, __func__, [&] { delete reinterpret_cast<at::Tensor*>(handle); });
}

PT_NATIVE(jlongArray, torchSizes, jlong handle) {
  return guard(env, __func__, [&] {
    auto sizes = tensor(handle).sizes();
    return toJava(env, std::vector<jlong>(sizes.begin(), sizes.end()));
  });
}

PT_NATIVE(jint, torchDType, jlong handle) {
  return guard(env, __func__, [&] { return dtypeOrdinal(tensor(handle).scalar_type()); });
}

PT_NATIVE(jintArray, torchDevice, jlong handle) {
  return guard(env, __func__, [&] {
    c10::Device d = tensor(handle).device();
    jint out[2] = {static_cast<jint>(d.type()), static_cast<jint>(d.index())};
    jintArray array = env->NewIntArray(2);
    checkJava(env);
    env->SetIntArrayRegion(array, 0, 2, out);
    return array;
  });
}

PT_NATIVE(jint, torchLayout, jlong handle) {
  return guard(env, __func__, [&] {
    switch (tensor(handle).layout()) {
      case at::kStrided: return 0;
      case at::kSparse: return 1;
      case at::kMkldnn: return 2;
      default: throw Unsupported("layout has no DJL SparseFormat (only strided, sparse COO and MKLDNN)");
    }
  });
}

// DJL's cast and device move: not recorded by autograd (DJL runs it without grad; TorchNative.castTo is the
// differentiable cast).
PT_NATIVE(jlong, torchTo, jlong handle, jint dtype, jintArray jdevice) {
  return guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    return release(tensor(handle).to(device(env, jdevice), scalarType(dtype), false, false));
  });
}

PT_NATIVE(jlong, torchToSparse, jlong handle) {
  return guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    return release(tensor(handle).to_sparse());
  });
}

PT_NATIVE(jlong, torchToDense, jlong handle) {
  return guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    return release(tensor(handle).to_dense());
  });
}

// DJL's duplicate(): a copy outside the graph.
PT_NATIVE(jlong, tensorClone, jlong handle) {
  return guard(env, __func__, [&] {
    at::NoGradGuard noGrad;
    return release(tensor(handle).clone());
  });
}

PT_NATIVE(jboolean, torchIsContiguous, jlong handle) {
  return guard(env, __func__, [&] { return static_cast<jboolean>(tensor(handle).is_contiguous()); });
}

PT_NATIVE(jlong, torchToContiguous, jlong handle) {
  return guard(env, __func__, [&] { return release(tensor(handle).contiguous()); });
}

// A copy of the elements as bytes in native order (row-major, lazy conjugation resolved).
PT_NATIVE(jbyteArray, torchDataPtr, jlong handle) {
  return guard(env, __func__, [&] {
    const at::Tensor& t = tensor(handle);
    at::Tensor dense = (t.is_sparse() || t.is_mkldnn()) ? t.to_dense() : t;
    dense = dense.resolve_conj().contiguous();
    auto bytes = static_cast<jsize>(dense.nbytes());
    jbyteArray out = env->NewByteArray(bytes);
    checkJava(env);
    env->SetByteArrayRegion(out, 0, bytes, static_cast<const jbyte*>(dense.data_ptr()));
    return out;
  });
}

// The tensor's own memory as a direct buffer, no copy (for a CUDA tensor: the device address, never to be
// read from Java). DJL calls it on dense contiguous CPU tensors.
PT_NATIVE(jobject, torchDirectByteBuffer, jlong handle) {
  return guard(env, __func__, [&] {
    const at::Tensor& t = tensor(handle);
    static char empty;  // JNI wants a non-null address even for an empty buffer
    void* address = t.nbytes() == 0 ? &empty : t.data_ptr();
    jobject out = env->NewDirectByteBuffer(address, static_cast<jlong>(t.nbytes()));
    checkJava(env);
    return out;
  });
}

PT_NATIVE(jboolean, contentEqual, jlong a, jlong b) {
  return guard(env, __func__, [&] { return static_cast<jboolean>(tensor(a).equal(tensor(b))); });
}
