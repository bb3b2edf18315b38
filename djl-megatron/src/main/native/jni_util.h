// Shared helpers of libdjl_torch.so: handles, dtype/device mapping, JNI arrays, and the guard that turns
// every C++ exception into ai.djl.engine.EngineException (a C++ exception crossing JNI aborts the JVM).
#pragma once

#include <ATen/ATen.h>
#include <jni.h>
#include <torch/version.h>

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define DJLM_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// The libtorch version the build found (the packaging version, e.g. 1.13.1, which Debian's headers report as
// 1.13.0); build-native.sh passes it, a plain CMake build falls back to the headers.
#ifndef DJLM_LIBTORCH_VERSION
#define DJLM_LIBTORCH_VERSION TORCH_VERSION
#endif

// Entry points of DJL's contract (ai.djl.pytorch.jni.PyTorchLibrary, instance methods) and of the project's
// own natives (org.djlmegatron.engine.TorchNative, static methods). Overloaded Java natives carry their JNI
// signature suffix in the name (torchSum__J_3JZ).
#define PT_NATIVE(ret, name, ...) \
  extern "C" JNIEXPORT ret JNICALL Java_ai_djl_pytorch_jni_PyTorchLibrary_##name(JNIEnv* env, jobject, ##__VA_ARGS__)
#define DJLM_NATIVE(ret, name, ...) \
  extern "C" JNIEXPORT ret JNICALL Java_org_djlmegatron_engine_TorchNative_##name(JNIEnv* env, jclass, ##__VA_ARGS__)

namespace djlm {

// A Java exception is already pending (a JNI call back into Java threw); the guard leaves it in place.
struct JavaPending : std::exception {};

// Something this libtorch cannot do; the message says why.
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws ai.djl.engine.EngineException("<native>: <message>") unless a Java exception is already pending.
void throwEngine(JNIEnv* env, const char* function, const std::string& message);

// Runs a native's body; any C++ exception becomes an EngineException naming the native (from __func__).
template <typename Body>
auto guard(JNIEnv* env, const char* function, Body&& body) -> decltype(body()) {
  using R = decltype(body());
  try {
    return body();
  } catch (const JavaPending&) {
  } catch (const c10::Error& e) {
    throwEngine(env, function, e.what_without_backtrace());
  } catch (const std::exception& e) {
    throwEngine(env, function, e.what());
  } catch (...) {
    throwEngine(env, function, "unknown C++ exception");
  }
  if constexpr (!std::is_void_v<R>) {
    return R{};
  }
}

// Tensor handles are heap-allocated at::Tensor objects owned by the Java side (torchDeleteTensor frees them).
inline at::Tensor& tensor(jlong handle) {
  if (handle == 0) {
    throw std::invalid_argument("null tensor handle");
  }
  return *reinterpret_cast<at::Tensor*>(handle);
}

// DJL passes 0 for an absent optional tensor (bias, weight).
inline at::Tensor optionalTensor(jlong handle) {
  return handle == 0 ? at::Tensor() : *reinterpret_cast<at::Tensor*>(handle);
}

inline jlong release(at::Tensor t) {
  return reinterpret_cast<jlong>(new at::Tensor(std::move(t)));
}

// Throws JavaPending when the last JNI call left a Java exception.
inline void checkJava(JNIEnv* env) {
  if (env->ExceptionCheck()) {
    throw JavaPending();
  }
}

std::vector<int64_t> longs(JNIEnv* env, jlongArray array);
jlongArray toJava(JNIEnv* env, const std::vector<jlong>& values);
jlongArray releaseAll(JNIEnv* env, const std::vector<at::Tensor>& tensors);
std::vector<at::Tensor> tensors(JNIEnv* env, jlongArray handles);
std::string string(JNIEnv* env, jstring value);
std::string stringAt(JNIEnv* env, jobjectArray array, jsize index);

// DJL DataType ordinals (FLOAT32 = 0 ... INT16 = 15) <-> libtorch scalar types.
at::ScalarType scalarType(jint dtype);
jint dtypeOrdinal(at::ScalarType type);

// DJL device arrays are {deviceType, deviceId}: 0 = cpu, 1 = gpu (CUDA), 13 = mps (c10::DeviceType values).
c10::Device device(JNIEnv* env, jintArray jdevice);

// Options of DJL's creation natives. Layout 0 = strided, 1 = sparse COO, 2 = MKLDNN (created strided, then
// converted by finishCreation); dtype UNKNOWN keeps the default dtype. requires_grad is applied last, so that
// in-place initialisation (uniform_, normal_) and layout conversion happen on a plain tensor.
at::TensorOptions creationOptions(JNIEnv* env, jint dtype, jint layout, jintArray jdevice);
jlong finishCreation(at::Tensor t, jint layout, jboolean requiresGrad);

}  // namespace djlm
