#!/usr/bin/env bash
# Install the Docker Compose v2 CLI plugin (~/.docker/cli-plugins/docker-compose) when `docker compose` is missing.
# Only `docker compose config` is needed here (the compose-file test); no Docker engine is required.
# Compose v2 has no Debian package in bookworm and GitHub release binaries are out of reach on our CI machines,
# so this builds it from the Go module (Go >= 1.24). The first build takes ~8 min on 2 cores; Go's module and build
# caches make later runs fast.
set -euo pipefail
VERSION="${COMPOSE_VERSION:-v2.40.3}"
DEST="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"

if docker compose version >/dev/null 2>&1; then
  docker compose version
  exit 0
fi
command -v go >/dev/null || { echo "install-docker-compose: needs Go (>= 1.24) to build Compose $VERSION" >&2; exit 1; }

export GOFLAGS="${GOFLAGS:-} -mod=mod"
MOD="github.com/docker/compose/v2"
echo "install-docker-compose: building $MOD@$VERSION (first time ~8 min)" >&2
SRC="$(go mod download -json "$MOD@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
cp -r "$SRC/." "$WORK/"
chmod -R u+w "$WORK"
mkdir -p "$(dirname "$DEST")"
(cd "$WORK" && go build -trimpath -ldflags "-s -w -X $MOD/internal.Version=$VERSION" -o "$DEST" ./cmd)
docker compose version
