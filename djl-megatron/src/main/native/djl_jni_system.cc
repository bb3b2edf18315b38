// Process-wide settings of DJL's contract: grad mode, threads, seeds, build features, profiler, CUDA cache.
#include <ATen/Parallel.h>
#if __has_include(<torch/csrc/autograd/profiler_legacy.h>)
#include <torch/csrc/autograd/profiler_legacy.h>
#define DJLM_HAS_LEGACY_PROFILER
#endif

#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "jni_util.h"

#ifdef DJLM_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

using namespace djlm;

PT_NATIVE(jboolean, torchIsGradMode) {
  return guard(env, __func__, [&] { return static_cast<jboolean>(at::GradMode::is_enabled()); });
}

// Grad mode is thread-local in libtorch; the project enables it per rank thread.
PT_NATIVE(void, torchSetGradMode, jboolean enable) {
  guard(env, __func__, [&] { at::GradMode::set_enabled(enable == JNI_TRUE); });
}

PT_NATIVE(jint, torchGetNumInteropThreads) {
  return guard(env, __func__, [&] { return static_cast<jint>(at::get_num_interop_threads()); });
}

PT_NATIVE(jint, torchGetNumThreads) {
  return guard(env, __func__, [&] { return static_cast<jint>(at::get_num_threads()); });
}

PT_NATIVE(void, torchSetNumInteropThreads, jint threads) {
  guard(env, __func__, [&] { at::set_num_interop_threads(threads); });
}

PT_NATIVE(void, torchSetNumThreads, jint threads) {
  guard(env, __func__, [&] { at::set_num_threads(threads); });
}

PT_NATIVE(void, torchSetBenchmarkCuDNN, jboolean enable) {
  guard(env, __func__, [&] { at::globalContext().setBenchmarkCuDNN(enable == JNI_TRUE); });
}

// Seeds the CPU generator and, where libtorch has CUDA, every CUDA generator (torch.manual_seed).
PT_NATIVE(void, torchManualSeed, jlong seed) {
  guard(env, __func__, [&] { at::manual_seed(static_cast<uint64_t>(seed)); });
}

PT_NATIVE(void, torchShowConfig, jobject set) {
  guard(env, __func__, [&] {
    jclass setClass = env->GetObjectClass(set);
    jmethodID add = env->GetMethodID(setClass, "add", "(Ljava/lang/Object;)Z");
    checkJava(env);
    auto put = [&](bool present, const char* feature) {
      if (present) {
        jstring name = env->NewStringUTF(feature);
        env->CallBooleanMethod(set, add, name);
        env->DeleteLocalRef(name);
        checkJava(env);
      }
    };
    put(at::hasCUDA(), "CUDA");
    put(at::hasCUDA() && at::globalContext().hasCuDNN(), "CUDNN");
    put(at::hasMKL(), "MKL");
    put(at::hasMKLDNN(), "MKLDNN");
    put(at::hasOpenMP(), "OPENMP");
  });
}

#ifdef DJLM_HAS_LEGACY_PROFILER
namespace {

// The legacy profiler is enabled on the calling thread; RecordProfile writes a chrome://tracing JSON when it
// is destroyed. DJL names the output file only when profiling stops, so the trace goes to memory first.
struct Profile {
  std::ostringstream trace;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> recorder;
  std::thread::id thread;  // the profiler state is thread-local: only this thread can stop it
};
std::mutex profileMutex;
std::unique_ptr<Profile> activeProfile;

}  // namespace

// useCuda, recordShape and profileMemory are not honoured: RecordProfile profiles CPU ranges only.
PT_NATIVE(void, torchStartProfile, jboolean, jboolean, jboolean) {
  guard(env, __func__, [&] {
    std::lock_guard<std::mutex> lock(profileMutex);
    if (activeProfile) {
      throw std::logic_error("a profile is already running; call stopProfile first");
    }
    auto profile = std::make_unique<Profile>();
    profile->thread = std::this_thread::get_id();
    profile->recorder = std::make_unique<torch::autograd::profiler::RecordProfile>(profile->trace);
    activeProfile = std::move(profile);
  });
}

PT_NATIVE(void, torchStopProfile, jstring outputFile) {
  guard(env, __func__, [&] {
    std::lock_guard<std::mutex> lock(profileMutex);
    if (!activeProfile) {
      throw std::logic_error("no profile is running; call startProfile first");
    }
    if (activeProfile->thread != std::this_thread::get_id()) {
      throw std::logic_error("stopProfile must run on the thread that called startProfile");
    }
    std::string path = string(env, outputFile);
    std::unique_ptr<Profile> profile = std::move(activeProfile);
    profile->recorder.reset();  // stops profiling and writes the events
    std::ofstream file(path);
    file << profile->trace.str();
    if (!file) {
      throw std::runtime_error("cannot write profile to " + path);
    }
  });
}
#else
PT_NATIVE(void, torchStartProfile, jboolean, jboolean, jboolean) {
  guard(env, __func__, [&] { throw Unsupported("this libtorch has no legacy profiler (RecordProfile)"); });
}

PT_NATIVE(void, torchStopProfile, jstring) {
  guard(env, __func__, [&] { throw Unsupported("this libtorch has no legacy profiler (RecordProfile)"); });
}
#endif

PT_NATIVE(void, torchCudaEmptyCache) {
  guard(env, __func__, [&] {
#ifdef DJLM_WITH_CUDA
    if (at::hasCUDA()) {
      c10::cuda::CUDACachingAllocator::emptyCache();
    }
#endif
  });
}
