// The driver of the SmallBatchMatMul kernel under CPU emulation (test/small-batch-kernel.test.ts generates the file
// that includes this after the kernel's shapes): reads cases from a manifest, runs the kernel on their inputs and
// writes its outputs, for the test to compare with its reference.
#pragma once
#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "gpu-emulation.h"

// The kernel's Params, byte for byte (as native/small-batch-matmul.cc's KernelParams).
struct HostParams {
  const void* a;
  const void* b;
  void* y;
  const void* bias;
  const void* residual;
  const void* gamma;
  const void* beta;
  int32_t rows;
  int32_t n;
  int32_t k;
  int32_t norm;
  int32_t fastGelu;
  float epsilon;
};

struct EmulatedShape {
  const char* key;
  int split;
  int columns;
  bool swiglu;
  void (*run[2])(const HostParams&);  // 1 row, 2 rows
};

// A buffer of exactly `count` halves (so AddressSanitizer sees any access past it), or none.
using Buffer = std::unique_ptr<unsigned short[]>;

inline Buffer take(const std::vector<unsigned short>& all, size_t& at, size_t count) {
  if (at + count > all.size()) {
    std::fprintf(stderr, "emulation: input file too short\n");
    std::exit(2);
  }
  Buffer b(new unsigned short[count]);
  std::memcpy(b.get(), all.data() + at, count * 2);
  at += count;
  return b;
}

// Manifest lines: key rows n k norm fastGelu bias residual epsilon input output. The input file holds, as fp16:
// A [rows, k], B [n or 2n, k], then bias, residual [rows, n], gamma [k] and beta [k] when present.
inline int runCases(const EmulatedShape* shapes, size_t shapeCount, const char* manifest) {
  std::ifstream lines(manifest);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string key, input, output;
    int rows, n, k, norm, fastGelu, hasBias, hasResidual;
    float epsilon;
    fields >> key >> rows >> n >> k >> norm >> fastGelu >> hasBias >> hasResidual >> epsilon >> input >> output;
    const EmulatedShape* shape = nullptr;
    for (size_t i = 0; i < shapeCount; i++) {
      if (key == shapes[i].key) shape = &shapes[i];
    }
    if (shape == nullptr || rows < 1 || rows > 2) {
      std::fprintf(stderr, "emulation: bad case %s\n", line.c_str());
      return 2;
    }
    std::ifstream in(input, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<unsigned short> all(bytes.size() / 2);
    std::memcpy(all.data(), bytes.data(), all.size() * 2);
    const size_t weightRows = static_cast<size_t>(shape->swiglu ? 2 * n : n);
    size_t at = 0;
    Buffer a = take(all, at, static_cast<size_t>(rows) * k);
    Buffer b = take(all, at, weightRows * k);
    Buffer bias = hasBias ? take(all, at, weightRows) : nullptr;
    Buffer residual = hasResidual ? take(all, at, static_cast<size_t>(rows) * n) : nullptr;
    Buffer gamma = norm != 0 ? take(all, at, k) : nullptr;
    Buffer beta = norm == 1 ? take(all, at, k) : nullptr;
    Buffer y(new unsigned short[static_cast<size_t>(rows) * n]);
    for (size_t i = 0; i < static_cast<size_t>(rows) * n; i++) y[i] = 0x7e00;  // NaN: an unwritten output shows
    const HostParams params{a.get(), b.get(), y.get(), bias.get(), residual.get(), gamma.get(), beta.get(), rows, n, k, norm, fastGelu, epsilon};
    const int perBlock = shape->columns * (kEmulatedThreads / 32 / shape->split);
    emulateLaunch({static_cast<unsigned>((n + perBlock - 1) / perBlock), 1}, [&] { shape->run[rows - 1](params); });
    std::ofstream out(output, std::ios::binary);
    out.write(reinterpret_cast<const char*>(y.get()), static_cast<std::streamsize>(rows) * n * 2);
  }
  return 0;
}
