#!/usr/bin/env bash
# The registry-free base image: Debian bookworm (minbase) with Python 3 from Debian packages,
# made with debootstrap from the configured Debian mirror and imported into the container engine.
#
#   hack/build-base-image.sh        prints the image name on stdout (build logs go to stderr)
#
# The image is tagged with a hash of this script (the recipe: suite, packages, clean-up), so
# it is built once and reused until the recipe changes. Needs root and debootstrap.
#   CONTAINER_ENGINE=podman|docker  the engine to import into (default: podman)
#   DEBIAN_MIRROR=URL               default: the first Debian mirror in /etc/apt/sources.list*
#   BASE_IMAGE_REPOSITORY           default: localhost/datastorage-base
set -euo pipefail

SUITE=bookworm
# python3-venv: the build stage makes the application's venv; ca-certificates, netbase and
# tzdata: TLS trust, /etc/services and time zones for the service.
PACKAGES=python3,python3-venv,ca-certificates,netbase,tzdata

SELF="${BASH_SOURCE[0]}"
ENGINE=${CONTAINER_ENGINE:-podman}
REPOSITORY=${BASE_IMAGE_REPOSITORY:-localhost/datastorage-base}
RECIPE=$(sha256sum "$SELF" | cut -c1-12)
IMAGE="$REPOSITORY:$SUITE-$RECIPE"

log() { printf 'build-base-image: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# The first plain Debian mirror apt is configured with (deb822 .sources or one-line .list).
debian_mirror() {
  local file line
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] || continue
    while read -r line; do
      if [[ "$line" =~ ^URIs:[[:space:]]*(.*/debian)/?$ ]]; then
        echo "${BASH_REMATCH[1]}"
        return 0
      fi
    done <"$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$file" ]] || continue
    while read -r line; do
      if [[ "$line" =~ ^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+/debian)/?[[:space:]]+${SUITE}[[:space:]] ]]; then
        echo "${BASH_REMATCH[2]}"
        return 0
      fi
    done <"$file"
  done
  echo http://deb.debian.org/debian
}

if "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "reusing $IMAGE (recipe unchanged)"
  echo "$IMAGE"
  exit 0
fi

command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root"

MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/datastorage-base.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT

log "debootstrap $SUITE ($PACKAGES) from $MIRROR"
start=$SECONDS
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >&2
# What only the build needed: downloaded packages, package lists, documentation, logs.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
  "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
log "debootstrap took $((SECONDS - start)) s"

start=$SECONDS
tar -C "$ROOTFS" --numeric-owner -c . | "$ENGINE" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL org.opencontainers.image.title=datastorage-base" \
  --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase with $PACKAGES" \
  --change "LABEL datastorage.recipe=$RECIPE" \
  - "$IMAGE" >&2
log "import took $((SECONDS - start)) s: $IMAGE"
echo "$IMAGE"
