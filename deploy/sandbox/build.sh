#!/usr/bin/env bash
# Build the sandbox image from Debian packages (no registry needed) and import it into Podman.
# Usage: deploy/sandbox/build.sh [IMAGE]   (default handoff-sandbox:dev)
# The image carries a label with the hash of its recipe; a changed recipe builds it again.
set -euo pipefail
image="${1:-handoff-sandbox:dev}"
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
recipe="$(cat "$here/packages.txt" "$here/build.sh" | sha256sum | cut -c1-16)"
if [ "$(podman image inspect --format '{{ index .Labels "handoff.recipe" }}' "$image" \
        2>/dev/null)" = "$recipe" ]; then
  echo "image $image already present"; exit 0
fi
packages="$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A non-root user (uid 1000); pip may install into the throwaway image (no PEP 668 marker),
# and user installs land on PATH.
mmdebstrap --variant=minbase --quiet --include="$packages" \
  --customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash agent' \
  --customize-hook='mkdir -p "$1/workspace" && chown 1000:1000 "$1/workspace"' \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  bookworm "$work/rootfs.tar"
podman import --change 'USER agent' --change 'WORKDIR /workspace' \
  --change 'CMD ["/bin/bash"]' --change "LABEL handoff.recipe=$recipe" \
  "$work/rootfs.tar" "$image" >/dev/null
echo "built $image (recipe $recipe)"
