// TorchScript modules and IValues of DJL's contract (PtSymbolBlock, IValue, IValueUtils).
#include <torch/script.h>
#if __has_include(<torch/csrc/jit/python/update_graph_executor_opt.h>)
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#define DJLM_HAS_GRAPH_EXECUTOR_OPT
#endif

#include <sstream>

#include "jni_util.h"

#ifdef DJLM_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

using namespace djlm;

namespace {

torch::jit::Module& module(jlong handle) {
  if (handle == 0) {
    throw std::invalid_argument("null module handle");
  }
  return *reinterpret_cast<torch::jit::Module*>(handle);
}

c10::IValue& ivalue(jlong handle) {
  if (handle == 0) {
    throw std::invalid_argument("null IValue handle");
  }
  return *reinterpret_cast<c10::IValue*>(handle);
}

jlong releaseValue(c10::IValue value) {
  return reinterpret_cast<jlong>(new c10::IValue(std::move(value)));
}

std::vector<c10::IValue> ivalues(JNIEnv* env, jlongArray handles) {
  std::vector<c10::IValue> out;
  for (int64_t h : longs(env, handles)) {
    out.push_back(ivalue(h));
  }
  return out;
}

jlongArray releaseValues(JNIEnv* env, const std::vector<c10::IValue>& values) {
  std::vector<jlong> handles;
  for (const auto& v : values) {
    handles.push_back(releaseValue(v));
  }
  return toJava(env, handles);
}

jobjectArray strings(JNIEnv* env, const std::vector<std::string>& values) {
  jobjectArray out = env->NewObjectArray(static_cast<jsize>(values.size()), env->FindClass("java/lang/String"), nullptr);
  checkJava(env);
  for (size_t i = 0; i < values.size(); ++i) {
    jstring s = env->NewStringUTF(values[i].c_str());
    env->SetObjectArrayElement(out, static_cast<jsize>(i), s);
    env->DeleteLocalRef(s);
  }
  return out;
}

torch::jit::Module placed(torch::jit::Module m, const c10::Device& target, bool mapped, jboolean trainParam) {
  if (!mapped) {
    m.to(target);
  }
  // trainParam: make every parameter trainable; otherwise they keep the requires_grad they were saved with.
  if (trainParam == JNI_TRUE) {
    for (at::Tensor p : m.parameters()) {
      p.requires_grad_(true);
    }
  }
  return m;
}

}  // namespace

// Loads a TorchScript file; the values of the requested extra files are written back into extraValues.
PT_NATIVE(jlong, moduleLoad__Ljava_lang_String_2_3IZ_3Ljava_lang_String_2_3Ljava_lang_String_2Z, jstring jpath,
    jintArray jdevice, jboolean mapLocation, jobjectArray extraKeys, jobjectArray extraValues, jboolean trainParam) {
  return guard(env, __func__, [&] {
    c10::Device target = device(env, jdevice);
    torch::jit::ExtraFilesMap extra;
    std::vector<std::string> keys;
    jsize n = extraKeys == nullptr ? 0 : env->GetArrayLength(extraKeys);
    if (n > 0 && (extraValues == nullptr || env->GetArrayLength(extraValues) < n)) {
      throw std::invalid_argument("extraValues must have room for every extra file name");
    }
    for (jsize i = 0; i < n; ++i) {
      keys.push_back(stringAt(env, extraKeys, i));
      extra[keys.back()] = "";
    }
    bool mapped = mapLocation == JNI_TRUE;
    std::string path = string(env, jpath);
    // {} is "no device" for c10::optional and std::optional alike (libtorch switched in 2.x)
    auto m = mapped ? torch::jit::load(path, target, extra) : torch::jit::load(path, {}, extra);
    for (jsize i = 0; i < n; ++i) {
      jstring value = env->NewStringUTF(extra[keys[i]].c_str());
      env->SetObjectArrayElement(extraValues, i, value);
      env->DeleteLocalRef(value);
    }
    return reinterpret_cast<jlong>(new torch::jit::Module(placed(std::move(m), target, mapped, trainParam)));
  });
}

