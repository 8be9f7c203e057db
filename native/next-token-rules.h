// The arithmetic of genqueue.NextToken that its CPU code and its CUDA kernel share, written once: the block below
// is compiled here for the host and also kept as text (kNextTokenRulesSource) that NVRTC compiles after a device
// prelude. Every function is exact integer arithmetic or single IEEE float operations spelled out (gq_mul, gq_add,
// ... are __fmul_rn etc. on the device, where NVRTC would otherwise fuse a multiply and an add), so for the same
// logits a row gets the same token from either implementation, bit for bit.
//
// What the rules define (native/next-token.h has the operator around them):
// - gq_draw: a row's uniform 64-bit draw for the token at position n: Philox4x32-10 keyed by the row's seed,
//   counter (n, 0) — it depends on nothing but (seed, n), so not on batch mates, slot or run.
// - gq_key: floats as unsigned keys in the same order (NaN is mapped to -inf and -0 to +0 before).
// - gq_weight: a token's sampling weight as an integer, floor(exp(-d) · 2^31) for d = max - logit, with an exp of
//   its own (a degree-8 Taylor polynomial of 2^-f after range reduction, relative error below 1e-7); tokens with
//   weight 0 (probability below 2^-31 of the most likely token's) cannot be drawn. Integer weights make every sum
//   exact, so block reductions in any order agree with the CPU's loops.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#define GENQUEUE_SHARED_RULES(...) \
  __VA_ARGS__                      \
  constexpr const char* kNextTokenRulesSource = #__VA_ARGS__;

namespace genqueue {
namespace rules {

typedef unsigned int gq_u32;
typedef unsigned long long gq_u64;

// Host spellings of what the device prelude (next-token.cc) defines with CUDA intrinsics. GCC contracts a * b + c
// into an FMA only where the target has one; the attribute keeps it from doing so on any target.
#define GQ_FN inline __attribute__((optimize("fp-contract=off")))
GQ_FN float gq_mul(float a, float b) { return a * b; }
GQ_FN float gq_add(float a, float b) { return a + b; }
GQ_FN float gq_sub(float a, float b) { return a - b; }
GQ_FN float gq_div(float a, float b) { return a / b; }
GQ_FN gq_u32 gq_float_bits(float f) {
  gq_u32 u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
GQ_FN float gq_neg_inf() { return -std::numeric_limits<float>::infinity(); }
GQ_FN gq_u64 gq_mulhi64(gq_u64 a, gq_u64 b) { return static_cast<gq_u64>((static_cast<unsigned __int128>(a) * b) >> 64); }

GENQUEUE_SHARED_RULES(
    enum { GQ_IDLE = 0, GQ_RUNNING = 1, GQ_STOPPED = 2, GQ_LENGTH = 3 };

    GQ_FN void gq_philox4x32_10(gq_u32 c[4], gq_u32 k0, gq_u32 k1) {
      for (int round = 0; round < 10; round++) {
        const gq_u64 p0 = (gq_u64)0xD2511F53u * c[0];
        const gq_u64 p1 = (gq_u64)0xCD9E8D57u * c[2];
        const gq_u32 x0 = (gq_u32)(p1 >> 32) ^ c[1] ^ k0;
        const gq_u32 x2 = (gq_u32)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (gq_u32)p1;
        c[3] = (gq_u32)p0;
        c[0] = x0;
        c[2] = x2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
      }
    }

    GQ_FN gq_u64 gq_draw(gq_u64 seed, gq_u64 position) {
      gq_u32 c[4] = {(gq_u32)position, (gq_u32)(position >> 32), 0u, 0u};
      gq_philox4x32_10(c, (gq_u32)seed, (gq_u32)(seed >> 32));
      return ((gq_u64)c[0] << 32) | c[1];
    }

    GQ_FN float gq_clean(float x) {
      if (x != x) return gq_neg_inf();
      return x == 0.f ? 0.f : x;
    }

    GQ_FN gq_u32 gq_key(float x) {
      const gq_u32 u = gq_float_bits(x);
      return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    }

    GQ_FN float gq_penalize(float x, float penalty) { return x < 0.f ? gq_mul(x, penalty) : gq_div(x, penalty); }

    GQ_FN gq_u32 gq_weight(float d) {
      if (!(d < 21.5f)) return 0u;
      const float t = gq_mul(d, 1.44269504088896341f);
      const int n = (int)t;
      const float g = gq_mul(gq_sub(t, (float)n), -0.693147180559945309f);
      float p = 2.48015873015873016e-05f;
      p = gq_add(gq_mul(p, g), 1.98412698412698413e-04f);
      p = gq_add(gq_mul(p, g), 1.38888888888888889e-03f);
      p = gq_add(gq_mul(p, g), 8.33333333333333333e-03f);
      p = gq_add(gq_mul(p, g), 4.16666666666666667e-02f);
      p = gq_add(gq_mul(p, g), 1.66666666666666667e-01f);
      p = gq_add(gq_mul(p, g), 0.5f);
      p = gq_add(gq_mul(p, g), 1.f);
      p = gq_add(gq_mul(p, g), 1.f);
      return (gq_u32)gq_mul(p, (float)(1u << (31 - n)));
    }

    GQ_FN int gq_status_after(int isEos, long long n, long long minLength, long long endLength) {
      if (isEos && n >= minLength) return GQ_STOPPED;
      return n >= endLength - 1 ? GQ_LENGTH : GQ_RUNNING;
    })

#undef GQ_FN

}  // namespace rules
}  // namespace genqueue
