#pragma once
// Module state: state_dict / load_state_dict (PyTorch's names and rules) and save / load
// through safetensors files (core/safetensors.h).
//
//   sg::nn::save(net, "net.safetensors", {{"epoch", "3"}});
//   sg::nn::load(net, "net.safetensors");   // same architecture: values copied in place
//
// Names are the dotted ones of named_parameters()/named_buffers() ("fc1.weight"), the keys
// of PyTorch's state_dict for the same module tree, so a file saved here loads into the
// PyTorch model (safetensors.torch.load_file + load_state_dict) and the other way round.
// Loading copies into the existing tensors, so an optimizer or anything else holding a
// parameter's handle sees the loaded values.
#include <map>
#include <string>

#include "core/safetensors.h"
#include "nn/module.h"

namespace sg::nn {

// Parameters, then buffers, with dotted names; detached handles that share the module's
// storage (no copy: a later update to the module shows through them).
NamedTensors state_dict(const Module& module);

// Copies every tensor of `state` into the parameter or buffer of the same name, in place
// and under a NoGradGuard. Before copying anything it checks names, shapes and dtypes and
// throws ONE sg::Error listing every problem, leaving the module untouched:
//   * missing keys (module tensors absent from `state`) and unexpected keys (names the
//     module does not have) -- both ignored when strict is false, as in PyTorch;
//   * a name given twice or an undefined tensor in `state`;
//   * shape mismatch "fc1.weight: checkpoint [512, 784], module [256, 784]" and dtype
//     mismatch "fc1.weight: checkpoint float64, module float32" -- errors even when not
//     strict (no conversion: a float64 checkpoint does not silently load into float32).
//     The one exception: a bfloat16 tensor loads into a float32 or float64 one (widening
//     is exact), so a state PyTorch saved in bfloat16 loads into a float32 module.
void load_state_dict(Module& module, const NamedTensors& state, bool strict = true);

// save_safetensors(path, state_dict(module), metadata). Tools that expect a PyTorch
// checkpoint (e.g. transformers) look for metadata {"format": "pt"}; pass it if wanted.
void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata = {});
// load_state_dict(module, load_safetensors(path).tensors, strict); errors name the path.
void load(Module& module, const std::string& path, bool strict = true);

}  // namespace sg::nn
