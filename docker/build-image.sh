#!/usr/bin/env bash
# Build the agent image from docker/Dockerfile. Runs `npm run build` first when dist/ is missing or
# older than src/, then builds from a staged context that holds only the four files the image
# needs (and the optional CA bundle), so nothing else of the work tree can reach a layer.
#
#   docker/build-image.sh                                   # FROM node:20-bookworm-slim
#   docker/build-image.sh --base airlock-base:bookworm-node20.20.2   # a local base (build-base-image.sh)
#   docker/build-image.sh --ca-file /etc/ssl/certs/ca-certificates.crt   # behind a TLS-intercepting proxy
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo_root="$(cd "$script_dir/.." && pwd -P)"

usage() {
  cat <<'EOF'
usage: build-image.sh [--tag NAME] [--base IMAGE] [--ca-file PEM] [--claude-code-version X.Y.Z]

  --tag NAME                  image to build (default airlock-agent:latest)
  --base IMAGE                base image with Debian bookworm and Node 20 (default: the Dockerfile's,
                              node:20-bookworm-slim; docker/build-base-image.sh makes one locally)
  --ca-file PEM               CA bundle trusted by the build's package downloads (apt and npm), e.g.
                              a TLS-intercepting proxy's; used during the build only, in no layer
  --claude-code-version V     Claude Code version for this build (default: the Dockerfile's pin)
  -h, --help                  this text
EOF
}

die() {
  printf 'build-image: %s\n' "$*" >&2
  exit 1
}

tag=airlock-agent:latest
base=""
ca_file=""
claude_code_version=""
while (($# > 0)); do
  case "$1" in
    --tag | --base | --ca-file | --claude-code-version)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --tag) tag=$2 ;;
        --base) base=$2 ;;
        --ca-file) ca_file=$2 ;;
        --claude-code-version) claude_code_version=$2 ;;
      esac
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown option $(printf '%q' "$1")" ;;
  esac
done

image_name='^[A-Za-z0-9][A-Za-z0-9._/:@-]*$'
[[ $tag =~ $image_name ]] || die "bad --tag $(printf '%q' "$tag")"
[[ -z $base || $base =~ $image_name ]] || die "bad --base $(printf '%q' "$base")"
[[ -z $claude_code_version || $claude_code_version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
  || die "bad --claude-code-version $(printf '%q' "$claude_code_version") (e.g. 2.1.197)"
if [[ -n $ca_file ]]; then
  [[ -f $ca_file && -r $ca_file ]] || die "--ca-file $(printf '%q' "$ca_file") is not a readable file"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" \
    || die "--ca-file $(printf '%q' "$ca_file") holds no PEM certificate"
  # A bundle is public, but a private key pasted into it is not: refuse rather than copy one around.
  ! grep -q -- 'PRIVATE KEY-----' "$ca_file" || die "--ca-file $(printf '%q' "$ca_file") holds a private key"
fi
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running? docker info says: $(docker info 2>&1 | tail -n 1))"

# The bridge comes from dist/; rebuild it when any source is newer (or it is missing).
bridge="$repo_root/dist/src/bridge.cjs"
if [[ ! -f $bridge ]] || [[ -n $(find "$repo_root/src" "$repo_root/package.json" "$repo_root/tsconfig.json" -newer "$bridge" -print -quit) ]]; then
  printf 'build-image: dist/ is missing or older than src/; running npm run build\n' >&2
  (cd "$repo_root" && npm run build >&2) || die "npm run build failed"
fi

context=$(mktemp -d "${TMPDIR:-/tmp}/airlock-image.XXXXXX")
trap 'rm -rf -- "$context"' EXIT
mkdir -p "$context/dist/src" "$context/docker"
cp "$bridge" "$context/dist/src/bridge.cjs"
cp "$script_dir/Dockerfile" "$script_dir/agent-entrypoint.sh" "$script_dir/managed-settings.json" "$context/docker/"
[[ -z $ca_file ]] || cp -- "$ca_file" "$context/docker/build-ca.pem"

build_args=(build --file "$context/docker/Dockerfile" --tag "$tag")
[[ -z $base ]] || build_args+=(--build-arg "BASE_IMAGE=$base")
[[ -z $claude_code_version ]] || build_args+=(--build-arg "CLAUDE_CODE_VERSION=$claude_code_version")
# An engine started with --bridge=none has no default network for build steps; the host's is the
# only way their downloads get out there.
if ! docker network inspect bridge >/dev/null 2>&1; then
  printf 'build-image: the engine has no bridge network; build steps use the host network\n' >&2
  build_args+=(--network host)
fi

printf 'build-image: building %s%s\n' "$tag" "${base:+ from $base}" >&2
docker "${build_args[@]}" "$context" >&2 || die "docker build failed (output above)"
printf 'build-image: built %s\n' "$tag" >&2
