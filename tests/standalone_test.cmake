# CTest case install_and_build_standalone: the installed package works from outside.
#   cmake -D BUILD_DIR=<softgrad build> -D SOURCE_DIR=<examples/standalone>
#         -D WORK_DIR=<scratch dir> [-D CXX_COMPILER=...] [-D BUILD_TYPE=...] -P standalone_test.cmake
# 1. cmake --install BUILD_DIR --prefix WORK_DIR/prefix
# 2. configure + build SOURCE_DIR against it (CMAKE_PREFIX_PATH = that prefix only)
# 3. run the program; it must exit 0
cmake_minimum_required(VERSION 3.25)

foreach(var BUILD_DIR SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "standalone_test.cmake: -D ${var}=... is required")
  endif()
endforeach()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

set(prefix ${WORK_DIR}/prefix)
set(app_build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run step)
  message(STATUS "[standalone] ${step}: ${ARGN}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[standalone] ${step} failed (${rc})")
  endif()
endfunction()

run(install ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

foreach(f include/softgrad/softgrad.h include/softgrad/core/tensor.h)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "[standalone] install did not produce ${prefix}/${f}")
  endif()
endforeach()

set(configure_args -S ${SOURCE_DIR} -B ${app_build}
  -D CMAKE_BUILD_TYPE=${BUILD_TYPE}
  -D CMAKE_PREFIX_PATH=${prefix}
  # Only the install prefix may provide softgrad: never the build tree or a registry.
  -D CMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -D CMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(CXX_COMPILER)
  list(APPEND configure_args -D CMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
run(configure ${CMAKE_COMMAND} ${configure_args})
run(build ${CMAKE_COMMAND} --build ${app_build})
run(run ${app_build}/standalone)
message(STATUS "[standalone] OK")
