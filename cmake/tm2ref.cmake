# The Go reference harness tests/interop/cmd/tm2ref, built with the module
# proxy. -mod=mod checks every download against the committed go.sum; the
# modules and the build cache stay in Go's default locations, so only the
# first build on a machine downloads. CGO is off: the harness needs no C
# toolchain and must not pick up the sanitizer flags of the C build.
find_program(TM2_GO go HINTS /usr/local/go/bin ENV GOROOT PATH_SUFFIXES bin)

# The reference release tm2ref is built against: go.mod pins the current one
# (v1.7.1, what gno.land runs), go.v1.2.0.mod (+ .sum) the earlier one.
set(TM2_INTEROP_REF "v1.7.1" CACHE STRING "gno release the interop harness runs (v1.7.1 or v1.2.0)")
set_property(CACHE TM2_INTEROP_REF PROPERTY STRINGS v1.7.1 v1.2.0)
if(TM2_INTEROP_REF STREQUAL "v1.7.1")
  set(TM2_INTEROP_MODFILE go.mod)
elseif(TM2_INTEROP_REF STREQUAL "v1.2.0")
  set(TM2_INTEROP_MODFILE go.v1.2.0.mod)
else()
  message(FATAL_ERROR "TM2_INTEROP_REF must be v1.7.1 or v1.2.0, not '${TM2_INTEROP_REF}'")
endif()

# tm2_add_tm2ref(<target> <output> [ALL]): a custom target building tm2ref
# into <output>; with ALL it is part of the default build.
function(tm2_add_tm2ref target output)
  set(dir ${PROJECT_SOURCE_DIR}/tests/interop)
  # Go keeps its caches under $HOME; where the environment has none (some CI
  # runners), keep them in the build tree instead of failing (writable, so
  # removing the build tree works).
  set(go_env "GOFLAGS=-mod=mod -buildvcs=false" CGO_ENABLED=0)
  if("$ENV{HOME}" STREQUAL "" AND "$ENV{GOCACHE}" STREQUAL "")
    list(APPEND go_env "GOFLAGS=-mod=mod -buildvcs=false -modcacherw"
         GOCACHE=${PROJECT_BINARY_DIR}/go-cache GOPATH=${PROJECT_BINARY_DIR}/go-path)
  endif()
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${dir}/cmd/*.go)
  string(REGEX REPLACE "\\.mod$" ".sum" sumfile ${TM2_INTEROP_MODFILE})
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -E env ${go_env} ${TM2_GO} build -modfile=${TM2_INTEROP_MODFILE}
            -o ${output} ./cmd/tm2ref
    WORKING_DIRECTORY ${dir}
    DEPENDS ${sources} ${dir}/${TM2_INTEROP_MODFILE} ${dir}/${sumfile}
    COMMENT "Building the Go reference harness tm2ref against gno ${TM2_INTEROP_REF} (first build downloads it)"
    VERBATIM)
  add_custom_target(${target} ${ARGN} DEPENDS ${output})
  set_target_properties(${target} PROPERTIES TM2REF_PATH ${output})
endfunction()
