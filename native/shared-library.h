// Opening the CUDA libraries at run time: the addon links none of them, so it builds and loads without CUDA.
#pragma once
#include <dlfcn.h>

#include <initializer_list>
#include <type_traits>

namespace genqueue {

// The first of names that is already loaded (the copy the CUDA provider uses) or can be loaded; nullptr if none.
inline void* openSharedLibrary(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) lib = dlopen(name, RTLD_NOW);
    if (lib != nullptr) return lib;
  }
  return nullptr;
}

// Points fn at symbol name of lib; false when lib lacks it.
template <typename F>
bool bindSymbol(void* lib, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

}  // namespace genqueue