// Loads a TorchScript module from a Java InputStream, read through the given byte[] (size -1: until EOF).
PT_NATIVE(jlong, moduleLoad__Ljava_io_InputStream_2_3IZ_3BJ, jobject stream, jintArray jdevice, jboolean mapLocation,
    jbyteArray buffer, jlong size) {
  return guard(env, __func__, [&] {
    jmethodID read = env->GetMethodID(env->GetObjectClass(stream), "read", "([BII)I");
    checkJava(env);
    jsize capacity = env->GetArrayLength(buffer);
    std::string bytes;
    while (size < 0 || static_cast<jlong>(bytes.size()) < size) {
      jsize want = size < 0 ? capacity : static_cast<jsize>(std::min<jlong>(capacity, size - bytes.size()));
      jint got = env->CallIntMethod(stream, read, buffer, 0, want);
      checkJava(env);
      if (got < 0) {
        if (size >= 0) {
          throw std::runtime_error("stream ended after " + std::to_string(bytes.size()) + " of " +
                                   std::to_string(size) + " bytes");
        }
        break;
      }
      size_t at = bytes.size();
      bytes.resize(at + got);
      env->GetByteArrayRegion(buffer, 0, got, reinterpret_cast<jbyte*>(&bytes[at]));
    }
    std::istringstream in(bytes);
    c10::Device target = device(env, jdevice);
    bool mapped = mapLocation == JNI_TRUE;
    auto m = mapped ? torch::jit::load(in, target) : torch::jit::load(in);
    return reinterpret_cast<jlong>(new torch::jit::Module(placed(std::move(m), target, mapped, JNI_FALSE)));
  });
}

// Writes the module to a Java OutputStream through the given byte[], after its big-endian length if asked.
PT_NATIVE(void, moduleWrite, jlong handle, jobject stream, jbyteArray buffer, jboolean writeSize) {
  guard(env, __func__, [&] {
    std::ostringstream out;
    module(handle).save(out);
    const std::string bytes = out.str();
    jmethodID write = env->GetMethodID(env->GetObjectClass(stream), "write", "([BII)V");
    checkJava(env);
    jsize capacity = env->GetArrayLength(buffer);
    if (writeSize == JNI_TRUE) {
      jbyte length[8];
      for (int i = 0; i < 8; ++i) {
        length[i] = static_cast<jbyte>(static_cast<uint64_t>(bytes.size()) >> (56 - 8 * i));
      }
      env->SetByteArrayRegion(buffer, 0, 8, length);
      env->CallVoidMethod(stream, write, buffer, 0, 8);
      checkJava(env);
    }
    for (size_t at = 0; at < bytes.size(); at += capacity) {
      auto n = static_cast<jsize>(std::min<size_t>(capacity, bytes.size() - at));
      env->SetByteArrayRegion(buffer, 0, n, reinterpret_cast<const jbyte*>(bytes.data() + at));
      env->CallVoidMethod(stream, write, buffer, 0, n);
      checkJava(env);
    }
  });
}

PT_NATIVE(void, moduleEval, jlong handle) {
  guard(env, __func__, [&] { module(handle).eval(); });
}

PT_NATIVE(void, moduleTrain, jlong handle) {
  guard(env, __func__, [&] { module(handle).train(true); });
}

// Inference (isTrain false) runs without grad. separateCudaStream runs the call on a pooled CUDA stream of the
// current device (ignored without CUDA).
PT_NATIVE(jlong, moduleRunMethod, jlong handle, jstring jmethod, jlongArray jinputs, jboolean isTrain,
    jboolean separateCudaStream) {
  return guard(env, __func__, [&] {
    torch::jit::Method method = module(handle).get_method(string(env, jmethod));
    std::vector<c10::IValue> inputs = ivalues(env, jinputs);
    at::AutoGradMode gradMode(isTrain == JNI_TRUE && at::GradMode::is_enabled());
#ifdef DJLM_WITH_CUDA
    if (separateCudaStream == JNI_TRUE && at::hasCUDA()) {
      c10::cuda::CUDAStreamGuard onStream(c10::cuda::getStreamFromPool());
      return releaseValue(method(std::move(inputs)));
    }
#endif
    return releaseValue(method(std::move(inputs)));
  });
}

PT_NATIVE(void, setGraphExecutorOptimize, jboolean enabled) {
  guard(env, __func__, [&] {
#ifdef DJLM_HAS_GRAPH_EXECUTOR_OPT
    torch::jit::setGraphExecutorOptimize(enabled == JNI_TRUE);
#else
    throw Unsupported("this libtorch has no torch::jit::setGraphExecutorOptimize");
#endif
  });
}

PT_NATIVE(jlongArray, moduleGetParams, jlong handle) {
  return guard(env, __func__, [&] {
    std::vector<at::Tensor> params;
    for (const at::Tensor& p : module(handle).parameters()) {
      params.push_back(p);
    }
    return releaseAll(env, params);
  });
}

