// Calibration capture and whole-model quantization for the llama example:
// run the fp32 model on calibration text with a hook streaming every
// linear's input into lowbit::Calibration (AWQ's statistics, the Hessian
// of GPTQ, SpQR and VPTQ), then quantize each group of linears that shares an input
// with one method.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "decoder.hpp"

namespace llama {

// One lowbit::Calibration per linear input: four per layer, then the
// classifier's.
class Calibrations {
 public:
  Calibrations(const Model& m, std::size_t sample_tokens) {
    const auto D = std::size_t(m.config.dim), H = std::size_t(m.config.hidden);
    lowbit::CalibrationOptions o;
    o.sample_tokens = sample_tokens;
    for (int l = 0; l < m.config.layers; ++l)
      for (std::size_t w : {D, D, D, H}) c_.emplace_back(w, o);
    c_.emplace_back(D, o);
  }
  lowbit::Calibration& at(int layer, Site s) { return c_[index(layer, s)]; }
  const lowbit::Calibration& at(int layer, Site s) const { return c_[index(layer, s)]; }
  std::size_t size() const { return c_.size(); }
  lowbit::Calibration& operator[](std::size_t i) { return c_[i]; }  // i = index(layer, site)

  static std::size_t index(int layer, Site s) {
    return s == Site::cls_in ? std::size_t(layer) * sites_per_layer : std::size_t(layer * sites_per_layer + int(s));
  }

 private:
  std::vector<lowbit::Calibration> c_;
};

// Runs the model on `seqs` and records every linear's inputs. The inputs
// come from the unquantized model for every layer (AWQ's and SpQR's
// references calibrate layer by layer on the float model; GPTQ's reference
// feeds each layer the outputs of the already quantized ones, a refinement
// this example leaves out).
inline Calibrations capture(const Model& m, const std::vector<std::vector<int>>& seqs,
                            std::size_t sample_tokens = 512) {
  Calibrations cal(m, sample_tokens);
  std::vector<std::vector<float>> buf(cal.size());  // one sequence's inputs, per Calibrations::index
  for (const auto& seq : seqs) {
    Decoder d(m, {}, 1);
    for (int t : seq)
      d.step(t, [&](int l, Site s, const float* x, std::size_t n) {
        auto& b = buf[Calibrations::index(l, s)];
        b.insert(b.end(), x, x + n);
      });
    for (std::size_t i = 0; i < buf.size(); ++i) {
      const std::size_t k = cal[i].features();
      cal[i].add(lowbit::ConstMatrixView<float>(buf[i].data(), buf[i].size() / k, k));
      buf[i].clear();
    }
  }
  return cal;
}

struct Method {
  enum class Kind { fp32, bf16, dfloat11, rtn, awq, gptq, spqr, vptq } kind = Kind::fp32;
  int bits = 4;
  std::size_t group = 32;
  lowbit::ScaleType scale_type = lowbit::ScaleType::fp16;  // rtn, awq, gptq
  lowbit::spqr::Options spqr;                              // Kind::spqr
  lowbit::vptq::Options vptq = vptq_2bit();                // Kind::vptq

  // VPTQ at 2 index bits per weight: 8-bit indices (256 centroids) per
  // vector of 4. The reference's 2-bit models use v = 8 with 65,536
  // centroids, 128 KiB of codebook per matrix: more than stories260K's
  // largest matrix (172 x 64 fp32 = 43 KiB) holds.
  static lowbit::vptq::Options vptq_2bit() {
    lowbit::vptq::Options o;
    o.vector = 4, o.codebook = 256;
    return o;
  }

  // rtn / awq / gptq options with this method's width, group and scales.
  template <class Options>
  Options group_options() const {
    Options o;
    o.bits = bits, o.group = group, o.scale_type = scale_type;
    return o;
  }

