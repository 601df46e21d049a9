#!/usr/bin/env bash
# Build a minimal Debian bookworm base image with python3.11 (venv) and git, for machines
# that cannot pull python:3.11-slim-bookworm (no registry access), from the Debian mirror this
# machine's apt already uses:
#
#   images/base-image.sh [IMAGE]     (default model-lineage/base:bookworm; needs root)
#
# Then: make images BASE_IMAGE=model-lineage/base:bookworm
set -euo pipefail
image=${1:-model-lineage/base:bookworm}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "debootstrap needs root" >&2; exit 1; }

# The first Debian mirror in the apt sources (deb822 .sources or one-line sources.list).
mirror=$(
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true;
    grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '{print $2}' || true; } \
  | { grep -v -- '-security' || true; } | head -n1
)
mirror=${mirror:-http://deb.debian.org/debian}
echo "debootstrap bookworm from $mirror"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3.11,python3.11-venv,python3-distutils,git,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -30 "$root.log" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root.log"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  - "$image"
echo "built $image"
