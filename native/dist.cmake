# native/distributed/: c10d (TCPStore, ProcessGroupGloo/NCCL, the DDP Reducer), all exported by libtorch.
# ProcessGroupGloo.hpp needs USE_C10D_GLOO and gloo's headers, which the wheel lacks: Debian's
# libgloo-dev provides them, used header-only (its libgloo is never linked). Only the translation units
# that include c10d headers (RESIDUAL_C10D_SOURCES) see them, outside the precompiled header (different
# definitions). Without them the addon is still built, with everything of native/distributed/ but the 'gloo'
# backend (the store, NCCL on CUDA builds, the DDP Reducer, the sampler); initProcessGroup({backend:
# 'gloo'}) then says what to install. scripts/install/build.mjs searches the same places, and configures
# again when the answer changes. scripts/ci/build-nogloo-check.sh recompiles RESIDUAL_C10D_SOURCES
# without gloo (it reads the list from the set() line below: keep it on one line).
# -DRESIDUAL_WITH_GLOO=OFF builds without it even where the headers are (to try that build).
if(DEFINED RESIDUAL_WITH_GLOO AND NOT RESIDUAL_WITH_GLOO)
  set(RESIDUAL_GLOO_INCLUDE "")
else()
  find_path(RESIDUAL_GLOO_INCLUDE gloo/algorithm.h HINTS ENV GLOO_INCLUDE_DIR PATHS /usr/include /usr/local/include)
endif()
set(RESIDUAL_DIST_DEFS USE_DISTRIBUTED=1)
# A compiler default folder (/usr/include) is never added: as an explicit -I/-isystem it would break
# libstdc++'s #include_next <stdlib.h>.
set(RESIDUAL_DIST_INCLUDES "")
if(RESIDUAL_GLOO_INCLUDE)
  list(APPEND RESIDUAL_DIST_DEFS USE_C10D_GLOO=1 RESIDUAL_GLOO=1)
  if(NOT RESIDUAL_GLOO_INCLUDE IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    set(RESIDUAL_DIST_INCLUDES "${RESIDUAL_GLOO_INCLUDE}")
  endif()
  message(STATUS "residual: c10d with gloo headers from ${RESIDUAL_GLOO_INCLUDE}")
else()
  message(WARNING "residual: gloo's headers were not found: building WITHOUT the 'gloo' backend of dist "
    "(CPU data-parallel training). To have it: apt-get install libgloo-dev (or set GLOO_INCLUDE_DIR to a "
    "folder holding gloo/algorithm.h), then build again (npm install, or node scripts/install/build.mjs).")
endif()
if(RESIDUAL_VARIANT STREQUAL "cuda")
  # ProcessGroupNCCL: nccl.h from the nvidia-nccl wheel (NCCL_INCLUDE_DIR) or the system.
  find_path(RESIDUAL_NCCL_INCLUDE nccl.h HINTS ENV NCCL_INCLUDE_DIR
    PATHS "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include" "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/cu13/include" /usr/include)
  if(RESIDUAL_NCCL_INCLUDE)
    list(APPEND RESIDUAL_DIST_DEFS USE_C10D_NCCL=1 RESIDUAL_NCCL=1)
    list(APPEND RESIDUAL_DIST_INCLUDES "${RESIDUAL_NCCL_INCLUDE}")
    # ATen/cuda/CUDAContext.h includes cuBLAS/cuSPARSE/cuSOLVER headers: from the nvidia wheels when
    # the toolkit lacks them (scripts/ci/build-cuda-check.sh extracts their include folders).
    file(GLOB RESIDUAL_NV_INCLUDES "${RESIDUAL_NCCL_INCLUDE}/../../*/include" "${RESIDUAL_NCCL_INCLUDE}/../../cu13/include")
    list(APPEND RESIDUAL_DIST_INCLUDES ${RESIDUAL_NV_INCLUDES})
  else()
    message(WARNING "residual: nccl.h not found: the CUDA build has no 'nccl' backend (set NCCL_INCLUDE_DIR)")
  endif()
endif()
set(RESIDUAL_C10D_SOURCES native/distributed/process_group.cpp native/distributed/ddp.cpp)
target_sources(${PROJECT_NAME} PRIVATE ${RESIDUAL_C10D_SOURCES})
set_source_files_properties(${RESIDUAL_C10D_SOURCES} PROPERTIES
  SKIP_PRECOMPILE_HEADERS ON
  COMPILE_DEFINITIONS "${RESIDUAL_DIST_DEFS}"
  INCLUDE_DIRECTORIES "${RESIDUAL_DIST_INCLUDES}")
# The rendezvous store's server (native/distributed/store.cpp): plain POSIX sockets, no libtorch, no precompiled
# header. Its functions for JS (native/distributed/store_ops.cpp) include no c10d header: an ordinary source.
target_sources(${PROJECT_NAME} PRIVATE native/distributed/store.cpp native/distributed/store_ops.cpp)
set_source_files_properties(native/distributed/store.cpp PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
