# Finds every dependency as an imported target. CAF ships no CMake config and no pkg-config file,
# so it is found by hand; Boost is pinned to 1.81 so the 1.74 libraries on Debian are never used.

find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# Boost 1.81, exact: Beast, Asio, JSON, URL (headers from boost_headers, compiled JSON/URL).
find_package(Boost 1.81.0 EXACT CONFIG REQUIRED COMPONENTS json url)

# CAF 0.17.6: headers in /usr/include/caf, libraries caf_core and caf_io.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
if(NOT TARGET caf::core)
  add_library(caf::core UNKNOWN IMPORTED)
  set_target_properties(caf::core PROPERTIES
    IMPORTED_LOCATION ${CAF_CORE_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR}
    INTERFACE_LINK_LIBRARIES Threads::Threads)
  add_library(caf::io UNKNOWN IMPORTED)
  set_target_properties(caf::io PROPERTIES
    IMPORTED_LOCATION ${CAF_IO_LIBRARY}
    INTERFACE_LINK_LIBRARIES caf::core)
endif()

# LMDB through pkg-config.
pkg_check_modules(LMDB REQUIRED IMPORTED_TARGET lmdb)
# jemalloc for agner-node (AGNER_JEMALLOC): not with the sanitizers, which bring their own allocator.
if(AGNER_JEMALLOC AND NOT AGNER_SANITIZE)
  pkg_check_modules(JEMALLOC REQUIRED IMPORTED_TARGET jemalloc)
endif()

find_package(fmt 9 REQUIRED CONFIG)
find_package(tomlplusplus REQUIRED CONFIG)
find_package(doctest REQUIRED CONFIG)
find_package(OpenSSL 3 REQUIRED)
find_package(ZLIB REQUIRED) # permessage-deflate in the gateway (chat/websocket.cpp)
find_package(benchmark CONFIG)
include(doctest)
