#!/usr/bin/env bash
# Every CUDA check and the CUDA trainer benchmark in one prepared call, for a lent GPU machine whose
# image has torch, PyG, pyarrow and pytest but neither DGL, Ray nor pydantic, and no network.
#
#   benchmarks/device_check.sh fetch     here, with network: the wheels that image lacks, into .whl/
#                                        (git-ignored; PYVER=3.12 by default, the image's Python)
#   benchmarks/device_check.sh run       there, through the device tool with carry [".whl"]: installs
#                                        the wheels into /tmp/site, runs the CUDA tests, then
#                                        `graviti bench --device cuda` (ours vs DGL vs PyG on the same
#                                        sampled blocks); logs and results go to $OUT (else ./device-results)
#   DEVICE=cpu benchmarks/device_check.sh run
#                                        here, without a GPU: the same steps on the CPU (tests that
#                                        need CUDA skip, the benchmark runs --quick), to check all but CUDA
#
# The run stops each step at its own limit so the whole call ends inside 8 minutes (DEADLINE_S), and
# reports what it managed; GRAVITI_COMMIT names the commit in the results (the device copy has no .git).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${WHEELS:-.whl}  # WHEELS: another folder (a check here keeps its own Python's wheels apart)

fetch() {
  local pyver=${PYVER:-3.12}
  # The pins are those this repo installs (setup.cfg and what pip resolved here): pydantic-core must
  # match pydantic exactly, and DGL 2.1.0 is the newest on PyPI.
  local pins=(dgl==2.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)
  mkdir -p "$wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$wheels" "${pins[@]}"
  ls -1 "$wheels"  # .whl/ is git-ignored; the device tool carries it when asked to
}

run() {
  local device=${DEVICE:-cuda} out=${OUT:-$PWD/device-results} started=$SECONDS deadline=${DEADLINE_S:-450}
  local py=${PYTHON:-python3}
  mkdir -p "$out"
  ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "$0: no wheels in $wheels/ (run '$0 fetch' first, carry .whl)" >&2; exit 2; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export GRAVITI_COMMIT=${GRAVITI_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
  "$py" - <<'PY' 2>&1 | tee "$out/environment.txt"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from graviti_dist._dgl import dgl  # through our door: DGL's own GraphBolt needs torchdata and torch <= 2.2.1
print("dgl", dgl.__version__, "(GraphBolt stand-in)")
for name in ("torch_geometric", "pydantic", "pyarrow", "ray"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError as exc:
        print(name, "missing:", exc.msg)
PY
  if [ "$device" = cuda ] && ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "$0: torch sees no CUDA device here (DEVICE=cpu runs the checks on the CPU)" >&2
    exit 2
  fi

  # The CUDA tests (the kernels against the CPU, the encoder, training on one GPU): the files that hold
  # them, so that pytest never imports a test module that needs Ray or FastAPI.
  local status=0
  timeout $((deadline / 3)) "$py" -m pytest -q -p no:cacheprovider tests/unit/test_model_encoder.py tests/integration/test_cuda_training.py 2>&1 | tee "$out/tests.log" || status=$?
  echo "tests: exit $status after $((SECONDS - started)) s"

  local left=$((deadline - (SECONDS - started)))
  local bench=(--device "$device" --out "$out/bench" --workdir /tmp/graviti-bench --workers 1)
  if [ "$device" = cuda ]; then
    bench+=(--graph synthetic-1m --repeat 5)
  else
    bench+=(--quick --product-epochs 0)
  fi
  timeout "$left" "$py" -m graviti_dist.cli bench "${bench[@]}" 2>&1 | tee "$out/bench.log" || status=$?
  echo "done in $((SECONDS - started)) s (exit $status); results under $out"
  return "$status"
}

case "${1:-}" in
  fetch) fetch ;;
  run) run ;;
  *) echo "usage: $0 fetch | run   (DEVICE=cpu $0 run: everything but CUDA, here)" >&2; exit 2 ;;
esac
