// Quantize a small matrix, run gemv, check it against the dequantized matrix.
#include <cmath>
#include <cstdio>

#include <lowbit/lowbit.hpp>

int main() {
  using namespace lowbit;
  Matrix w(64, 256);
  for (std::size_t r = 0; r < 64; ++r)
    for (std::size_t k = 0; k < 256; ++k) w(r, k) = std::sin(float(r * 256 + k));
  rtn::Options opt;
  opt.group = 64;
  const GroupQuantMatrix q = rtn::quantize(w, opt);
  std::vector<float> x(256, 0.5f), y(64);
  gemv(q, x, y);
  const Matrix d = dequantize(q);
  double err = 0;
  for (std::size_t r = 0; r < 64; ++r) {
    double ref = 0;
    for (std::size_t k = 0; k < 256; ++k) ref += double(d(r, k)) * 0.5;
    err = std::fmax(err, std::fabs(ref - double(y[r])));
  }
  std::printf("consumer: isa %s, %.3f bits/weight, max |y - ref| = %.2e\n", isa_name(active_isa()),
              q.bits_per_weight(), err);
  return err < 1e-3 ? 0 : 1;
}
