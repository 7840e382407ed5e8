# The CUDA backend (tensor/cuda/), by GLOAS_CUDA:
#   AUTO (default)  built when CMake finds a CUDA compiler (nvcc) and cuBLAS
#   ON              the same, and a configure error without them
#   OFF             not built
# Sets GLOAS_HAVE_CUDA, GLOAS_CUDA_SOURCES (the .cu files, or the stub that
# says "no CUDA" when not built), GLOAS_CUDA_LIBS (targets),
# GLOAS_CUDA_LIB_FILES (the same libraries as files) and GLOAS_CUDA_PC_LIBS
# (their -l names, for gloas.pc). Architectures:
# CMAKE_CUDA_ARCHITECTURES, by default 80-real;90 (sm_80 and sm_90 code, and
# sm_90 PTX for newer GPUs), few so that CI compiles every .cu file quickly;
# -DCMAKE_CUDA_ARCHITECTURES=native builds for the machine's own GPU.
set(GLOAS_HAVE_CUDA OFF)
set(GLOAS_CUDA_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/tensor/cuda/cuda-stub.cpp)
set(GLOAS_CUDA_LIBS "")
set(GLOAS_CUDA_LIB_FILES "")
set(GLOAS_CUDA_PC_LIBS "")
string(TOUPPER "${GLOAS_CUDA}" GLOAS_CUDA_MODE)
if(GLOAS_CUDA_MODE MATCHES "^(1|TRUE|YES)$")
  set(GLOAS_CUDA_MODE ON)
elseif(GLOAS_CUDA_MODE MATCHES "^(0|FALSE|NO)$")
  set(GLOAS_CUDA_MODE OFF)
endif()
if(NOT GLOAS_CUDA_MODE MATCHES "^(ON|OFF|AUTO)$")
  message(FATAL_ERROR "GLOAS_CUDA is '${GLOAS_CUDA}': expected AUTO, ON or OFF")
endif()

if(NOT GLOAS_CUDA_MODE STREQUAL "OFF")
  # nvcc outside PATH, where the CUDA Toolkit installs it.
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(GLOAS_NVCC nvcc)
    if(NOT GLOAS_NVCC AND EXISTS /usr/local/cuda/bin/nvcc)
      set(ENV{CUDACXX} /usr/local/cuda/bin/nvcc)
    endif()
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "80-real;90" CACHE STRING "CUDA architectures (native: this machine's GPU)")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit QUIET)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublas)
    set(GLOAS_HAVE_CUDA ON)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    file(GLOB GLOAS_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tensor/cuda/*.cu
      ${CMAKE_CURRENT_SOURCE_DIR}/tensor/cuda/cublas-loader.cpp)
    # The CUDA runtime is linked statically (it does nothing until the first
    # CUDA call); cuBLAS is loaded with dlopen when a CUDA backend is made
    # (tensor/cuda/cublas-loader.h), so a run on the CPU maps neither.
    set(GLOAS_CUDA_LIBS CUDA::cudart_static ${CMAKE_DL_LIBS})
    # The same as files and flags, for the exported libgloas.a (whose users
    # need no CUDA::* targets of their own) and gloas.pc.
    find_library(GLOAS_RT_LIBRARY rt)
    set(GLOAS_CUDA_LIB_FILES ${CUDA_cudart_static_LIBRARY} ${CMAKE_DL_LIBS})
    set(GLOAS_CUDA_PC_LIBS cudart_static ${CMAKE_DL_LIBS})
    if(GLOAS_RT_LIBRARY)
      list(APPEND GLOAS_CUDA_LIB_FILES ${GLOAS_RT_LIBRARY})
      list(APPEND GLOAS_CUDA_PC_LIBS rt)
    endif()
    message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
  elseif(GLOAS_CUDA_MODE STREQUAL "ON")
    message(FATAL_ERROR "GLOAS_CUDA=ON but CMake found no CUDA compiler with cuBLAS "
                        "(set CUDACXX or CMAKE_CUDA_COMPILER to nvcc, or use GLOAS_CUDA=AUTO / OFF)")
  else()
    message(STATUS "CUDA backend not built: no CUDA compiler with cuBLAS found (GLOAS_CUDA=AUTO)")
  endif()
endif()
