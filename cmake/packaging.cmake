# The Debian package, built by `make deb`: configure with
# -DCMAKE_INSTALL_PREFIX=/usr -DTM2_SYSTEMD_UNITS=ON, build, `cpack -G DEB`.
# One package holds what `make install` puts in a prefix (program, shared and
# static library, headers, tm2p2p.pc, the CMake package) and the units.
set(TM2_DEB_MAINTAINER "tm2p2p maintainers <maintainers@tm2p2p.invalid>" CACHE STRING
    "Maintainer field of the Debian package")

set(CPACK_PACKAGE_NAME tm2p2p)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR tm2p2p)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Tendermint2 (gno.land) peer-to-peer layer: node and library")
set(CPACK_PACKAGE_DESCRIPTION
    "tm2p2p speaks the Tendermint2 wire protocol (secret connection, NodeInfo,\n\
multiplexed connection, peer exchange) and joins networks of gno.land nodes.\n\
This package holds the tm2p2p program with systemd units for a node and a\n\
seed, and libtm2p2p (shared and static, headers, pkg-config file and CMake\n\
package) for programs built on it.")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${TM2_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Runtime dependencies from what the binaries link; the fixed list is for
# machines without dpkg-dev (Debian 12's names).
find_program(TM2_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(TM2_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6, libsodium23, libuv1, libcjson1")
  if(TM2_WITH_OPENSSL)
    string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", libssl3")
  endif()
endif()
# Building against the headers (pkg-config's Requires.private, the CMake
# package's pkg_check_modules) needs the libraries' own development files;
# running the node does not.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "pkg-config, libsodium-dev, libuv1-dev, libcjson-dev")
if(TM2_WITH_OPENSSL)
  string(APPEND CPACK_DEBIAN_PACKAGE_RECOMMENDS ", libssl-dev")
endif()
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# Our own maintainer scripts replace CPack's, so the linker cache is refreshed
# through the ldconfig trigger instead.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
    ${PROJECT_SOURCE_DIR}/packaging/debian/triggers)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
