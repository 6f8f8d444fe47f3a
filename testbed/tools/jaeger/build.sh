#!/usr/bin/env bash
# Builds Jaeger v2 (the OpenTelemetry Collector with Jaeger's storage and
# query service) from its Go module, pinned by this directory's go.mod, as
# one static binary: the trace store of the simulation's Jaeger test and of
# the compose cluster. About 6 minutes on 2 cores the first time; Go's build
# cache makes it seconds after. The binary's UI page is a placeholder (the
# UI's assets are not in the Go module); its HTTP API is complete.
#
#   testbed/tools/jaeger/build.sh [OUT]     # default OUT: out/bin/jaeger
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-$root/out/bin/jaeger}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
mkdir -p "$(dirname "$out")"
cd "$(dirname "$0")"
CGO_ENABLED=0 go build -ldflags '-s -w' -o "$out" github.com/jaegertracing/jaeger/cmd/jaeger
