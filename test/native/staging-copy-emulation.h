// The driver of the staging-copy kernel (native/staging-copy.cc) under CPU emulation, for
// test/staging-copy-kernel.test.ts, which includes the kernel's source after this file: every block and thread of a
// launch runs in turn (the kernel has no barriers), over random staging rows, and the slots are compared with
// per-head copies as the CPU provider's path makes them. Built with AddressSanitizer.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#define __global__
struct uint4 {
  unsigned x, y, z, w;
};
struct EmulatedIndex {
  unsigned x = 0, y = 0;
};
inline EmulatedIndex threadIdx, blockIdx, blockDim;

struct StagingCase {
  int tensors, kvHeads, prefillRows, prefill, slots, capacity, rowBytes;
  std::vector<int> rowSlots, rowPositions;
};

// The kernel under test, declared here and defined by the source the test appends.
extern "C" void staging_to_slots(const char* const* sources, char* const* targets, const int* rows, int count, int kvHeads,
                                 long long stagingPitch, long long slotPitch, int rowBytes);

inline bool runStagingCase(const StagingCase& c) {
  std::mt19937 random(7);
  const size_t stagingBytes = static_cast<size_t>(c.prefillRows) * c.kvHeads * c.prefill * c.rowBytes;
  const size_t slotBytes = static_cast<size_t>(c.slots) * c.kvHeads * c.capacity * c.rowBytes;
  std::vector<std::vector<char>> staging(c.tensors, std::vector<char>(stagingBytes)), slots(c.tensors, std::vector<char>(slotBytes));
  for (auto& t : staging)
    for (char& b : t) b = static_cast<char>(random());
  for (auto& t : slots)
    for (char& b : t) b = static_cast<char>(random());
  std::vector<std::vector<char>> expected(slots);
  const long long stagingPitch = static_cast<long long>(c.prefill) * c.rowBytes, slotPitch = static_cast<long long>(c.capacity) * c.rowBytes;
  const int count = static_cast<int>(c.rowSlots.size());
  for (int t = 0; t < c.tensors; t++)
    for (int r = 0; r < count; r++)
      for (int h = 0; h < c.kvHeads; h++)
        std::memcpy(expected[t].data() + (static_cast<long long>(c.rowSlots[r]) * c.kvHeads + h) * slotPitch,
                    staging[t].data() + (static_cast<long long>(r) * c.kvHeads + h) * stagingPitch, static_cast<size_t>(c.rowPositions[r]) * c.rowBytes);
  std::vector<const char*> sources;
  std::vector<char*> targets;
  for (int t = 0; t < c.tensors; t++) sources.push_back(staging[t].data()), targets.push_back(slots[t].data());
  std::vector<int> rows(c.rowSlots);
  rows.insert(rows.end(), c.rowPositions.begin(), c.rowPositions.end());
  blockDim.x = 256;
  for (blockIdx.y = 0; blockIdx.y < static_cast<unsigned>(c.tensors); blockIdx.y++)
    for (blockIdx.x = 0; blockIdx.x < static_cast<unsigned>(count * c.kvHeads); blockIdx.x++)
      for (threadIdx.x = 0; threadIdx.x < blockDim.x; threadIdx.x++)
        staging_to_slots(sources.data(), targets.data(), rows.data(), count, c.kvHeads, stagingPitch, slotPitch, c.rowBytes);
  for (int t = 0; t < c.tensors; t++) {
    if (slots[t] != expected[t]) {
      std::fprintf(stderr, "tensor %d differs from the per-head copies\n", t);
      return false;
    }
  }
  return true;
}
