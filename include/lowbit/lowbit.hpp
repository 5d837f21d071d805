// lowbit: header-only LLM quantization and compression kernels.
// Umbrella header: every public header. See README.md and DESIGN.md.
#pragma once

#include "codec/dfloat11.hpp"
#include "codec/huffman.hpp"
#include "core/bitpack.hpp"
#include "core/error.hpp"
#include "core/parallel.hpp"
#include "core/types.hpp"
#include "core/view.hpp"
#include "format/autoawq.hpp"
#include "format/dfloat11.hpp"
#include "format/group_quant.hpp"
#include "format/spqr.hpp"
#include "kernels/gemv.hpp"
#include "kernels/huffman_decode.hpp"
#include "kernels/spqr_gemv.hpp"
#include "quant/awq.hpp"
#include "quant/calibration.hpp"
#include "quant/gptq.hpp"
#include "quant/rtn.hpp"
#include "quant/spqr.hpp"
#include "simd/arch.hpp"
