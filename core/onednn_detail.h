#pragma once
// What core/onednn.cpp and core/onednn_conv.cpp share: the process's CPU engine and each
// thread's stream. Included by those two files only (the rest of softgrad sees
// core/onednn.h, which has no oneDNN types).
#include <oneapi/dnnl/dnnl.hpp>

namespace sg::onednn_detail {

dnnl::engine& cpu_engine();
// oneDNN's streams are not meant to be shared between threads: one per thread.
dnnl::stream& thread_stream();

}  // namespace sg::onednn_detail
