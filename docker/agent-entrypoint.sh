#!/usr/bin/env bash
# Agent container entrypoint: start the model bridge when the team has a model socket, then run the
# command (default: claude). The bridge forwards 127.0.0.1:8080 (ANTHROPIC_BASE_URL) to
# /run/airlock/model.sock, where the host-side broker adds the API key; this container holds none.
set -euo pipefail

# Overridable only for tests outside a container; the image relies on the defaults.
model_socket=${AIRLOCK_MODEL_SOCKET:-/run/airlock/model.sock}
model_listen=${AIRLOCK_MODEL_LISTEN:-127.0.0.1:8080}
model_port=${model_listen##*:}

if [[ -S $model_socket ]]; then
  airlock-bridge --listen "$model_listen" "$model_socket" &
  bridge_pid=$!
  # Wait until the port is listening, so the agent's first request does not race the bridge.
  # (Read from /proc rather than probing with a connection the broker would see as a stray call.)
  listening="^ *[0-9]+: [0-9A-F]+:$(printf '%04X' "$model_port") [0-9A-F]+:0000 0A "
  for _ in $(seq 1 50); do
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

if (($# == 0)); then
  set -- claude
fi
exec "$@"
