// Device code the addon's kernels share, prepended to each NVRTC source (which can include none of the CUDA
// toolkit's headers): fp16 <-> fp32 as inline PTX, and 16-byte loads through the read-only cache. The PTX stays
// here, so that a kernel written after it in plain CUDA C++ can also run on the CPU with host versions of these
// functions (test/small-batch-kernel.test.ts does so with SmallBatchMatMul's).
#pragma once

namespace genqueue {

constexpr const char* kFp16DeviceCode = R"CUDA(
__device__ __forceinline__ float halfToFloat(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ unsigned short floatToHalf(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
// Data the kernel only reads (written by earlier kernels, if at all): cached. Both loads are volatile so that they
// are issued where the kernel places them (before a barrier, ahead of the arithmetic that waits for them).
__device__ __forceinline__ void loadCached(const unsigned short* p, unsigned (&v)[4]) {
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}
// Data read once per kernel (weights): not kept in L1.
__device__ __forceinline__ void loadStreaming(const unsigned short* p, unsigned (&v)[4]) {
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}
// Data written earlier in the same kernel (by this block): read through L2, never the non-coherent path.
__device__ __forceinline__ void loadCoherent(const unsigned short* p, unsigned (&v)[4]) {
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3]) : "l"(p));
}
// Eight halves of a 16-byte load as floats, in order.
__device__ __forceinline__ void unpack(const unsigned (&v)[4], float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = halfToFloat(static_cast<unsigned short>(v[i] & 0xffffu));
    f[2 * i + 1] = halfToFloat(static_cast<unsigned short>(v[i] >> 16));
  }
}
)CUDA";

}  // namespace genqueue
