#!/usr/bin/env bash
# Build the images deploy/compose.yml runs from Debian packages alone (no image registry):
#   handoff-debian:bookworm  a minimal Debian made by mmdebstrap: the base of the next two
#   handoff:dev              Handoff, web and worker (deploy/Dockerfile), also tagged with
#                            its version (handoff:0.1.0, from bot/__init__.py)
#   handoff-postgres:15      PostgreSQL (deploy/postgres/)
#   handoff-sandbox:dev      the job sandboxes (deploy/sandbox/build.sh)
# Each image carries the hash of its recipe as a label and is built again only when the
# recipe changed (Handoff's image: its Dockerfile, pyproject.toml, bot/, handlers/, prompts/).
# Usage: deploy/build-images.sh [--rebuild]   (--rebuild: the first three again, from fresh
# packages, e.g. for security updates)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/sandbox/containers.conf}"
rebuild=0; cache=()
[ "${1:-}" = --rebuild ] && rebuild=1 && cache=(--no-cache)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
base=localhost/handoff-debian:bookworm
mirror=http://deb.debian.org
sources=("deb $mirror/debian bookworm main" "deb $mirror/debian bookworm-updates main"
         "deb $mirror/debian-security bookworm-security main")

recipe_of() {  # the paths and contents of these files and folders, and any extra words
  local words="$1"; shift
  { echo "$words"; (cd "$root" && find "$@" -type f -not -path '*/__pycache__/*' -print0 \
      | sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16
}

fresh() {  # image recipe: true when the image exists with this recipe
  [ "$rebuild" = 0 ] && [ "$(podman image inspect --format \
    '{{ index .Labels "handoff.recipe" }}' "$1" 2>/dev/null || true)" = "$2" ] \
    && echo "image $1 already present"
}

id_of() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

drop() {  # image old-id: the image this one replaced, unless something still uses it
  if [ -n "$2" ] && [ "$(id_of "$1")" != "$2" ]; then
    podman rmi "$2" >/dev/null 2>&1 || true
  fi
}

build_base() {
  local recipe hooks=() cas old
  # A machine behind a TLS-inspecting proxy trusts its CA (a file in
  # /usr/local/share/ca-certificates): so do the images, and pip uses that trust too.
  shopt -s nullglob
  cas=(/usr/local/share/ca-certificates/*.crt)
  shopt -u nullglob
  if [ ${#cas[@]} -gt 0 ]; then
    hooks+=(--customize-hook="copy-in ${cas[*]} /usr/local/share/ca-certificates"
            --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1'
            --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >"$1/etc/pip.conf"')
  fi
  recipe="$( (echo "mmdebstrap minbase ca-certificates ${sources[*]} ${hooks[*]}"
              cat "${cas[@]}" </dev/null) | sha256sum | cut -c1-16)"
  fresh "$base" "$recipe" && return
  old="$(id_of "$base")"
  mmdebstrap --variant=minbase --quiet --include=ca-certificates "${hooks[@]}" \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    bookworm "$work/rootfs.tar" "${sources[@]}"
  podman import --quiet --change 'CMD ["/bin/bash"]' --change "LABEL handoff.recipe=$recipe" \
    "$work/rootfs.tar" "$base" >/dev/null
  rm -f "$work/rootfs.tar"
  drop "$base" "$old"
  echo "built $base (recipe $recipe)"
}

build() {  # image recipe context [podman build options]: built on $base
  local image="$1" recipe="$2" context="$3" old; shift 3
  fresh "$image" "$recipe" && return
  old="$(id_of "$image")"
  podman build --quiet "${cache[@]}" --build-arg "BASE=$base" \
    --label "handoff.recipe=$recipe" --tag "$image" "$@" "$context" >/dev/null
  drop "$image" "$old"
  echo "built $image (recipe $recipe)"
}

build_base
base_recipe="$(podman image inspect --format '{{ index .Labels "handoff.recipe" }}' "$base")"
build localhost/handoff:dev \
  "$(recipe_of "$base_recipe" deploy/Dockerfile .dockerignore pyproject.toml README.md \
     app.yml bot handlers prompts)" "$root" --file "$here/Dockerfile"
# The release's own tag beside :dev, so a deployment can name the version it runs.
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/bot/__init__.py")"
podman tag localhost/handoff:dev "localhost/handoff:$version"
build localhost/handoff-postgres:15 "$(recipe_of "$base_recipe" deploy/postgres)" \
  "$here/postgres"
"$here/sandbox/build.sh" handoff-sandbox:dev
