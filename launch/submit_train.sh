#!/usr/bin/env bash
# Submit `graviti train` to a Ray cluster as a Ray job.
#   launch/submit_train.sh http://HEAD:8265 CONFIG.yaml [--set key=value ...]
# Ray 2.60 turns token auth on by default: RAY_AUTH_MODE must match what `ray start` used
# (and with auth on, the token must be available to this client).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DASHBOARD_ADDRESS CONFIG.yaml [--set key=value ...]" >&2
  exit 2
fi
address=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
exec ray job submit --address "$address" --working-dir "$here" \
  --runtime-env "$here/launch/runtime_env.yaml" -- python -m graviti_dist.train "$@"
