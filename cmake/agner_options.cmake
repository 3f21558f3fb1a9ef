# Project-wide compile options as an interface target every agner target links.
add_library(agner_options INTERFACE)
target_compile_options(agner_options INTERFACE -Wall -Wextra -Wno-unused-parameter)
target_compile_definitions(agner_options INTERFACE
  BOOST_ASIO_SEPARATE_COMPILATION
  BOOST_BEAST_SEPARATE_COMPILATION
  BOOST_ASIO_NO_DEPRECATED
  BOOST_ASIO_DISABLE_BOOST_COROUTINE)
if(AGNER_SANITIZE)
  target_compile_options(agner_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(agner_options INTERFACE -fsanitize=address,undefined)
endif()
if(AGNER_KEEP_ASSERTS)
  string(REPLACE "-DNDEBUG" "" CMAKE_CXX_FLAGS_RELWITHDEBINFO "${CMAKE_CXX_FLAGS_RELWITHDEBINFO}")
endif()

# Precompiled headers shared by the heavy targets (CAF, Asio/Beast).
set(AGNER_PCH_CAF <caf/all.hpp>)
set(AGNER_PCH_NET <boost/asio.hpp> <boost/beast/core.hpp> <boost/beast/http.hpp> <boost/beast/websocket.hpp>)

# agner_test(NAME SOURCES... LIBS ...): a doctest executable whose TEST_CASEs become ctest tests.
function(agner_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES} ${PROJECT_SOURCE_DIR}/test/doctest_main.cpp)
  target_link_libraries(${name} PRIVATE agner_options doctest::doctest ${T_LIBS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  if(T_LABELS)
    doctest_discover_tests(${name} TEST_PREFIX "${name}: " PROPERTIES LABELS "${T_LABELS}")
  else()
    doctest_discover_tests(${name} TEST_PREFIX "${name}: ")
  endif()
endfunction()

# agner_preload_shim(NAME SOURCES...): an LD_PRELOAD library in plain C, never sanitized (it is
# preloaded in front of ASan's runtime), exporting only what it marks visible.
function(agner_preload_shim name)
  add_library(${name} SHARED ${ARGN})
  set_target_properties(${name} PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    C_STANDARD 11
    C_VISIBILITY_PRESET hidden)
  target_compile_options(${name} PRIVATE -Wall -Wextra -fno-sanitize=all)
  target_link_options(${name} PRIVATE -fno-sanitize=all -Wl,--no-undefined)
  target_link_libraries(${name} PRIVATE ${CMAKE_DL_LIBS})
endfunction()
