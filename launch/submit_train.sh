#!/usr/bin/env bash
# Submit `graviti train` to a Ray cluster as a Ray job.
#   launch/submit_train.sh http://HEAD:8265 CONFIG.yaml [--set key=value ...]
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
shift
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
exec ray job submit --address "$address" --working-dir "$here" \
  --runtime-env "$here/launch/runtime_env.yaml" -- python -m graviti_dist.train "$@"
