#!/usr/bin/env bash
# Start one Airlock agent container: no network, no capabilities, a read-only root file system,
# one work tree at /workspace and the team's broker sockets at /run/airlock. Nothing else from the
# host goes in, and the script refuses a work tree that holds credential files. See docker/README.md.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly seccomp_profile="$script_dir/seccomp.json"
# find depth for the credential scan; deeper files are not looked at (documented in README.md).
readonly max_scan_depth=8
readonly agent_uid=1000 agent_gid=1000
readonly model_listen=127.0.0.1:8080

usage() {
  cat <<'EOF'
usage: run-agent.sh --team TEAM --workspace DIR [options] [-- COMMAND [ARG...]]

  --team TEAM          team name ([a-z0-9][a-z0-9-]*); mounts <socket-dir>/TEAM at /run/airlock
  --workspace DIR      host work tree, mounted read-write at /workspace
  --socket-dir DIR     Airlock's socketDir (default /run/airlock)
  --image NAME         agent image (default airlock-agent:latest); never pulled: build it first
                       with docker/build-image.sh (or load it yourself)
  --memory SIZE        memory limit, swap included (default 4g)
  --cpus N             CPU limit (default 2)
  --pids N             process limit (default 512)
  --tmp-size SIZE      size of the /tmp tmpfs (default 512m)
  --home-size SIZE     size of the /home/agent tmpfs (default 512m)
  --allow-file PATH    do not refuse this one credential-looking path (relative to DIR or absolute
                       inside it); repeatable. It cannot exempt the home-folder checks.
  --print              print the docker command (shell-quoted, one line) and exit without running it
  -h, --help           this text

Everything after -- is the command run inside the container (default: claude). It follows the
image name, so it can never add docker options.
EOF
}

die() {
  printf 'run-agent: %s\n' "$*" >&2
  exit 1
}

# Print a path so a hostile file name (newlines, terminal escapes) cannot forge output.
quote_path() {
  local quoted
  printf -v quoted '%q' "$1"
  printf '%s' "$quoted"
}

# Shell-quote one argument: bare when it only holds characters no shell treats specially.
shell_quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

team=""
workspace=""
socket_dir=/run/airlock
image=airlock-agent:latest
memory=4g
cpus=2
pids=512
tmp_size=512m
home_size=512m
print_only=0
allow_files=()

while (($# > 0)); do
  case "$1" in
    --team | --workspace | --socket-dir | --image | --memory | --cpus | --pids | --tmp-size | --home-size | --allow-file)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --team) team=$2 ;;
        --workspace) workspace=$2 ;;
        --socket-dir) socket_dir=$2 ;;
        --image) image=$2 ;;
        --memory) memory=$2 ;;
        --cpus) cpus=$2 ;;
        --pids) pids=$2 ;;
        --tmp-size) tmp_size=$2 ;;
        --home-size) home_size=$2 ;;
        --allow-file) allow_files+=("$2") ;;
      esac
      shift 2
      ;;
    --print)
      print_only=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      break
      ;;
    *)
      # Anything else would be a docker option in disguise (--network host, --privileged, -v ...).
      die "unknown option $(quote_path "$1"); the container command goes after --"
      ;;
  esac
done
container_command=("$@")

