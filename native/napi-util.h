// Reading and writing JS values in the slot loop's Node-API glue: helpers that throw std::exception with the
// argument's name, turned into a JS Error by guarded().
#pragma once
#include <node_api.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace genqueue {
namespace napi {

inline void call(napi_status status, const char* what) {
  if (status != napi_ok) throw std::runtime_error(std::string("N-API: ") + what);
}

// Runs f, turning an exception into a thrown JS Error.
template <typename F>
napi_value guarded(napi_env env, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
    return nullptr;
  }
}

inline std::vector<napi_value> args(napi_env env, napi_callback_info info, size_t count) {
  std::vector<napi_value> argv(count);
  size_t argc = count;
  call(napi_get_cb_info(env, info, &argc, argv.data(), nullptr, nullptr), "napi_get_cb_info");
  if (argc < count) throw std::invalid_argument("expected " + std::to_string(count) + " arguments");
  return argv;
}

inline napi_value property(napi_env env, napi_value obj, const char* name) {
  napi_value v;
  call(napi_get_named_property(env, obj, name, &v), "napi_get_named_property");
  return v;
}

inline bool has(napi_env env, napi_value obj, const char* name) {
  napi_valuetype type;
  call(napi_typeof(env, property(env, obj, name), &type), "napi_typeof");
  return type != napi_undefined;
}

inline std::string string(napi_env env, napi_value v, const char* name) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) throw std::invalid_argument(std::string(name) + " must be a string");
  std::string s(len, '\0');
  call(napi_get_value_string_utf8(env, v, s.data(), len + 1, &len), "napi_get_value_string_utf8");
  return s;
}

inline int64_t integer(napi_env env, napi_value v, const char* name) {
  int64_t out = 0;
  if (napi_get_value_int64(env, v, &out) != napi_ok) throw std::invalid_argument(std::string(name) + " must be a number");
  return out;
}

inline double number(napi_env env, napi_value v, const char* name) {
  double out = 0;
  if (napi_get_value_double(env, v, &out) != napi_ok) throw std::invalid_argument(std::string(name) + " must be a number");
  return out;
}

inline bool boolean(napi_env env, napi_value v, const char* name) {
  bool out = false;
  if (napi_get_value_bool(env, v, &out) != napi_ok) throw std::invalid_argument(std::string(name) + " must be a boolean");
  return out;
}

inline uint64_t bigUint(napi_env env, napi_value v, const char* name) {
  uint64_t out = 0;
  bool lossless = false;
  if (napi_get_value_bigint_uint64(env, v, &out, &lossless) != napi_ok || !lossless) throw std::invalid_argument(std::string(name) + " must be a BigInt in 0 .. 2^64 - 1");
  return out;
}

inline int64_t intProperty(napi_env env, napi_value obj, const char* name) { return integer(env, property(env, obj, name), name); }
inline double numberProperty(napi_env env, napi_value obj, const char* name) { return number(env, property(env, obj, name), name); }
inline bool boolProperty(napi_env env, napi_value obj, const char* name) { return boolean(env, property(env, obj, name), name); }
inline std::string stringProperty(napi_env env, napi_value obj, const char* name) { return string(env, property(env, obj, name), name); }

// A typed array's element type, length and data (the memory belongs to JS).
struct TypedArray {
  napi_typedarray_type type;
  size_t length;
  void* data;
};

inline TypedArray typedArray(napi_env env, napi_value v, const char* name) {
  TypedArray t{};
  if (napi_get_typedarray_info(env, v, &t.type, &t.length, &t.data, nullptr, nullptr) != napi_ok) throw std::invalid_argument(std::string(name) + " must be a typed array");
  return t;
}

inline std::vector<int32_t> int32s(napi_env env, napi_value v, const char* name) {
  TypedArray t = typedArray(env, v, name);
  if (t.type != napi_int32_array) throw std::invalid_argument(std::string(name) + " must be an Int32Array");
  const auto* p = static_cast<const int32_t*>(t.data);
  return std::vector<int32_t>(p, p + t.length);
}

// An Int32Array of exactly `expected` elements, read in place (valid while the JS call lasts).
inline const int32_t* int32View(napi_env env, napi_value v, size_t expected, const char* name) {
  TypedArray t = typedArray(env, v, name);
  if (t.type != napi_int32_array) throw std::invalid_argument(std::string(name) + " must be an Int32Array");
  if (t.length != expected) throw std::invalid_argument(std::string(name) + " has " + std::to_string(t.length) + " elements, expected " + std::to_string(expected));
  return static_cast<const int32_t*>(t.data);
}

// A string property, or "" where it is not a string (absent).
inline std::string optionalString(napi_env env, napi_value obj, const char* name) {
  napi_value v = property(env, obj, name);
  napi_valuetype type;
  call(napi_typeof(env, v, &type), "napi_typeof");
  return type == napi_string ? string(env, v, name) : std::string();
}

inline uint32_t arrayLength(napi_env env, napi_value v, const char* name) {
  uint32_t n = 0;
  if (napi_get_array_length(env, v, &n) != napi_ok) throw std::invalid_argument(std::string(name) + " must be an array");
  return n;
}

inline napi_value element(napi_env env, napi_value array, uint32_t i) {
  napi_value v;
  call(napi_get_element(env, array, i, &v), "napi_get_element");
  return v;
}

// A new typed array holding a copy of count elements of size bytes each.
inline napi_value newTypedArray(napi_env env, napi_typedarray_type type, const void* data, size_t count, size_t size) {
  napi_value buffer, array;
  void* out = nullptr;
  call(napi_create_arraybuffer(env, count * size, &out, &buffer), "napi_create_arraybuffer");
  if (count > 0) std::memcpy(out, data, count * size);
  call(napi_create_typedarray(env, type, count, buffer, 0, &array), "napi_create_typedarray");
  return array;
}

inline void set(napi_env env, napi_value obj, const char* name, napi_value v) { call(napi_set_named_property(env, obj, name, v), "napi_set_named_property"); }

inline napi_value fromInt(napi_env env, int64_t v) {
  napi_value out;
  call(napi_create_int64(env, v, &out), "napi_create_int64");
  return out;
}

inline napi_value fromDouble(napi_env env, double v) {
  napi_value out;
  call(napi_create_double(env, v, &out), "napi_create_double");
  return out;
}

inline napi_value object(napi_env env) {
  napi_value out;
  call(napi_create_object(env, &out), "napi_create_object");
  return out;
}

}  // namespace napi
}  // namespace genqueue