PT_NATIVE(jobjectArray, moduleGetParamNames, jlong handle) {
  return guard(env, __func__, [&] {
    std::vector<std::string> names;
    for (const auto& p : module(handle).named_parameters()) {
      names.push_back(p.name);
    }
    return strings(env, names);
  });
}

PT_NATIVE(jobjectArray, moduleGetMethodNames, jlong handle) {
  return guard(env, __func__, [&] {
    std::vector<std::string> names;
    for (const auto& m : module(handle).get_methods()) {
      names.push_back(m.name());
    }
    return strings(env, names);
  });
}

PT_NATIVE(void, torchDeleteModule, jlong handle) {
  guard(env, __func__, [&] { delete reinterpret_cast<torch::jit::Module*>(handle); });
}

PT_NATIVE(void, torchDeleteIValue, jlong handle) {
  guard(env, __func__, [&] { delete reinterpret_cast<c10::IValue*>(handle); });
}

// IValues from Java values.

PT_NATIVE(jlong, iValueFromTensor, jlong handle) {
  return guard(env, __func__, [&] { return releaseValue(tensor(handle)); });
}

PT_NATIVE(jlong, iValueFromBool, jboolean value) {
  return guard(env, __func__, [&] { return releaseValue(value == JNI_TRUE); });
}

PT_NATIVE(jlong, iValueFromLong, jlong value) {
  return guard(env, __func__, [&] { return releaseValue(static_cast<int64_t>(value)); });
}

PT_NATIVE(jlong, iValueFromDouble, jdouble value) {
  return guard(env, __func__, [&] { return releaseValue(static_cast<double>(value)); });
}

PT_NATIVE(jlong, iValueFromString, jstring value) {
  return guard(env, __func__, [&] { return releaseValue(string(env, value)); });
}

PT_NATIVE(jlong, iValueFromBoolList, jbooleanArray values) {
  return guard(env, __func__, [&] {
    jsize n = env->GetArrayLength(values);
    std::vector<jboolean> raw(n);
    env->GetBooleanArrayRegion(values, 0, n, raw.data());
    c10::List<bool> list;
    for (jboolean b : raw) {
      list.push_back(b == JNI_TRUE);
    }
    return releaseValue(list);
  });
}

PT_NATIVE(jlong, iValueFromLongList, jlongArray values) {
  return guard(env, __func__, [&] { return releaseValue(c10::List<int64_t>(longs(env, values))); });
}

PT_NATIVE(jlong, iValueFromDoubleList, jdoubleArray values) {
  return guard(env, __func__, [&] {
    jsize n = env->GetArrayLength(values);
    std::vector<double> raw(n);
    env->GetDoubleArrayRegion(values, 0, n, raw.data());
    return releaseValue(c10::List<double>(raw));
  });
}

PT_NATIVE(jlong, iValueFromTensorList, jlongArray handles) {
  return guard(env, __func__, [&] { return releaseValue(c10::List<at::Tensor>(tensors(env, handles))); });
}

// A list's element type is taken from its first element.
PT_NATIVE(jlong, iValueFromList, jlongArray handles) {
  return guard(env, __func__, [&] {
    std::vector<c10::IValue> values = ivalues(env, handles);
    if (values.empty()) {
      throw std::invalid_argument("an empty list has no element type");
    }
    c10::impl::GenericList list(c10::unshapedType(values.front().type()));
    for (auto& v : values) {
      list.push_back(std::move(v));
    }
    return releaseValue(list);
  });
}

PT_NATIVE(jlong, iValueFromTuple, jlongArray handles) {
  return guard(env, __func__, [&] { return releaseValue(c10::ivalue::Tuple::create(ivalues(env, handles))); });
}

PT_NATIVE(jlong, iValueFromStringMap, jobjectArray jkeys, jlongArray handles) {
  return guard(env, __func__, [&] {
    std::vector<at::Tensor> values = tensors(env, handles);
    c10::Dict<std::string, at::Tensor> dict;
    for (size_t i = 0; i < values.size(); ++i) {
      dict.insert(stringAt(env, jkeys, static_cast<jsize>(i)), values[i]);
    }
    return releaseValue(dict);
  });
}

// The value type is taken from the first entry (Tensor for an empty map).
PT_NATIVE(jlong, iValueFromStringIValueMap, jobjectArray jkeys, jlongArray handles) {
  return guard(env, __func__, [&] {
    std::vector<c10::IValue> values = ivalues(env, handles);
    c10::impl::GenericDict dict(c10::StringType::get(),
        values.empty() ? c10::TensorType::get() : c10::unshapedType(values.front().type()));
    for (size_t i = 0; i < values.size(); ++i) {
      dict.insert(stringAt(env, jkeys, static_cast<jsize>(i)), values[i]);
    }
    return releaseValue(dict);
  });
}

