// conv2d on LeNet-, MNIST-CNN- and ResNet-18-sized layers, forward and forward + backward,
// through each of softgrad's kernels, against this machine's GEMM rate measured in the same
// run and PyTorch 1.13 on the same shapes in the same run (bench/torch_peer.py, ops conv2d
// and conv2d_fwdbwd). The CNN epoch (examples/mnist_cnn's model against PyTorch's) is a
// row of bench/bench_train.cpp: build/bench/bench_train --models cnn.
//
//   build/bench/bench_conv [threads=2] [--quick]
//
// Kernels (ops/conv.h): im2col + OpenBLAS GEMM (ConvAlgorithm::Im2col), oneDNN's direct
// convolution in float32 (ConvAlgorithm::Onednn; "oneDNN kernel" names its forward), its
// Winograd kernels where they apply (ConvAlgorithm::Winograd), and what Auto picks; with
// bfloat16 native here, oneDNN in bfloat16 under sg::AutocastGuard against PyTorch under
// torch.autocast("cpu", dtype=torch.bfloat16). A call is y = conv2d(x, w, b) (fwd), or that
// and y.backward(g) with x, w, b requiring grad and g made before timing (fwd+bwd; the
// gradients dropped untimed after each call). Inputs uniform in [0, 1) on both sides.
//
// FLOPs: forward 2 N O Ho Wo (C / groups) kh kw; forward + backward three times that (the
// input and the weight gradients are each one such product). limit ms = FLOPs / the GEMM
// rate (OpenBLAS sgemm 2048^3 for float32, oneDNN's bfloat16 GEMM 2048^3 for bf16), the
// median of 3 right before and 3 right after each row; % limit = limit / time.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "softgrad.h"