  bool calibrated() const {
    return kind == Kind::awq || kind == Kind::gptq || kind == Kind::spqr || kind == Kind::vptq;
  }
  std::string label() const {
    const std::string g = " g" + std::to_string(group) + (scale_type == lowbit::ScaleType::fp32 ? " f32s" : ""),
                      b = " int" + std::to_string(bits);
    switch (kind) {
      case Kind::fp32: return "fp32";
      case Kind::bf16: return "bf16";
      case Kind::dfloat11: return "DFloat11";
      case Kind::rtn: return "RTN" + b + g;
      case Kind::awq: return "AWQ" + b + g;
      case Kind::gptq: return "GPTQ" + b + g;
      case Kind::spqr:
        return "SpQR w" + std::to_string(spqr.bits) + " b" + std::to_string(spqr.group) + " s" +
               std::to_string(spqr.stat_bits);
      case Kind::vptq:
        return "VPTQ v" + std::to_string(vptq.vector) + " k" + std::to_string(vptq.codebook) +
               (vptq.residual_codebook ? " r" + std::to_string(vptq.residual_codebook) : "");
    }
    return "?";
  }
};

// Quantizes a set of linears sharing one input (q/k/v, gate/up, ...).
inline std::vector<Linear> quantize_set(const std::vector<const Matrix*>& ws, const Method& m,
                                        const lowbit::Calibration* cal, Site site) {
  using K = Method::Kind;
  std::vector<Linear> out;
  if (m.kind == K::awq) {
    auto o = m.group_options<lowbit::awq::Options>();
    o.clip = site != Site::attn_in;  // the reference does not clip q/k (their error is not in the output)
    std::vector<lowbit::ConstMatrixView<float>> views;
    for (const Matrix* w : ws) views.push_back(w->view());
    lowbit::awq::Result r = lowbit::awq::quantize(views, *cal, o);
    for (auto& q : r.weights) out.push_back({std::move(q), r.scales});
    return out;
  }
  const Eigen::MatrixXd H = m.calibrated() ? cal->hessian() : Eigen::MatrixXd();
  for (const Matrix* w : ws) {
    switch (m.kind) {
      case K::fp32: out.push_back({*w, {}}); break;
      case K::bf16:
      case K::dfloat11: {
        Bf16Matrix b{w->rows(), w->cols(), std::vector<bf16>(w->rows() * w->cols())};
        for (std::size_t i = 0; i < b.w.size(); ++i) b.w[i] = bf16::from_float(w->data()[i]);
        if (m.kind == K::bf16) {
          out.push_back({std::move(b), {}});
        } else {
          out.push_back({lowbit::dfloat11::compress(lowbit::ConstMatrixView<bf16>(b.w.data(), b.rows, b.cols)), {}});
        }
        break;
      }
      case K::rtn: {
        out.push_back({lowbit::rtn::quantize(*w, m.group_options<lowbit::rtn::Options>()), {}});
        break;
      }
      case K::gptq: {
        auto o = m.group_options<lowbit::gptq::Options>();
        o.act_order = o.static_groups = true;  // the reference's --act-order (with --static-groups)
        out.push_back({lowbit::gptq::quantize(*w, H, o).weights, {}});
        break;
      }
      case K::spqr: out.push_back({lowbit::spqr::quantize(*w, H, m.spqr), {}}); break;
      case K::vptq: out.push_back({lowbit::vptq::quantize(*w, H, m.vptq), {}}); break;
      case K::awq: break;  // above
    }
  }
  return out;
}

// progress(done, total) after each set of linears.
using Progress = std::function<void(std::size_t done, std::size_t total)>;

// The checkpoint with every layer's seven linears (and, with `classifier`,
// the classifier) quantized by `m`; `cal` is needed when m.calibrated().
inline Model quantize_model(const lowbit::llama2c::Checkpoint& ck, const Method& m, const Calibrations* cal,
                            bool classifier = false, const Progress& progress = {}) {
  LOWBIT_CHECK(cal || !m.calibrated(), "quantize_model", m.label(), " needs calibration statistics");
  Model out = dense_model(ck);
  const std::size_t total = 4 * ck.layers.size() + (classifier ? 1 : 0);
  std::size_t done = 0;
  auto run = [&](std::vector<const Matrix*> ws, std::vector<Linear*> dst, int layer, Site s) {
    std::vector<Linear> q = quantize_set(ws, m, cal ? &cal->at(layer, s) : nullptr, s);
    for (std::size_t i = 0; i < q.size(); ++i) *dst[i] = std::move(q[i]);
    if (progress) progress(++done, total);
  };
  for (std::size_t l = 0; l < ck.layers.size(); ++l) {
    const auto& c = ck.layers[l];
    Model::Layer& L = out.layers[l];
    const int li = int(l);
    run({&c.wq, &c.wk, &c.wv}, {&L.wq, &L.wk, &L.wv}, li, Site::attn_in);
    run({&c.wo}, {&L.wo}, li, Site::wo_in);
    run({&c.w1, &c.w3}, {&L.w1, &L.w3}, li, Site::ffn_in);
    run({&c.w2}, {&L.w2}, li, Site::w2_in);
  }
  if (classifier) {
    run({&ck.classifier()}, {&out.classifier}, ck.config.layers, Site::cls_in);
    out.quantized_classifier = true;
  }
  return out;
}

}  // namespace llama
