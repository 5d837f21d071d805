// Progress of a long offline step: quantizing one large matrix with GPTQ,
// SpQR or VPTQ takes seconds to minutes. Their Options take a Progress,
// called on the calling thread with (work done, total work) after each unit
// (a GPTQ block of columns), done reaching total at the end. Empty: not called.
#pragma once

#include <cstddef>
#include <functional>

namespace lowbit {

using Progress = std::function<void(std::size_t done, std::size_t total)>;

}  // namespace lowbit