namespace {

struct Layer {
  const char* name;
  int64_t N, C, H, W, O, k, stride, padding, groups;
  double flops() const {
    const int64_t Ho = (H + 2 * padding - k) / stride + 1, Wo = (W + 2 * padding - k) / stride + 1;
    return 2.0 * static_cast<double>(N * O * Ho * Wo * (C / groups) * k * k);
  }
  std::string shapes() const {
    return fmt::format("{}x{}x{}x{} {}x{}x{}x{}", N, C, H, W, O, C / groups, k, k);
  }
  std::string torch_spec(bool backward, bool autocast) const {
    return fmt::format("{} {} stride={} padding={} groups={} autocast={}", backward ? "conv2d_fwdbwd" : "conv2d",
                       shapes(), stride, padding, groups, autocast ? 1 : 0);
  }
  sg::Conv2dOptions options() const { return {.stride = stride, .padding = padding, .groups = groups}; }
};

const Layer kLayers[] = {
    {"LeNet-5 C1 (1->6, 5x5, pad 2)", 128, 1, 28, 28, 6, 5, 1, 2, 1},
    {"LeNet-5 C3 (6->16, 5x5)", 128, 6, 14, 14, 16, 5, 1, 0, 1},
    {"mnist_cnn conv1 (1->32, 3x3)", 128, 1, 28, 28, 32, 3, 1, 1, 1},
    {"mnist_cnn conv2 (32->64, 3x3)", 128, 32, 14, 14, 64, 3, 1, 1, 1},
    {"ResNet-18 stem (3->64, 7x7 s2)", 32, 3, 224, 224, 64, 7, 2, 3, 1},
    {"ResNet-18 conv2_x (64->64, 3x3)", 32, 64, 56, 56, 64, 3, 1, 1, 1},
    {"ResNet-18 conv3_1 (64->128, 3x3 s2)", 32, 64, 56, 56, 128, 3, 2, 1, 1},
    {"ResNet-18 downsample (64->128, 1x1 s2)", 32, 64, 56, 56, 128, 1, 2, 0, 1},
    {"ResNet-18 conv4_x (256->256, 3x3)", 32, 256, 14, 14, 256, 3, 1, 1, 1},
    {"depthwise 64, 3x3 (MobileNet-like)", 32, 64, 56, 56, 64, 3, 1, 1, 64},
};

struct Timing {
  double ms = NAN, gemm_gflops = NAN;
};

// Median ms of conv2d (and backward) on the layer, between 3 GEMM-rate probes before and 3 after.
Timing time_layer(const Layer& L, bool backward, bool autocast, int reps, sgbench::GemmProbe& gemm) {
  sg::Generator gen(5);
  sg::Tensor x = sg::rand({L.N, L.C, L.H, L.W}, gen), w = sg::rand({L.O, L.C / L.groups, L.k, L.k}, gen),
             b = sg::rand({L.O}, gen);
  sg::Tensor g;
  if (backward) {
    for (sg::Tensor* t : {&x, &w, &b}) t->requires_grad_();
    sg::NoGradGuard no_grad;
    g = sg::rand(sg::conv2d(x, w, b, L.options()).shape(), gen);
  }
  auto call = [&] {
    sg::AutocastGuard guard(sg::kBFloat16, autocast);
    const sg::Tensor y = sg::conv2d(x, w, b, L.options());
    if (backward) y.backward(g);
  };
  auto drop_grads = [&] {
    for (sg::Tensor* t : {&x, &w, &b}) t->zero_grad();
  };
  std::vector<double> rates;
  for (int r = 0; r < 3; ++r) rates.push_back(gemm.run());
  Timing t;
  t.ms = sgbench::median_ms(call, reps, 1, {}, drop_grads);
  for (int r = 0; r < 3; ++r) rates.push_back(gemm.run());
  t.gemm_gflops = sgbench::median(rates);
  return t;
}

std::string ms_cell(double ms) { return std::isnan(ms) ? "-" : fmt::format("{:.2f}", ms); }
std::string ratio_cell(std::optional<double> num, double den) {
  return num && !std::isnan(den) ? fmt::format("{:.2f}x", *num / den) : "-";
}

// The per-layer tables: float32 (both kernels, Auto's pick) and, where native, bfloat16.
void layers_tables(sgbench::TorchPeer& peer, int reps, bool bf16_native) {
  sgbench::GemmProbe sgemm;
  std::optional<sgbench::GemmProbe> bf16_gemm;
  if (bf16_native) bf16_gemm.emplace(sg::kBFloat16);
  fmt::print("conv2d, float32. Auto's pick per shape: the rule in ops/conv.h (ConvAlgorithm).\n");
  sgbench::Table f32({{"layer", true}, {"x w", true}, {"pass", true}, {"GFLOP"}, {"im2col ms"}, {"oneDNN ms"},
                      {"Winograd ms"}, {"oneDNN kernel", true}, {"auto", true}, {"torch ms"}, {"torch / auto"},
                      {"limit ms"}, {"% limit"}});
  sgbench::Table bf16({{"layer", true}, {"pass", true}, {"bf16 ms"}, {"torch bf16 ms"}, {"torch / sg"},
                       {"bf16 limit ms"}, {"% limit"}, {"bf16 vs f32 auto"}});
  for (const Layer& L : kLayers) {
    for (const bool backward : {false, true}) {
      const double flops = L.flops() * (backward ? 3.0 : 1.0);
      sg::set_conv_algorithm(sg::ConvAlgorithm::Im2col);
      const Timing im2col = time_layer(L, backward, false, reps, sgemm);
      sg::set_conv_algorithm(sg::ConvAlgorithm::Onednn);
      const Timing onednn = time_layer(L, backward, false, reps, sgemm);
      sg::set_conv_algorithm(sg::ConvAlgorithm::Winograd);
      const sg::Tensor x0 = sg::zeros({L.N, L.C, L.H, L.W}), w0 = sg::zeros({L.O, L.C / L.groups, L.k, L.k});
      const bool has_winograd = sg::conv_kernel(x0, w0, L.options()) == "onednn winograd";
      const Timing winograd = has_winograd ? time_layer(L, backward, false, reps, sgemm) : Timing{};
      sg::set_conv_algorithm(sg::ConvAlgorithm::Auto);
      const std::string pick_name = sg::conv_kernel(x0, w0, L.options());
      const Timing& pick = pick_name == "im2col" ? im2col : pick_name == "onednn" ? onednn : winograd;
      const std::optional<double> torch_ms = peer.time(L.torch_spec(backward, false));
      const double limit = flops / (pick.gemm_gflops * 1e6);
      const sg::OnednnConv desc{.N = L.N, .C = L.C, .H = L.H, .W = L.W, .O = L.O, .groups = L.groups, .kh = L.k,
                                .kw = L.k, .Ho = (L.H + 2 * L.padding - L.k) / L.stride + 1,
                                .Wo = (L.W + 2 * L.padding - L.k) / L.stride + 1, .sh = L.stride, .sw = L.stride,
                                .pad_top = L.padding, .pad_left = L.padding, .pad_bottom = L.padding,
                                .pad_right = L.padding};
      f32.add_row({L.name, L.shapes(), backward ? "fwd+bwd" : "fwd", fmt::format("{:.3f}", flops / 1e9),
                   ms_cell(im2col.ms), ms_cell(onednn.ms), ms_cell(winograd.ms), sg::onednn_conv_impl(desc),
                   pick_name, torch_ms ? ms_cell(*torch_ms) : "-",
                   ratio_cell(torch_ms, pick.ms), fmt::format("{:.2f}", limit),
                   fmt::format("{:.0f}%", 100.0 * limit / pick.ms)});
      if (bf16_native) {
        const Timing t = time_layer(L, backward, true, reps, *bf16_gemm);
        const std::optional<double> torch_bf16 = peer.time(L.torch_spec(backward, true));
        const double bf16_limit = flops / (t.gemm_gflops * 1e6);
        bf16.add_row({L.name, backward ? "fwd+bwd" : "fwd", ms_cell(t.ms), torch_bf16 ? ms_cell(*torch_bf16) : "-",
                      ratio_cell(torch_bf16, t.ms), fmt::format("{:.2f}", bf16_limit),
                      fmt::format("{:.0f}%", 100.0 * bf16_limit / t.ms), fmt::format("{:.2f}x", pick.ms / t.ms)});
      }
    }
  }
  f32.print();
  fmt::print("GEMM rates: sgemm 2048^3 best {:.1f} GFLOP/s", sgemm.best());
  if (bf16_native) fmt::print(", oneDNN bfloat16 GEMM 2048^3 best {:.1f} GFLOP/s", bf16_gemm->best());
  fmt::print("\ntorch / auto above 1: softgrad (Auto's kernel) is faster. % limit = (FLOPs / GEMM rate) / time.\n");
  if (bf16_native) {
    fmt::print("\nconv2d under autocast (bfloat16 operands, float32 sums and results), oneDNN; torch under "
               "torch.autocast(\"cpu\", dtype=torch.bfloat16):\n");
    bf16.print();
  }
  fmt::print("\noneDNN kernels that ran: ");
  for (const std::string& impl : sg::onednn_conv_impls_used()) fmt::print("{}; ", impl);
  fmt::print("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else threads = std::atoi(argv[i]);
  }
  sg::set_num_threads(threads);
  const sg::OnednnInfo& dnn = sg::onednn_info();
  fmt::print("bench_conv: {} threads; oneDNN {} on {} (bf16 native: {}); PyTorch in the same run\n", threads,
             dnn.version, dnn.isa, dnn.bf16_native ? "yes" : "no");
  sgbench::TorchPeer peer(threads, quick ? 3 : 5);
  peer.print_about();
  layers_tables(peer, quick ? 3 : 5, dnn.bf16_native);
  return 0;
}
