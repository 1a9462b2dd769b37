# Build-time half of softgrad_discover_tests (SoftgradDoctest.cmake): lists the TEST_CASEs
# of TEST_EXECUTABLE and writes one add_test per case into CTEST_FILE.
execute_process(COMMAND ${TEST_EXECUTABLE} --list-test-cases
  OUTPUT_VARIABLE output RESULT_VARIABLE rc WORKING_DIRECTORY ${TEST_WORKING_DIR})
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${TEST_EXECUTABLE} --list-test-cases failed (${rc}):\n${output}")
endif()

# NOTE: CMake lists are ';'-separated and never split inside '[...]', so hide ';', '[' and
# ']' before splitting the output into lines (a name like "x in [0, 1)" would otherwise
# swallow every line after it).
set(semi "@SOFTGRAD_SEMICOLON@")
string(REPLACE ";" "${semi}" output "${output}")
string(REPLACE "[" "@SOFTGRAD_LBRACKET@" output "${output}")
string(REPLACE "]" "@SOFTGRAD_RBRACKET@" output "${output}")
string(REPLACE "\n" ";" lines "${output}")

set(script "")
foreach(line IN LISTS lines)
  string(REPLACE "@SOFTGRAD_LBRACKET@" "[" line "${line}")
  string(REPLACE "@SOFTGRAD_RBRACKET@" "]" line "${line}")
  if(line STREQUAL "" OR line MATCHES "^=+$" OR line MATCHES "^\\[doctest\\] ")
    continue()
  endif()
  if(line MATCHES "]==]")
    message(FATAL_ERROR "test case name may not contain ']==]': ${line}")
  endif()
  # doctest's --test-case takes comma-separated wildcard patterns: escape ',' and let '?'
  # stand for the ';' (a ';' cannot cross a command line built by CMake intact).
  string(REPLACE "," "\\," filter "${line}")
  string(REPLACE "${semi}" "?" filter "${filter}")
  set(name "${TEST_PREFIX}${line}")
  string(APPEND script
    "add_test([==[${name}]==] [==[${TEST_EXECUTABLE}]==] [==[--test-case=${filter}]==])\n"
    "set_tests_properties([==[${name}]==] PROPERTIES"
    " WORKING_DIRECTORY [==[${TEST_WORKING_DIR}]==] TIMEOUT ${TEST_TIMEOUT}"
    # The filter must select a test case: doctest exits 0 when it matches none.
    " FAIL_REGULAR_EXPRESSION [==[test cases: +0 +\\|]==])\n")
endforeach()
string(REPLACE "${semi}" ";" script "${script}")
file(WRITE ${CTEST_FILE} "${script}")
