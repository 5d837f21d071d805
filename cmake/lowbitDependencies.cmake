# Finds lowbit's two header-only dependencies; used by the build and by the
# installed package config, so both resolve them the same way.
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(xsimd 8)
find_dependency(Threads)
# Debian's xsimd 8.1 target lists a bare "xtl" link item (only needed for
# xtl's complex type, which lowbit does not use). Without an xtl target that
# turns into "-lxtl" and the link fails, so drop it.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_lowbit_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_lowbit_xsimd_links STREQUAL "xtl")
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "")
  endif()
  unset(_lowbit_xsimd_links)
endif()
