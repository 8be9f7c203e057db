// Runs a CUDA kernel's plain C++ on the CPU, for test/small-batch-kernel.test.ts: a block's 256 threads are OS
// threads, __syncthreads and warp shuffles are barriers, __shared__ variables are statics (one block runs at a
// time), and kFp16DeviceCode's PTX helpers have host versions here. Built with AddressSanitizer, so a read or write
// outside a buffer fails the test.
#pragma once
#include <math.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct EmulatedIndex {
  unsigned x = 0, y = 0;
};
inline thread_local EmulatedIndex threadIdx;
inline thread_local EmulatedIndex blockIdx;
inline EmulatedIndex gridDim{1, 1};

constexpr int kEmulatedThreads = 256;
inline std::barrier<>* emulatedBlockBarrier = nullptr;
inline std::barrier<>* emulatedWarpBarriers[kEmulatedThreads / 32] = {};
inline float emulatedShuffle[kEmulatedThreads / 32][2][32];
inline thread_local int emulatedShuffleRound = 0;

inline void __syncthreads() { emulatedBlockBarrier->arrive_and_wait(); }

// Every lane of the warp takes part (the full mask), as in the kernels under test. Two buffers alternate, so one
// barrier per shuffle suffices: no lane can write a buffer again before every lane has read it.
inline float __shfl_xor_sync(unsigned mask, float v, int offset) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr, "emulation: shuffle with a partial mask\n");
    std::abort();
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float (&buffer)[32] = emulatedShuffle[warp][emulatedShuffleRound++ & 1];
  buffer[lane] = v;
  emulatedWarpBarriers[warp]->arrive_and_wait();
  return buffer[lane ^ offset];
}

inline float rsqrtf(float v) { return 1.f / sqrtf(v); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
// Blocks run one after another here, so the last block to count sees every earlier block's writes.
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline float halfToFloat(unsigned short h) {
  _Float16 f;
  std::memcpy(&f, &h, 2);
  return static_cast<float>(f);
}
inline unsigned short floatToHalf(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  unsigned short bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
inline void emulatedLoad(const unsigned short* p, unsigned (&v)[4]) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
    std::fprintf(stderr, "emulation: 16-byte load from an unaligned address\n");
    std::abort();
  }
  std::memcpy(v, p, 16);
}
inline void loadCached(const unsigned short* p, unsigned (&v)[4]) { emulatedLoad(p, v); }
inline void loadStreaming(const unsigned short* p, unsigned (&v)[4]) { emulatedLoad(p, v); }
inline void loadCoherent(const unsigned short* p, unsigned (&v)[4]) { emulatedLoad(p, v); }
inline void unpack(const unsigned (&v)[4], float (&f)[8]) {
  for (int i = 0; i < 4; i++) {
    f[2 * i] = halfToFloat(static_cast<unsigned short>(v[i] & 0xffffu));
    f[2 * i + 1] = halfToFloat(static_cast<unsigned short>(v[i] >> 16));
  }
}

// Runs kernel over a grid of x · y blocks of kEmulatedThreads threads, one block after another.
inline void emulateLaunch(EmulatedIndex grid, const std::function<void()>& kernel) {
  gridDim = grid;
  const unsigned blocks = grid.x * grid.y;
  std::barrier<> block(kEmulatedThreads), done(kEmulatedThreads);
  std::vector<std::barrier<>*> warps;
  for (int w = 0; w < kEmulatedThreads / 32; w++) warps.push_back(new std::barrier<>(32));
  emulatedBlockBarrier = &block;
  for (int w = 0; w < kEmulatedThreads / 32; w++) emulatedWarpBarriers[w] = warps[w];
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kEmulatedThreads; t++) {
    threads.emplace_back([&, t] {
      threadIdx.x = t;
      for (unsigned b = 0; b < blocks; b++) {
        blockIdx.x = b % grid.x;
        blockIdx.y = b / grid.x;
        kernel();
        done.arrive_and_wait();  // threads that returned early wait here, before the next block reuses __shared__
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (std::barrier<>* w : warps) delete w;
}
