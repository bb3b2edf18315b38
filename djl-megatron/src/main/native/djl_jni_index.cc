// Indexing, slicing, gathering and scattering of DJL's contract. DJL builds advanced indices natively: an index
// handle (torchIndexInit) collects TensorIndex elements, is applied with torchIndexAdvGet/Put and freed with
// torchDeleteIndex.
#include "jni_util.h"

using namespace djlm;
using at::indexing::TensorIndex;

namespace {

using IndexList = std::vector<TensorIndex>;

IndexList& indexList(jlong handle) {
  if (handle == 0) {
    throw std::invalid_argument("null index handle");
  }
  return *reinterpret_cast<IndexList*>(handle);
}

IndexList slices(JNIEnv* env, jlongArray jmin, jlongArray jmax, jlongArray jstep) {
  auto min = longs(env, jmin);
  auto max = longs(env, jmax);
  auto step = longs(env, jstep);
  if (max.size() != min.size() || step.size() != min.size()) {
    throw std::invalid_argument("min, max and step indices differ in length");
  }
  IndexList out;
  for (size_t i = 0; i < min.size(); ++i) {
    out.emplace_back(at::indexing::Slice(min[i], max[i], step[i]));
  }
  return out;
}

// Rewrites slices that cover a whole dimension (start 0 or none, step 1, stop none or past the end) as
// Slice(0, size): libtorch's get_item/set_item then skip them, as Python's indexing does after
// PySlice_AdjustIndices. Otherwise every ':' of an NDIndex is an aten::slice whose backward allocates a
// zeroed tensor of the input's full size and copies into it: x[:, :, :, 0:2, :] cost five of them.
IndexList withFullSlicesSkipped(const at::Tensor& t, const IndexList& in) {
  int64_t consumed = 0;
  int ellipses = 0;
  for (const TensorIndex& i : in) {
    if (i.is_ellipsis()) {
      ++ellipses;
    } else if (i.is_integer() || i.is_slice()) {
      ++consumed;
    } else if (i.is_tensor()) {
      const at::Tensor& idx = i.tensor();
      consumed += idx.scalar_type() == at::kBool || idx.scalar_type() == at::kByte ? std::max<int64_t>(idx.dim(), 1) : 1;
    }
  }
  if (ellipses > 1 || consumed > t.dim()) {
    return in;  // libtorch reports the error
  }
  IndexList out;
  out.reserve(in.size());
  int64_t dim = 0;
  for (const TensorIndex& i : in) {
    if (i.is_slice()) {
      const at::indexing::Slice& s = i.slice();
      int64_t size = t.size(dim);
      bool whole = s.start() == 0 && s.step() == 1 && s.stop() >= size;
      out.emplace_back(whole ? at::indexing::Slice(0, size, 1) : s);
      ++dim;
      continue;
    }
    out.push_back(i);
    if (i.is_ellipsis()) {
      dim += t.dim() - consumed;
    } else if (i.is_integer()) {
      ++dim;
    } else if (i.is_tensor()) {
      const at::Tensor& idx = i.tensor();
      dim += idx.scalar_type() == at::kBool || idx.scalar_type() == at::kByte ? std::max<int64_t>(idx.dim(), 1) : 1;
    }
  }
  return out;
}

}  // namespace

PT_NATIVE(jlong, torchGetItem__JJ, jlong handle, jlong index) {
  return guard(env, __func__, [&] { return release(tensor(handle).index({TensorIndex(static_cast<int64_t>(index))})); });
}

PT_NATIVE(jlong, torchGetItem__J_3J, jlong handle, jlongArray jindices) {
  return guard(env, __func__, [&] {
    IndexList indices;
    for (int64_t i : longs(env, jindices)) {
      indices.emplace_back(i);
    }
    return release(tensor(handle).index(indices));
  });
}

PT_NATIVE(jlong, torchIndex, jlong handle, jlongArray jmin, jlongArray jmax, jlongArray jstep) {
  return guard(env, __func__, [&] { const at::Tensor& t = tensor(handle);
    return release(t.index(withFullSlicesSkipped(t, slices(env, jmin, jmax, jstep)))); });
}

PT_NATIVE(void, torchIndexPut, jlong handle, jlong value, jlongArray jmin, jlongArray jmax, jlongArray jstep) {
  guard(env, __func__, [&] {
    at::Tensor t = tensor(handle);
    t.index_put_(withFullSlicesSkipped(t, slices(env, jmin, jmax, jstep)), tensor(value));
  });
}

