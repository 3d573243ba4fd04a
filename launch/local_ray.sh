#!/usr/bin/env bash
# A Ray head on this machine, on loopback, for trying the cluster path (`ray job submit`) alone.
#   launch/local_ray.sh start [RAY START OPTIONS ...]    e.g. --num-cpus 8
#   launch/local_ray.sh stop
#   launch/local_ray.sh status
#
# Why not plain `ray start --head` / `ray stop`: `ray stop` ends every Ray process of this user on
# the machine (a notebook's ray.init(), another head), and `ray start` keeps its session under
# /tmp/ray, shared with every other Ray. This head runs `ray start --block` in a session of its own
# with its own temporary directory, and `stop` ends exactly that session.
#
# It listens on 127.0.0.1 only (GCS on GRAVITI_RAY_PORT, default 6379; dashboard and job API on
# GRAVITI_RAY_DASHBOARD_PORT, default 8265, Ray's defaults) with token auth on: RAY_AUTH_MODE=token
# unless set, and Ray keeps the token in ~/.ray/auth_token, where launch/submit_train.sh finds it.
# Its dashboard agent (which runs submitted jobs) listens on Ray's 52365 when that is free, else on
# the next free port: with another Ray on the machine holding 52365 the agent never came up and no
# job could be submitted (seen in CI while a benchmark's ray.init() ran).
# Its state (pid, Ray's temp dir, the head's log) lives in GRAVITI_LOCAL_RAY
# (default ${TMPDIR:-/tmp}/graviti-ray-$UID).
set -euo pipefail
state=$(realpath -m "${GRAVITI_LOCAL_RAY:-${TMPDIR:-/tmp}/graviti-ray-$(id -u)}")
port=${GRAVITI_RAY_PORT:-6379}
dashboard=${GRAVITI_RAY_DASHBOARD_PORT:-8265}
# First start on 2 cores: about 10 s to a dashboard that answers; 120 s leaves room for a busy machine.
start_timeout_s=120

running() { [ -s "$state/pid" ] && kill -0 -- "-$(cat "$state/pid")" 2>/dev/null; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  if running; then
    echo "$0: already running (pid $(cat "$state/pid"), dashboard http://127.0.0.1:$(cat "$state/dashboard_port"))" >&2
    exit 0
  fi
  rm -rf "$state"  # what a killed head left behind
  for p in "$port" "$dashboard"; do
    if listening "$p"; then
      echo "$0: port $p on 127.0.0.1 is in use: set GRAVITI_RAY_PORT / GRAVITI_RAY_DASHBOARD_PORT" >&2
      exit 2
    fi
  done
  local agent=52365
  while listening "$agent"; do agent=$((agent + 1)); done
  command -v ray >/dev/null || { echo "$0: no 'ray' on PATH (activate graviti-dist's virtualenv)" >&2; exit 2; }
  mkdir -p "$state"
  export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token} RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}
  # Ray maps a loopback node address to the LAN address unless it believes clusters are off.
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    ray get-auth-token --generate >/dev/null  # saved to ~/.ray/auth_token (`ray start` would refuse to start without one)
  fi
  # A background job of a script is not a process group leader, so setsid runs ray in place: $! is
  # the new session's id, the handle `stop` kills.
  setsid ray start --head --block --node-ip-address=127.0.0.1 --port="$port" --dashboard-host=127.0.0.1 \
    --dashboard-port="$dashboard" --dashboard-agent-listen-port="$agent" --temp-dir="$state/ray" "$@" \
    >"$state/head.log" 2>&1 </dev/null &
  echo $! >"$state/pid"
  echo "$dashboard" >"$state/dashboard_port"
  wait_until_up
  echo "Ray head on 127.0.0.1:$port, dashboard and jobs at http://127.0.0.1:$dashboard (RAY_AUTH_MODE=$RAY_AUTH_MODE)"
  echo "  log: $state/head.log; stop it with: $0 stop"
}

wait_until_up() {
  local deadline=$((SECONDS + start_timeout_s))
  # Any HTTP answer (401 under token auth included) means the dashboard is up.
  until curl -s -o /dev/null "http://127.0.0.1:$dashboard/api/version"; do
    if ! running; then
      echo "$0: the head exited while starting; its log, $state/head.log:" >&2
      tail -20 "$state/head.log" >&2
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$0: no dashboard on 127.0.0.1:$dashboard after ${start_timeout_s}s; stopping (log: $state/head.log)" >&2
      stop
      exit 1
    fi
    sleep 1
  done
}

stop() {
  if ! running; then
    echo "$0: no head of ours running (state: $state)"
    rm -rf "$state"
    return 0
  fi
  local session
  session=$(cat "$state/pid")
  kill -TERM -- "-$session" 2>/dev/null || true
  for _ in $(seq 60); do
    running || break
    sleep 1
  done
  kill -KILL -- "-$session" 2>/dev/null || true
  rm -rf "$state"
  echo "stopped the Ray head (session $session)"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status)
    if running; then echo "running: pid $(cat "$state/pid"), dashboard http://127.0.0.1:$(cat "$state/dashboard_port")"
    else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start [ray start options ...] | stop | status" >&2; exit 2 ;;
esac
