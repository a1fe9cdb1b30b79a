#!/usr/bin/env bash
# Milvus standalone (PyPI milvus==2.3.5 in .venv-milvus, installed by `make setup`) for tests and local runs, with
# every component registered on 127.0.0.1 so no traffic leaves the loopback range.
#
#   scripts/milvus.sh start DIR [PORT]   start it with its data under DIR (default port 19530), wait until healthy
#   scripts/milvus.sh stop DIR           stop the instance started with DIR (by its process group), wait until gone
#   scripts/milvus.sh run -- CMD ...     start one in a fresh temporary folder, run CMD with HETVIS_TEST_MILVUS set
#                                        to its address, and stop it afterwards, also when CMD fails or is interrupted
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
server="$root/.venv-milvus/bin/milvus-server"

log() { printf '[milvus] %s\n' "$*" >&2; }
die() { printf '[milvus] error: %s\n' "$*" >&2; exit 1; }

start() {
  local dir="$1" port="${2:-19530}"
  [ -x "$server" ] || die "$server is missing: run 'make setup'"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [ -f "$dir/milvus.pid" ] && kill -0 "$(cat "$dir/milvus.pid")" 2>/dev/null; then
    die "a Milvus started with $dir is already running (pid $(cat "$dir/milvus.pid"))"
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken: another Milvus (or something else) is listening there"
  fi
  local extra=()
  for component in rootCoord proxy queryCoord queryNode indexNode dataCoord dataNode; do
    extra+=(--extra-config "$component.ip=127.0.0.1")
  done
  # A restart on the same data waits for the previous run's sessions to expire: 10 s instead of 30.
  extra+=(--extra-config common.session.ttl=10 --extra-config common.gracefulStopTimeout=10)
  # Its own process group, so stopping it takes etcd and the server with the launcher.
  setsid "$server" --data "$dir/data" --proxy-port "$port" "${extra[@]}" >"$dir/milvus.log" 2>&1 &
  echo $! >"$dir/milvus.pid"
  echo "$port" >"$dir/milvus.port"
  local waited=0
  # The launcher prints its banner once Milvus's own health check passes (on whichever port it picked for it).
  until grep -q "Ctrl+C to exit" "$dir/milvus.log" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$(cat "$dir/milvus.pid")" 2>/dev/null; then
      tail -20 "$dir/milvus.log" >&2 || true
      die "Milvus exited while starting (log: $dir/milvus.log)"
    fi
    if [ "$waited" -ge 180 ]; then
      stop "$dir"
      die "Milvus was not healthy after 180 s (log: $dir/milvus.log)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "healthy after ${waited} s: http://127.0.0.1:$port (data and log under $dir)"
  echo "http://127.0.0.1:$port"
}

stop() {
  local dir="$1"
  [ -f "$dir/milvus.pid" ] || return 0
  local pid
  pid="$(cat "$dir/milvus.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    # The Milvus binary itself first, with time to stop gracefully: it then revokes its sessions in etcd, and a
    # restart on the same data does not find stale addresses (the launcher would SIGKILL it after 1 s).
    local child
    for child in $(pgrep -P "$pid" 2>/dev/null); do
      kill -TERM "$child" 2>/dev/null || true
    done
    local waited=0
    # Until it has exited (a zombie the launcher has not reaped yet counts as exited).
    while ps -o stat= --ppid "$pid" 2>/dev/null | grep -qv '^Z' && [ "$waited" -lt 30 ]; do
      sleep 1
      waited=$((waited + 1))
    done
    kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
    waited=0
    while kill -0 -- "-$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do
      sleep 1
      waited=$((waited + 1))
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "still running after 30 s: killing process group $pid"
      kill -KILL -- "-$pid" 2>/dev/null || true
      sleep 1
    fi
  fi
  rm -f "$dir/milvus.pid"
  log "stopped"
}

run() {
  [ "${1:-}" = "--" ] && shift
  [ "$#" -gt 0 ] || die "usage: scripts/milvus.sh run -- CMD ..."
  # Global, not local: the EXIT trap runs after this function has returned.
  run_dir="$(mktemp -d "${TMPDIR:-/tmp}/hetvis-milvus.XXXXXX")"
  # Stopped whatever happens to the command; the data folder goes with it.
  trap 'stop "$run_dir"; rm -rf "$run_dir"' EXIT
  trap 'exit 130' INT TERM
  local uri
  uri="$(start "$run_dir" "${MILVUS_PORT:-19530}")"
  HETVIS_TEST_MILVUS="$uri" HETVIS_TEST_MILVUS_DIR="$run_dir" "$@"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  run) shift; run "$@" ;;
  *) die "usage: scripts/milvus.sh start DIR [PORT] | stop DIR | run -- CMD ..." ;;
esac