PT_NATIVE(jlong, torchIndexInit, jint size) {
  return guard(env, __func__, [&] {
    auto* list = new IndexList();
    list->reserve(size);
    return reinterpret_cast<jlong>(list);
  });
}

PT_NATIVE(void, torchDeleteIndex, jlong handle) {
  guard(env, __func__, [&] { delete reinterpret_cast<IndexList*>(handle); });
}

PT_NATIVE(void, torchIndexAppendNoneEllipsis, jlong handle, jboolean isEllipsis) {
  guard(env, __func__, [&] {
    if (isEllipsis == JNI_TRUE) {
      indexList(handle).emplace_back(at::indexing::Ellipsis);
    } else {
      indexList(handle).emplace_back(at::indexing::None);
    }
  });
}

// nullBits: 2 = no start, 1 = no stop (DJL's NDIndexSlice with null ends).
PT_NATIVE(void, torchIndexAppendSlice, jlong handle, jlong start, jlong stop, jlong step, jint nullBits) {
  guard(env, __func__, [&] {
    using at::indexing::None;
    using at::indexing::Slice;
    bool noStart = (nullBits & 2) != 0;
    bool noStop = (nullBits & 1) != 0;
    Slice slice = noStart ? (noStop ? Slice(None, None, step) : Slice(None, stop, step))
                          : (noStop ? Slice(start, None, step) : Slice(start, stop, step));
    indexList(handle).emplace_back(slice);
  });
}

PT_NATIVE(void, torchIndexAppendFixed, jlong handle, jlong index) {
  guard(env, __func__, [&] { indexList(handle).emplace_back(static_cast<int64_t>(index)); });
}

PT_NATIVE(void, torchIndexAppendArray, jlong handle, jlong array) {
  guard(env, __func__, [&] { indexList(handle).emplace_back(tensor(array)); });
}

PT_NATIVE(jlong, torchIndexAdvGet, jlong handle, jlong index) {
  return guard(env, __func__, [&] {
    const at::Tensor& t = tensor(handle);
    return release(t.index(withFullSlicesSkipped(t, indexList(index))));
  });
}

PT_NATIVE(void, torchIndexAdvPut, jlong handle, jlong index, jlong data) {
  guard(env, __func__, [&] {
    at::Tensor t = tensor(handle);
    t.index_put_(withFullSlicesSkipped(t, indexList(index)), tensor(data));
  });
}

PT_NATIVE(jlong, torchSlice, jlong handle, jlong dim, jlong start, jlong end, jlong step) {
  return guard(env, __func__, [&] { return release(tensor(handle).slice(dim, start, end, step)); });
}

PT_NATIVE(jlong, torchGather, jlong handle, jlong index, jlong dim, jboolean sparseGrad) {
  return guard(env, __func__, [&] {
    return release(tensor(handle).gather(dim, tensor(index), sparseGrad == JNI_TRUE));
  });
}

PT_NATIVE(jlong, torchTake, jlong handle, jlong index) {
  return guard(env, __func__, [&] { return release(tensor(handle).take(tensor(index))); });
}

PT_NATIVE(jlong, torchPut, jlong handle, jlong index, jlong data) {
  return guard(env, __func__, [&] { return release(tensor(handle).put(tensor(index), tensor(data))); });
}

PT_NATIVE(jlong, torchScatter, jlong handle, jlong index, jlong value, jint axis) {
  return guard(env, __func__, [&] { return release(tensor(handle).scatter(axis, tensor(index), tensor(value))); });
}

PT_NATIVE(jlong, torchMaskedSelect, jlong handle, jlong mask) {
  return guard(env, __func__, [&] { return release(tensor(handle).masked_select(tensor(mask))); });
}

PT_NATIVE(void, torchMaskedPut, jlong handle, jlong value, jlong mask) {
  guard(env, __func__, [&] { tensor(handle).masked_fill_(tensor(mask), tensor(value)); });
}

PT_NATIVE(jlong, torchNonZeros, jlong handle) {
  return guard(env, __func__, [&] { return release(tensor(handle).nonzero()); });
}

PT_NATIVE(jlong, torchWhere, jlong condition, jlong self, jlong other) {
  return guard(env, __func__, [&] { return release(at::where(tensor(condition), tensor(self), tensor(other))); });
}
