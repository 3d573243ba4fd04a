#!/usr/bin/env bash
# Submit `graviti train` to a Ray cluster as a Ray job.
#   launch/submit_train.sh http://HEAD:8265 CONFIG.yaml [--set key=value ...]
#
# The job runs in a copy of this repo that Ray uploads (its working directory), so a relative
# path would point into that copy, which Ray deletes later: a relative `--set partitions=` or
# `--set out=` is made absolute against the directory you submit from (it must be on storage the
# cluster's nodes see), and CONFIG is passed by its place in the repo, or by its absolute path
# when it lies outside.
#
# Ray 2.60 starts heads with token authentication on, and the client must speak the same mode:
# with RAY_AUTH_MODE unset, this script uses token auth when a token is at hand (RAY_AUTH_TOKEN,
# the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token, where `ray start` keeps it on the
# head) and otherwise says what to set. A head started with RAY_AUTH_MODE=disabled needs
# RAY_AUTH_MODE=disabled here too.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DASHBOARD_ADDRESS CONFIG.yaml [--set key=value ...]" >&2
  exit 2
fi
address=$1
config=$2
shift 2
if [ ! -f "$config" ]; then
  echo "$0: config $config: no such file" >&2
  exit 2
fi
if [ -z "${RAY_AUTH_MODE:-}" ]; then
  if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    export RAY_AUTH_MODE=token
  else
    cat >&2 <<MSG
$0: no Ray auth token here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
  A head started with token auth (Ray's default): on the head run 'ray get-auth-token' and
  export RAY_AUTH_TOKEN=<that token> here (or copy its ~/.ray/auth_token).
  A head started with RAY_AUTH_MODE=disabled: export RAY_AUTH_MODE=disabled here too.
MSG
    exit 2
  fi
fi
here=$(cd "$(dirname "$0")/.." && pwd)
config=$(realpath "$config")
case "$config" in
  "$here"/*) config=${config#"$here"/} ;;
esac

# Overrides, with relative partitions/out made absolute against where we were called from.
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = --set ] && [ $# -ge 2 ]; then
    case "$2" in
      partitions=/* | out=/*) ;;
      partitions=* | out=*) set -- "$1" "${2%%=*}=$PWD/${2#*=}" "${@:3}" ;;
    esac
    args+=("$1" "$2")
    shift 2
  else
    args+=("$1")
    shift
  fi
done

# A head answers HTTP before its job agent registers; a submission in that gap gets "No available
# agent to submit job" and creates no job, so it is tried again for up to a minute. An agent that
# never comes is usually one that could not bind its port (52365 unless the head was started with
# --dashboard-agent-listen-port) because another Ray on that machine holds it: said at the end.
# The job's logs then follow, and its final status is this script's exit code.
job="graviti-train-$(date +%Y%m%d-%H%M%S)-$$"
for attempt in $(seq 1 20); do
  if answer=$(ray job submit --address "$address" --submission-id "$job" --no-wait --working-dir "$here" \
      --runtime-env "$here/launch/runtime_env.yaml" -- python -m graviti_dist.train "$config" "${args[@]}" 2>&1); then
    break
  fi
  if [[ "$answer" != *"No available agent"* ]]; then
    echo "$answer" >&2
    exit 1
  fi
  if [ "$attempt" -eq 20 ]; then
    echo "$0: the head at $address has no job agent after a minute; is another Ray on that machine holding" \
      "the agent's port (52365, or the head's --dashboard-agent-listen-port)?" >&2
    exit 1
  fi
  echo "$0: the head's job agent is not up yet; trying again in 3 s ($attempt/20)" >&2
  sleep 3
done
echo "$0: submitted job $job (ray job stop --address $address $job stops it)"
ray job logs --address "$address" --follow "$job"
# `ray job status` says "Job 'ID' succeeded" (coloured) for a job that did, anything else otherwise.
verdict=$(ray job status --address "$address" "$job" 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
if [[ "$verdict" == *"Job '$job' succeeded"* ]]; then
  echo "$0: job $job succeeded"
else
  echo "$verdict" | grep -E "Job '|Status" >&2 || echo "$verdict" >&2
  exit 1
fi
