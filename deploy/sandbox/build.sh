#!/usr/bin/env bash
# Build the sandbox image from Debian packages (no registry needed) and import it into Podman.
# Usage: deploy/sandbox/build.sh [IMAGE]   (default handoff-sandbox:dev)
set -euo pipefail
image="${1:-handoff-sandbox:dev}"
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
if podman image exists "$image" 2>/dev/null; then
  echo "image $image already present"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The same contents as the Dockerfile: git, bash, Python, build tools, a non-root user (uid 1000).
mmdebstrap --variant=minbase --quiet \
  --include=git,python3,python3-pytest,ca-certificates,make,patch,procps \
  --customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash agent' \
  --customize-hook='mkdir -p "$1/workspace" && chown 1000:1000 "$1/workspace"' \
  bookworm "$work/rootfs.tar"
podman import --change 'USER agent' --change 'WORKDIR /workspace' \
  --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$image" >/dev/null
echo "built $image"