// Java values from IValues.

PT_NATIVE(jlong, iValueToTensor, jlong handle) {
  return guard(env, __func__, [&] { return release(ivalue(handle).toTensor()); });
}

PT_NATIVE(jboolean, iValueToBool, jlong handle) {
  return guard(env, __func__, [&] { return static_cast<jboolean>(ivalue(handle).toBool()); });
}

PT_NATIVE(jlong, iValueToLong, jlong handle) {
  return guard(env, __func__, [&] { return static_cast<jlong>(ivalue(handle).toInt()); });
}

PT_NATIVE(jdouble, iValueToDouble, jlong handle) {
  return guard(env, __func__, [&] { return ivalue(handle).toDouble(); });
}

PT_NATIVE(jstring, iValueToString, jlong handle) {
  return guard(env, __func__, [&] { return env->NewStringUTF(ivalue(handle).toStringRef().c_str()); });
}

PT_NATIVE(jbooleanArray, iValueToBoolList, jlong handle) {
  return guard(env, __func__, [&] {
    c10::List<bool> list = ivalue(handle).toBoolList();
    std::vector<jboolean> raw;
    for (bool b : list) {
      raw.push_back(b ? JNI_TRUE : JNI_FALSE);
    }
    jbooleanArray out = env->NewBooleanArray(static_cast<jsize>(raw.size()));
    checkJava(env);
    env->SetBooleanArrayRegion(out, 0, static_cast<jsize>(raw.size()), raw.data());
    return out;
  });
}

PT_NATIVE(jlongArray, iValueToLongList, jlong handle) {
  return guard(env, __func__, [&] {
    c10::List<int64_t> list = ivalue(handle).toIntList();
    return toJava(env, std::vector<jlong>(list.begin(), list.end()));
  });
}

PT_NATIVE(jdoubleArray, iValueToDoubleList, jlong handle) {
  return guard(env, __func__, [&] {
    c10::List<double> list = ivalue(handle).toDoubleList();
    std::vector<double> raw(list.begin(), list.end());
    jdoubleArray out = env->NewDoubleArray(static_cast<jsize>(raw.size()));
    checkJava(env);
    env->SetDoubleArrayRegion(out, 0, static_cast<jsize>(raw.size()), raw.data());
    return out;
  });
}

PT_NATIVE(jlongArray, iValueToTensorList, jlong handle) {
  return guard(env, __func__, [&] { return releaseAll(env, ivalue(handle).toTensorVector()); });
}

PT_NATIVE(jlongArray, iValueToIValueList, jlong handle) {
  return guard(env, __func__, [&] { return releaseValues(env, ivalue(handle).toListRef().vec()); });
}

PT_NATIVE(jlongArray, iValueToIValueTuple, jlong handle) {
  return guard(env, __func__, [&] { return releaseValues(env, ivalue(handle).toTupleRef().elements().vec()); });
}

// {key0, value0, key1, value1, ...}
PT_NATIVE(jlongArray, iValueToMap, jlong handle) {
  return guard(env, __func__, [&] {
    std::vector<c10::IValue> flat;
    for (const auto& entry : ivalue(handle).toGenericDict()) {
      flat.push_back(entry.key());
      flat.push_back(entry.value());
    }
    return releaseValues(env, flat);
  });
}

PT_NATIVE(jstring, iValueGetType, jlong handle) {
  return guard(env, __func__, [&] { return env->NewStringUTF(ivalue(handle).type()->str().c_str()); });
}

#define IVALUE_IS(name, predicate)                                                          \
  PT_NATIVE(jboolean, name, jlong handle) {                                                 \
    return guard(env, __func__, [&] { return static_cast<jboolean>(ivalue(handle).predicate()); }); \
  }

IVALUE_IS(iValueIsTensor, isTensor)
IVALUE_IS(iValueIsBool, isBool)
IVALUE_IS(iValueIsLong, isInt)
IVALUE_IS(iValueIsDouble, isDouble)
IVALUE_IS(iValueIsString, isString)
IVALUE_IS(iValueIsBoolList, isBoolList)
IVALUE_IS(iValueIsLongList, isIntList)
IVALUE_IS(iValueIsDoubleList, isDoubleList)
IVALUE_IS(iValueIsTensorList, isTensorList)
IVALUE_IS(iValueIsList, isList)
IVALUE_IS(iValueIsTuple, isTuple)
IVALUE_IS(iValueIsMap, isGenericDict)
