#pragma once
// softgrad: a small autograd deep-learning framework. Include this one header.
#include "core/autograd.h"
#include "core/blas.h"
#include "core/gradcheck.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/shape.h"
#include "ops/softmax.h"
