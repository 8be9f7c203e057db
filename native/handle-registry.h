// The JS handles of the addon's native objects (DeviceLoop, SlotLoop). A handle is an external over a Handle that
// lives exactly as long as the external: close() deletes the object and leaves the Handle (so a closed handle is an
// error, never a newer object at a reused address), and the external's finalizer deletes both, releasing an object
// that was never closed (a dropped handle, a worker thread's teardown). The set of live Handles is what makes a
// foreign external an error, not a crash; worker threads of one process share it, hence the lock.
#pragma once
#include <node_api.h>

#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>

namespace genqueue {

template <typename T>
class HandleRegistry {
 public:
  // what: the object's name in errors ("not an open <what>").
  explicit HandleRegistry(const char* what) : what_(what) {}

  // A new handle owning object (deleted here if the handle cannot be made).
  napi_value wrap(napi_env env, T* object) {
    auto handle = std::make_unique<Handle>(Handle{object, this});
    napi_value external;
    if (napi_create_external(env, handle.get(), finalize, nullptr, &external) != napi_ok) {
      delete object;
      throw std::runtime_error("N-API: napi_create_external");
    }
    std::lock_guard<std::mutex> lock(lock_);
    handles_.insert(handle.release());  // the external's finalizer owns it now
    return external;
  }

  // The open object behind a handle; throws for a closed or foreign one.
  T* get(napi_env env, napi_value v) {
    T* object = handleOf(env, v)->object;
    if (object == nullptr) throw std::invalid_argument(std::string("not an open ") + what_);
    return object;
  }

  // Deletes the object; closing a closed handle again does nothing.
  void close(napi_env env, napi_value v) {
    Handle* handle = handleOf(env, v);
    T* object = handle->object;
    handle->object = nullptr;
    delete object;
  }

 private:
  struct Handle {
    T* object;
    HandleRegistry* registry;
  };

  Handle* handleOf(napi_env env, napi_value v) {
    void* p = nullptr;
    bool ours = napi_get_value_external(env, v, &p) == napi_ok;
    if (ours) {
      std::lock_guard<std::mutex> lock(lock_);
      ours = handles_.count(static_cast<Handle*>(p)) > 0;
    }
    if (!ours) throw std::invalid_argument(std::string("not an open ") + what_);
    return static_cast<Handle*>(p);
  }

  static void finalize(napi_env, void* data, void*) {
    auto* handle = static_cast<Handle*>(data);
    {
      std::lock_guard<std::mutex> lock(handle->registry->lock_);
      handle->registry->handles_.erase(handle);
    }
    delete handle->object;
    delete handle;
  }

  const char* what_;
  std::set<Handle*> handles_;
  std::mutex lock_;
};

}  // namespace genqueue