# --- option values --------------------------------------------------------------------------------
[[ -n $team ]] || die "--team is required"
[[ $team =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "bad team name $(quote_path "$team"): must match [a-z0-9][a-z0-9-]*"
[[ -n $workspace ]] || die "--workspace is required"
[[ $image =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]] || die "bad image name $(quote_path "$image")"
[[ $memory =~ ^[1-9][0-9]*[bkmgBKMG]?$ ]] || die "bad --memory $(quote_path "$memory") (e.g. 4g)"
[[ $cpus =~ ^([0-9]+(\.[0-9]+)?)$ && ! $cpus =~ ^0+(\.0+)?$ ]] || die "bad --cpus $(quote_path "$cpus") (e.g. 2 or 1.5)"
[[ $pids =~ ^[1-9][0-9]*$ ]] || die "bad --pids $(quote_path "$pids")"
[[ $tmp_size =~ ^[1-9][0-9]*[kmgKMG]?$ ]] || die "bad --tmp-size $(quote_path "$tmp_size")"
[[ $home_size =~ ^[1-9][0-9]*[kmgKMG]?$ ]] || die "bad --home-size $(quote_path "$home_size")"
[[ -f $seccomp_profile ]] || die "seccomp profile missing: $seccomp_profile"

# --- the work tree ------------------------------------------------------------------------------------
[[ -e $workspace ]] || die "workspace does not exist: $(quote_path "$workspace")"
[[ -d $workspace ]] || die "workspace is not a directory: $(quote_path "$workspace")"
# Resolve symlinks so every check below sees the folder docker will really mount.
workspace=$(realpath -e -- "$workspace")
# -v splits on ':' and a newline would break the printed command.
[[ $workspace != *:* && $workspace != *$'\n'* ]] || die "workspace path must not contain ':' or a newline: $(quote_path "$workspace")"

# is_within PATH DIR: PATH is DIR or below it.
is_within() {
  [[ $2 == / || $1 == "$2" || $1 == "$2"/* ]]
}

[[ $workspace != / ]] || die "refusing: the workspace is / (the whole host)"
# A top-level folder (/home, /etc, /srv, ...) holds far more than one project.
[[ $workspace == /*/* ]] || die "refusing: the workspace $(quote_path "$workspace") is a top-level folder; use a project folder"

home_dir=""
if [[ -n ${HOME:-} && -d $HOME ]]; then
  home_dir=$(realpath -e -- "$HOME")
fi
if [[ -n $home_dir && $home_dir != / ]]; then
  if is_within "$home_dir" "$workspace"; then
    die "refusing: the workspace $(quote_path "$workspace") is or contains your home folder $(quote_path "$home_dir") (~/.aws, ~/.ssh, ~/.config/gcloud ...)"
  fi
  for credential_dir in .aws .azure .config/gcloud .docker .kube .ssh .gnupg .config/gh .password-store; do
    if is_within "$workspace" "$home_dir/$credential_dir"; then
      die "refusing: the workspace $(quote_path "$workspace") is inside ~/$credential_dir"
    fi
  done
fi

# Exempted paths, normalised to absolute paths inside the work tree.
declare -A allowed_paths=()
for allowed in "${allow_files[@]+"${allow_files[@]}"}"; do
  [[ $allowed == /* ]] || allowed="$workspace/$allowed"
  allowed=$(realpath -m -s -- "$allowed")
  [[ $allowed == "$workspace"/* ]] || die "--allow-file $(quote_path "$allowed") is not inside the workspace"
  allowed_paths["$allowed"]=1
done

# Credential files from Claude Code's secure-deployment guide, plus a few well-known relatives
# (.netrc, .pgpass, ~/.ssh keys, PKCS#12 bundles). node_modules and .git are not descended into.
credential_tests=(
  -name '.env*' -o -name .git-credentials -o -name .aws -o -path '*/.config/gcloud' -o -name .azure
  -o -path '*/.docker/config.json' -o -path '*/.kube/config' -o -name .npmrc -o -name .pypirc
  -o -name '*-service-account.json' -o -name '*.pem' -o -name '*.key'
  -o -name .netrc -o -name .pgpass -o -name .ssh -o -name 'id_rsa' -o -name 'id_ecdsa' -o -name 'id_ed25519'
  -o -name '*.p12' -o -name '*.pfx'
)
offending=()
# find's exit status comes last, as its own record: `wait $!` on the process substitution is not
# reliable (it failed now and then on a busy machine, with find having succeeded).
scan_status=""
while IFS= read -r -d '' found; do
  if [[ $found == find-status:* ]]; then
    scan_status=${found#find-status:}
    continue
  fi
  [[ -n ${allowed_paths["$found"]+set} ]] || offending+=("$found")
done < <(
  find "$workspace" -maxdepth "$max_scan_depth" \
    \( \( -name node_modules -o -name .git \) -prune \) -o \( "${credential_tests[@]}" \) -print0
  printf 'find-status:%d\0' "$?"
)
[[ $scan_status == 0 ]] || die "could not scan the whole workspace (see the find errors above); refusing to mount what was not checked"

# A .git folder inside the work tree may carry a token in a remote URL.
git_config="$workspace/.git/config"
if [[ -f $git_config && -z ${allowed_paths["$git_config"]+set} ]] && grep -Eq '://[^/@[:space:]]+:[^/@[:space:]]+@' "$git_config"; then
  offending+=("$git_config")
fi

# Not a leak but a trap for the host: hooks and config the agent writes there run when anyone
# uses git in this folder on the host. Airlock's git server keeps git metadata outside the tree.
if [[ -e $workspace/.git ]]; then
  printf 'run-agent: warning: %s is writable by the agent; do not run git on the host in this work tree\n' \
    "$(quote_path "$workspace/.git")" >&2
fi

if ((${#offending[@]} > 0)); then
  printf 'run-agent: refusing: the workspace holds credential files the agent could read:\n' >&2
  for path in "${offending[@]}"; do
    printf '  %s\n' "$(quote_path "$path")" >&2
  done
  printf 'run-agent: move them out of the work tree, or exempt a checked file with --allow-file PATH\n' >&2
  exit 1
fi

# --- the team's sockets --------------------------------------------------------------------------------
[[ $socket_dir == /* ]] || die "--socket-dir must be an absolute path"
team_socket_dir="${socket_dir%/}/$team"
[[ $team_socket_dir != *:* && $team_socket_dir != *$'\n'* ]] || die "socket folder path must not contain ':' or a newline"
# The agent must never see another team's sockets.
socket_root=$(realpath -m -- "$socket_dir")
if is_within "$socket_root" "$workspace"; then
  die "refusing: the workspace contains the socket folder $(quote_path "$socket_dir") (every team's sockets)"
fi
if is_within "$workspace" "$socket_root"; then
  die "refusing: the workspace is inside the socket folder $(quote_path "$socket_dir")"
fi
if [[ ! -d $team_socket_dir ]]; then
  if ((print_only)); then
    printf 'run-agent: warning: %s does not exist yet (is `airlock serve` running?)\n' "$(quote_path "$team_socket_dir")" >&2
  else
    die "no socket folder $(quote_path "$team_socket_dir"); start \`airlock serve\` with a policy for team $team first"
  fi
fi

# --- the command ------------------------------------------------------------------------------------------
docker_args=(
  run --rm --interactive
  # Never from a registry: whoever publishes an image under this name would get the work tree and
  # the sockets. The image must be built (or loaded) on this machine.
  --pull never
  --label "airlock.team=$team"
  --network none
  --cap-drop ALL
  --security-opt no-new-privileges
  --security-opt "seccomp=$seccomp_profile"
  --read-only
  --tmpfs "/tmp:rw,noexec,nosuid,nodev,size=$tmp_size"
  --tmpfs "/home/agent:rw,noexec,nosuid,nodev,size=$home_size,uid=$agent_uid,gid=$agent_gid,mode=0700"
  --memory "$memory"
  --memory-swap "$memory"
  --cpus "$cpus"
  --pids-limit "$pids"
  --ulimit core=0
  --user "$agent_uid:$agent_gid"
  --ipc private
  --init
  --workdir /workspace
  --env "ANTHROPIC_BASE_URL=http://$model_listen"
  -v "$workspace:/workspace"
  # Read-only still lets the agent connect(): that needs write permission on the socket inode,
  # which a read-only mount does not remove (checked in test/docker/socket-mount.test.ts).
  -v "$team_socket_dir:/run/airlock:ro"
)
if [[ -t 0 && -t 1 ]]; then
  docker_args+=(--tty)
fi
docker_args+=("$image")
docker_args+=("${container_command[@]+"${container_command[@]}"}")

if ((print_only)); then
  line=$(shell_quote docker)
  for arg in "${docker_args[@]}"; do
    line+=" $(shell_quote "$arg")"
  done
  printf '%s\n' "$line"
  exit 0
fi

command -v docker >/dev/null 2>&1 || die "docker is not installed"
if ! inspect_error=$(docker image inspect --format '{{.Id}}' "$image" 2>&1 >/dev/null); then
  if [[ $inspect_error == *"No such image"* ]]; then
    die "no image $(quote_path "$image") on this machine (run-agent.sh never pulls one); build it with docker/build-image.sh --tag $(quote_path "$image")"
  fi
  die "docker cannot inspect $(quote_path "$image"): $inspect_error"
fi
exec docker "${docker_args[@]}"
