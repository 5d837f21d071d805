# lowbit_add_dispatch(<target> [ARCHS isa...])
#
# Opt-in runtime dispatch (DESIGN.md, "SIMD dispatch"): adds one small
# translation unit per instruction set to <target>, each compiled with that
# set's flags and holding lowbit's kernels for it; at run time lowbit picks the
# best set the CPU supports (or the one forced with lowbit::set_isa / the
# LOWBIT_ISA environment variable). Without this helper lowbit is purely
# header-only and uses the instruction set the target's own flags enable.
#
# ISAs (x86-64): sse4_1 avx2 avx512bw avx512vnni; (aarch64): neon64.
# Default: every ISA of the host processor family.
#
# The TUs are added lowest ISA first and after the target's other sources:
# inline functions shared by all TUs (the standard library's, for one) are then
# taken by the linker from the least demanding copy.
# A global property, not a variable: add_subdirectory(lowbit) scopes variables.
set_property(GLOBAL PROPERTY LOWBIT_DISPATCH_DIR "${CMAKE_CURRENT_LIST_DIR}")

function(lowbit_add_dispatch target)
  cmake_parse_arguments(ARG "" "" "ARCHS" ${ARGN})
  get_property(_lowbit_dispatch_dir GLOBAL PROPERTY LOWBIT_DISPATCH_DIR)
  if(NOT ARG_ARCHS)
    if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i686)$")
      set(ARG_ARCHS sse4_1 avx2 avx512bw avx512vnni)
    elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
      set(ARG_ARCHS neon64)
    endif()
  endif()
  set(_flags_sse4_1 -msse4.1)
  set(_flags_avx2 -mavx2 -mfma -mf16c)
  set(_flags_avx512bw -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c)
  set(_flags_avx512vnni ${_flags_avx512bw} -mavx512vnni)
  set(_flags_neon64 "")
  set(_order sse4_1 avx2 avx512bw avx512vnni neon64)
  foreach(isa IN LISTS ARG_ARCHS)
    if(NOT isa IN_LIST _order)
      message(FATAL_ERROR "lowbit_add_dispatch(${target}): unknown ISA '${isa}' (known: ${_order})")
    endif()
  endforeach()
  set(_gen "${CMAKE_CURRENT_BINARY_DIR}/lowbit_dispatch/${target}")
  set(_defs "")
  foreach(isa IN LISTS _order)
    list(FIND ARG_ARCHS ${isa} _idx)
    if(_idx EQUAL -1)
      continue()
    endif()
    set(_src "${_gen}/lowbit_isa_${isa}.cpp")
    set(LOWBIT_DISPATCH_ISA ${isa})
    configure_file("${_lowbit_dispatch_dir}/lowbit_isa.cpp.in" "${_src}" @ONLY)
    if(MSVC)
      message(FATAL_ERROR "lowbit_add_dispatch: MSVC flags are not wired up yet")
    endif()
    set_source_files_properties("${_src}" PROPERTIES COMPILE_OPTIONS "${_flags_${isa}}")
    target_sources(${target} PRIVATE "${_src}")
    string(TOUPPER ${isa} _up)
    list(APPEND _defs LOWBIT_DISPATCH_${_up}=1)
  endforeach()
  # PUBLIC: every TU that includes lowbit must agree on the dispatch (a
  # library target passes this on to what links it).
  target_compile_definitions(${target} PUBLIC LOWBIT_DISPATCH=1 ${_defs})
endfunction()
