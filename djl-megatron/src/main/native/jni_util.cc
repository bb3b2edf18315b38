#include "jni_util.h"

#include <cstring>

namespace djlm {

namespace {

constexpr const char* kDataTypeNames[] = {"FLOAT32", "FLOAT64", "FLOAT16", "UINT8", "INT32", "INT8", "INT64",
    "BOOLEAN", "COMPLEX64", "UNKNOWN", "STRING", "BFLOAT16", "UINT64", "UINT32", "UINT16", "INT16"};
constexpr jint kUnknown = 9;

// "Java_ai_djl_pytorch_jni_PyTorchLibrary_torchSum__J_3JZ" -> "torchSum".
std::string nativeName(const char* function) {
  std::string name(function);
  for (const char* owner : {"PyTorchLibrary_", "TorchNative_"}) {
    auto at = name.find(owner);
    if (at != std::string::npos) {
      name = name.substr(at + std::strlen(owner));
      break;
    }
  }
  return name.substr(0, name.find("__"));
}

}  // namespace

void throwEngine(JNIEnv* env, const char* function, const std::string& message) {
  if (env->ExceptionCheck()) {
    return;
  }
  jclass engineException = env->FindClass("ai/djl/engine/EngineException");
  if (engineException == nullptr) {  // DJL api not visible from this class loader
    env->ExceptionClear();
    engineException = env->FindClass("java/lang/RuntimeException");
  }
  env->ThrowNew(engineException, (nativeName(function) + ": " + message).c_str());
}

std::vector<int64_t> longs(JNIEnv* env, jlongArray array) {
  if (array == nullptr) {
    return {};
  }
  jsize n = env->GetArrayLength(array);
  std::vector<int64_t> out(n);
  env->GetLongArrayRegion(array, 0, n, reinterpret_cast<jlong*>(out.data()));
  return out;
}

jlongArray toJava(JNIEnv* env, const std::vector<jlong>& values) {
  jlongArray out = env->NewLongArray(static_cast<jsize>(values.size()));
  checkJava(env);
  env->SetLongArrayRegion(out, 0, static_cast<jsize>(values.size()), values.data());
  return out;
}

jlongArray releaseAll(JNIEnv* env, const std::vector<at::Tensor>& tensors) {
  std::vector<jlong> handles;
  handles.reserve(tensors.size());
  for (const auto& t : tensors) {
    handles.push_back(release(t));
  }
  return toJava(env, handles);
}

std::vector<at::Tensor> tensors(JNIEnv* env, jlongArray handles) {
  std::vector<at::Tensor> out;
  for (int64_t h : longs(env, handles)) {
    out.push_back(tensor(h));
  }
  return out;
}

std::string string(JNIEnv* env, jstring value) {
  if (value == nullptr) {
    throw std::invalid_argument("null string");
  }
  const char* chars = env->GetStringUTFChars(value, nullptr);
  std::string out(chars);
  env->ReleaseStringUTFChars(value, chars);
  return out;
}

std::string stringAt(JNIEnv* env, jobjectArray array, jsize index) {
  auto element = static_cast<jstring>(env->GetObjectArrayElement(array, index));
  checkJava(env);
  std::string out = string(env, element);
  env->DeleteLocalRef(element);
  return out;
}

at::ScalarType scalarType(jint dtype) {
  switch (dtype) {
    case 0: return at::kFloat;
    case 1: return at::kDouble;
    case 2: return at::kHalf;
    case 3: return at::kByte;
    case 4: return at::kInt;
    case 5: return at::kChar;
    case 6: return at::kLong;
    case 7: return at::kBool;
    case 8: return at::kComplexFloat;
    case 11: return at::kBFloat16;
    case 15: return at::kShort;
    case 12:
    case 13:
    case 14:
#if DJLM_TORCH_AT_LEAST(2, 3)
      return dtype == 12 ? c10::ScalarType::UInt64 : dtype == 13 ? c10::ScalarType::UInt32 : c10::ScalarType::UInt16;
#else
      throw Unsupported(std::string("DataType ") + kDataTypeNames[dtype] +
                        " needs libtorch >= 2.3; this library is built against libtorch " DJLM_LIBTORCH_VERSION);
#endif
    case 9:
    case 10:
      throw Unsupported(std::string("DataType ") + kDataTypeNames[dtype] + " has no libtorch dtype");
    default:
      throw std::invalid_argument("unknown DataType ordinal " + std::to_string(dtype));
  }
}

jint dtypeOrdinal(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    case at::kByte: return 3;
    case at::kInt: return 4;
    case at::kChar: return 5;
    case at::kLong: return 6;
    case at::kBool: return 7;
    case at::kComplexFloat: return 8;
    case at::kBFloat16: return 11;
    case at::kShort: return 15;
#if DJLM_TORCH_AT_LEAST(2, 3)
    case c10::ScalarType::UInt64: return 12;
    case c10::ScalarType::UInt32: return 13;
    case c10::ScalarType::UInt16: return 14;
#endif
    default: return kUnknown;
  }
}

c10::Device device(JNIEnv* env, jintArray jdevice) {
  if (jdevice == nullptr || env->GetArrayLength(jdevice) < 2) {
    throw std::invalid_argument("device must be {deviceType, deviceId}");
  }
  jint d[2];
  env->GetIntArrayRegion(jdevice, 0, 2, d);
  auto type = static_cast<c10::DeviceType>(d[0]);
  // DJL's cpu device has id -1 or 0; libtorch wants no index for the CPU.
  return type == c10::DeviceType::CPU ? c10::Device(type) : c10::Device(type, static_cast<c10::DeviceIndex>(d[1]));
}

at::TensorOptions creationOptions(JNIEnv* env, jint dtype, jint layout, jintArray jdevice) {
  auto options = at::TensorOptions().device(device(env, jdevice)).layout(layout == 1 ? at::kSparse : at::kStrided);
  return dtype == kUnknown ? options : options.dtype(scalarType(dtype));
}

jlong finishCreation(at::Tensor t, jint layout, jboolean requiresGrad) {
  if (layout == 2) {
    t = t.to_mkldnn();
  }
  if (requiresGrad == JNI_TRUE) {
    t.requires_grad_(true);
  }
  return release(std::move(t));
}

}  // namespace djlm
