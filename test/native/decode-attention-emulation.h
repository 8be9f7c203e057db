// The driver of the DecodeAttention kernel under CPU emulation (test/decode-attention-kernel.test.ts generates the
// file that includes this after the kernel's shapes): reads one case's inputs from a folder, runs the kernel over
// its grid and writes the attention output and the caches back, for the test to compare with its reference.
#pragma once
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gpu-emulation.h"

// The kernel's Params, byte for byte (as native/decode-attention.cc's KernelParams).
struct HostParams {
  const void* qkv;
  const void* cosCache;
  const void* sinCache;
  void* keys;
  void* values;
  void* out;
  void* partials;
  void* counters;
  const void* seqlens;
  int32_t kvHeads;
  int32_t capacity;
  int32_t rotaryHalf;
  int32_t window;
  int32_t slice;
  float scale;
};

template <typename T>
std::vector<T> readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

template <typename T>
void writeAll(const std::string& path, const std::vector<T>& v) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

// params.txt: batch heads kvHeads headSize capacity rotaryHalf window slices slice scale.
inline int runCase(void (*kernel)(const HostParams&), const std::string& dir) {
  std::ifstream params(dir + "/params.txt");
  int batch, heads, kvHeads, headSize, capacity, rotaryHalf, window, slices, slice;
  float scale;
  if (!(params >> batch >> heads >> kvHeads >> headSize >> capacity >> rotaryHalf >> window >> slices >> slice >> scale)) return 2;
  std::vector<unsigned short> qkv = readAll<unsigned short>(dir + "/qkv.bin"), keys = readAll<unsigned short>(dir + "/past_key.bin"),
                              values = readAll<unsigned short>(dir + "/past_value.bin"), cosCache = readAll<unsigned short>(dir + "/cos.bin"),
                              sinCache = readAll<unsigned short>(dir + "/sin.bin");
  std::vector<int32_t> seqlens = readAll<int32_t>(dir + "/seqlens.bin");
  std::vector<unsigned short> out(static_cast<size_t>(batch) * heads * headSize, 0xffffu);
  std::vector<float> partials(static_cast<size_t>(batch) * kvHeads * slices * (heads / kvHeads) * (headSize + 2));
  std::vector<unsigned> counters(static_cast<size_t>(batch) * kvHeads);
  const HostParams p{qkv.data(), cosCache.data(), sinCache.data(), keys.data(), values.data(), out.data(), partials.data(), counters.data(),
                     seqlens.data(), kvHeads, capacity, rotaryHalf, window, slice, scale};
  emulateLaunch({static_cast<unsigned>(batch * kvHeads), static_cast<unsigned>(slices)}, [&] { kernel(p); });
  for (unsigned c : counters) {
    if (c != 0) return 3;  // the last block of each (row, kv head) resets its counter
  }
  writeAll(dir + "/out.bin", out);
  writeAll(dir + "/keys.bin", keys);
  writeAll(dir + "/values.bin", values);
  return 0;
}
