#!/usr/bin/env bash
# Build the sandbox image from Debian packages (no registry needed) and import it into Podman.
# Usage: deploy/sandbox/build.sh [--user NAME] [--flavour agents [--base IMAGE]] [IMAGE]
#   (default handoff-sandbox:dev; with --flavour agents, handoff-sandbox:agents)
# The image carries a label with the hash of its recipe; a changed recipe builds it again.
# --user NAME also puts it in that user's own (rootless) Podman storage, where a service
# running as NAME (deploy/systemd/handoff.service: handoff) looks for it; root's is not seen.
# --flavour agents: the default image (--base, built first if need be) plus the agent CLIs of
# agents.txt (Claude Code and Codex CLI from npm, aider from PyPI), for the CLI presets
# (`agent: claude-code`, `codex`, `aider`). The registries are reached from the build as from
# this host: its CA bundle (SSL_CERT_FILE, else Debian's) is mounted for the installs only.
set -euo pipefail
user="" flavour="" base=handoff-sandbox:dev
while [ $# -gt 0 ]; do
  case "$1" in
    --user) user="$2"; shift 2 ;;
    --flavour) flavour="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    *) break ;;
  esac
done
case "$flavour" in
  "") image="${1:-handoff-sandbox:dev}" ;;
  agents) image="${1:-handoff-sandbox:agents}" ;;
  *) echo "unknown flavour $flavour (known: agents)" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
recipe="$(cat "$here/packages.txt" "$here/build.sh" | sha256sum | cut -c1-16)"
if [ "$flavour" = agents ]; then
  recipe="$(cat "$here/packages.txt" "$here/build.sh" "$here/agents.txt" \
    "$here/agents.Containerfile" | sha256sum | cut -c1-16)"
fi
label() { "$@" image inspect --format '{{ index .Labels "handoff.recipe" }}' "$image" 2>/dev/null; }
as_user() {  # podman as $user, with the home its service has
  runuser -u "$user" -- env HOME="$(getent passwd "$user" | cut -d: -f6)" \
    CONTAINERS_CONF="$CONTAINERS_CONF" podman "$@"
}
give_to_user() {
  [ -n "$user" ] || return 0
  if [ "$(label as_user)" = "$recipe" ]; then echo "image $image already present for $user"
  else podman save "$image" | as_user load --quiet >/dev/null && echo "gave $image to $user"
  fi
}
if [ "$(label podman)" = "$recipe" ]; then
  echo "image $image already present"; give_to_user; exit 0
fi
if [ "$flavour" = agents ]; then
  "$here/build.sh" "$base"
  ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
  podman build --quiet --pull=never --build-arg "BASE=$base" --label "handoff.recipe=$recipe" \
    ${ca:+--volume "$ca:/run/host-ca.crt:ro"} -f "$here/agents.Containerfile" -t "$image" \
    "$here" >/dev/null
  echo "built $image (recipe $recipe)"
  give_to_user
  exit 0
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
give_to_user
