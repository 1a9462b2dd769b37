# softgrad_discover_tests(target PREFIX p WORKING_DIRECTORY dir TIMEOUT s)
# Registers one ctest case per doctest TEST_CASE of `target`, named "<p><test case>".
# Like doctest's own doctest_discover_tests (the list is read from the built executable
# after each build, so no re-configure is needed), with two fixes for doctest 2.4.9:
#  - a TEST_CASE whose name has a ';' is not split into two cases that match nothing;
#  - a ctest case whose filter matches no TEST_CASE fails instead of passing silently.
set(_SOFTGRAD_DOCTEST_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/SoftgradDoctestAddTests.cmake)

function(softgrad_discover_tests target)
  cmake_parse_arguments(arg "" "PREFIX;WORKING_DIRECTORY;TIMEOUT" "" ${ARGN})
  if(NOT arg_WORKING_DIRECTORY)
    set(arg_WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 1500)
  endif()
  set(tests_file ${CMAKE_CURRENT_BINARY_DIR}/${target}_tests.cmake)
  set(include_file ${CMAKE_CURRENT_BINARY_DIR}/${target}_include.cmake)
  add_custom_command(TARGET ${target} POST_BUILD
    BYPRODUCTS ${tests_file}
    COMMAND ${CMAKE_COMMAND}
      -D TEST_EXECUTABLE=$<TARGET_FILE:${target}>
      -D TEST_PREFIX=${arg_PREFIX}
      -D TEST_WORKING_DIR=${arg_WORKING_DIRECTORY}
      -D TEST_TIMEOUT=${arg_TIMEOUT}
      -D CTEST_FILE=${tests_file}
      -P ${_SOFTGRAD_DOCTEST_SCRIPT}
    VERBATIM)
  file(WRITE ${include_file}
    "if(EXISTS \"${tests_file}\")\n"
    "  include(\"${tests_file}\")\n"
    "else()\n"
    "  add_test(${target}_NOT_BUILT ${target}_NOT_BUILT)\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${include_file})
endfunction()
