#!/usr/bin/env bash
# Agent container entrypoint. It
#  1. writes Claude Code's MCP config and tool permissions into the agent's HOME (a tmpfs, empty at
#     every start) for each team socket mounted at /run/airlock/<server>.sock, except model.sock:
#     every server runs `airlock-bridge /run/airlock/<server>.sock`, so plain `claude` has its tools;
#  2. starts the model bridge when the team has a model socket: 127.0.0.1:8080 (ANTHROPIC_BASE_URL)
#     is forwarded to /run/airlock/model.sock, where the host-side broker adds the API key (this
#     container holds none);
#  3. runs the command (default: claude).
set -euo pipefail

# Overridable only for tests outside a container; the image relies on the defaults.
socket_dir=${AIRLOCK_SOCKET_DIR:-/run/airlock}
model_socket=${AIRLOCK_MODEL_SOCKET:-$socket_dir/model.sock}
model_listen=${AIRLOCK_MODEL_LISTEN:-127.0.0.1:8080}
model_port=${model_listen##*:}

# --- 1. MCP servers for Claude Code --------------------------------------------------------------
servers=()
for socket in "$socket_dir"/*.sock; do
  [[ -S $socket && $socket != "$model_socket" ]] || continue
  name=${socket##*/}
  name=${name%.sock}
  # Airlock's server names; anything else is not one of its sockets (and could not be quoted
  # into JSON safely by this script).
  if [[ $name =~ ^[a-z][a-z0-9_-]*$ ]]; then
    servers+=("$name")
  else
    printf 'agent-entrypoint: ignoring %q (not an Airlock server socket name)\n' "$socket" >&2
  fi
done

write_claude_config() {
  local mcp="" allow="" name
  for name in "${servers[@]+"${servers[@]}"}"; do
    mcp+="${mcp:+,}\"$name\":{\"type\":\"stdio\",\"command\":\"airlock-bridge\",\"args\":[\"$socket_dir/$name.sock\"]}"
    allow+="${allow:+,}\"mcp__${name}__*\""
  done
  # (Called as a condition, where set -e does not apply: each step checks for itself.)
  mkdir -p "$HOME/.claude" || return 1
  # User-scope MCP servers live in ~/.claude.json. The onboarding flag spares the first-run
  # screens, which would only ask about things this image fixes (theme aside).
  printf '{"hasCompletedOnboarding":true,"mcpServers":{%s}}\n' "$mcp" >"$HOME/.claude.json" || return 1
  # Only spares the prompts: the broker's policy decides what each tool may do.
  printf '{"permissions":{"allow":[%s]}}\n' "$allow" >"$HOME/.claude/settings.json" || return 1
}

if [[ -z ${HOME:-} ]]; then
  echo "agent-entrypoint: HOME is not set; no MCP config written" >&2
elif [[ -e $HOME/.claude.json ]]; then
  # Someone chose their own (a mounted HOME, or a second start in the same tmpfs): keep it.
  echo "agent-entrypoint: $HOME/.claude.json exists; leaving the MCP config as it is" >&2
elif ! (write_claude_config) 2>/dev/null; then
  echo "agent-entrypoint: cannot write to $HOME (mount a tmpfs there, as run-agent.sh does); no MCP config written" >&2
elif ((${#servers[@]} == 0)); then
  echo "agent-entrypoint: no MCP server sockets in $socket_dir (is the team's socket folder mounted?)" >&2
fi

# --- 2. the model bridge ---------------------------------------------------------------------------
if [[ -S $model_socket ]]; then
  airlock-bridge --listen "$model_listen" "$model_socket" &
  bridge_pid=$!
  # Wait until the port is listening, so the agent's first request does not race the bridge.
  # (Read from /proc rather than probing with a connection the broker would see as a stray call.)
  listening="^ *[0-9]+: [0-9A-F]+:$(printf '%04X' "$model_port") [0-9A-F]+:0000 0A "
  for _ in $(seq 1 100); do
    if grep -qE "$listening" /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      break
    fi
    if ! kill -0 "$bridge_pid" 2>/dev/null; then
      echo "agent-entrypoint: airlock-bridge exited; the model API is unavailable" >&2
      break
    fi
    sleep 0.1
  done
else
  echo "agent-entrypoint: no $model_socket (the team's policy has no model server); model calls will fail" >&2
fi

# --- 3. the command ------------------------------------------------------------------------------------
if (($# == 0)); then
  set -- claude
fi
exec "$@"
