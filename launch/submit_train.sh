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
exec ray job submit --address "$address" --working-dir "$here" \
  --runtime-env "$here/launch/runtime_env.yaml" -- python -m graviti_dist.train "$config" "${args[@]}"
