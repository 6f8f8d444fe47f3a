#!/usr/bin/env bash
# Builds the onceplane:dev image FROM scratch for docker-compose.multiregion.yml:
# static binaries (CGO_ENABLED=0) of core, edge, wanproxy, load and
# composedrill, Jaeger (the trace store: $ONCEPLANE_JAEGER when set, else
# built by testbed/tools/jaeger/build.sh, about 6 minutes the first time)
# with its configuration, and data directories owned by the unprivileged
# user the services run as. Needs Go and a Docker engine; pulls nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-onceplane:dev}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for pkg in ./cmd/core ./cmd/edge ./testbed/cmd/wanproxy ./testbed/cmd/load ./testbed/cmd/composedrill; do
  CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$ctx/bin/$(basename "$pkg")" "$pkg"
done
if [ -n "${ONCEPLANE_JAEGER:-}" ]; then
  cp "$ONCEPLANE_JAEGER" "$ctx/bin/jaeger"
else
  testbed/tools/jaeger/build.sh "$ctx/bin/jaeger"
fi
cp compose/jaeger.yaml "$ctx/bin/jaeger.yaml"
# Mount points owned by the image user (a fresh volume takes their owner):
# one edge-secrets directory per region of docker-compose.multiregion.yml and
# one failover-edge-secrets directory per standby region (us-east).
mkdir -p "$ctx/dirs/data" "$ctx/dirs/secrets" "$ctx/dirs/out/edge/us-east" "$ctx/dirs/out/edge/eu-west" "$ctx/dirs/out/edge/ap-south" "$ctx/dirs/out/failover/us-east" "$ctx/dirs/out/producer"
cp compose/Dockerfile "$ctx/Dockerfile"
# The classic builder: BuildKit would look for a frontend image to pull.
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx"
docker image ls "$tag"
