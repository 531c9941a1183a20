#!/usr/bin/env bash
# The accelerator check: on a machine with one NVIDIA GPU, installs the CUDA build of the jax
# version setup.py allows into a fresh virtual environment, then times, each under its own limit
# (about 8 minutes in all):
#   rounds    W1, W2 and the ConvNet round, every layout against the per-client loop (--quick)
#   fedlog    FedLoG on Cora, K = 3, 20 rounds (round 0 included), timed part by part
#   condense  Fashion-MNIST gradient matching at 10 images per class, one matching step and
#             one full iteration, XLA convolutions
# and writes one JSON ($OUT/gpu_check.json, or ./gpu_check.json) with each part's wall seconds,
# exit status and the benchmark files it wrote. Never part of CI.
#
#     FEDJAX_SYN_DATA_DIR=../shared/datasets bash scripts/gpu_check.sh
set -uo pipefail

out="${OUT:-.}"
mkdir -p "$out"
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
pip install -q -e . >/dev/null
jax_version="$(python -c 'import jax; print(jax.__version__)')"
pip install -q "jax[cuda12]==${jax_version}" >/dev/null || echo "warning: no CUDA wheel for jax ${jax_version}"
python -c 'import jax; print("backend:", jax.default_backend(), jax.devices())'

parts=()
run_part() {  # name, limit (s), command...
  local name="$1" limit="$2"
  shift 2
  local start end status
  start="$(date +%s.%N)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  status=$?
  end="$(date +%s.%N)"
  parts+=("$name:$status:$(python -c "print(round($end - $start, 1))")")
  echo "$name: exit $status, $(tail -n 1 "$out/$name.log")"
}

run_part rounds 180 python -m benchmarks.run --workloads=W1,W2,convnet --quick
run_part fedlog 150 python -m benchmarks.run --workloads=cora_fedlog --rounds=20
run_part condense 150 python -m benchmarks.condense --ipcs=10 --convs=xla --batchings=vmap \
  --repeats=2 --time_iteration --name=condense_gpu

python - "$out" "${parts[@]}" <<'EOF'
import json, pathlib, sys

import jax

out, parts = pathlib.Path(sys.argv[1]), sys.argv[2:]
files = {"rounds": ["W1", "W2", "convnet"], "fedlog": ["cora_fedlog"], "condense": ["condense_gpu"]}
report = {"device": str(jax.devices()[0]), "jax": jax.__version__, "parts": {}}
for part in parts:
    name, status, seconds = part.split(":")
    results = {}
    for stem in files[name]:
        path = pathlib.Path("benchmarks/results") / f"{stem}.json"
        if path.is_file():
            results[stem] = json.loads(path.read_text())
    report["parts"][name] = {"exit": int(status), "seconds": float(seconds), "results": results}
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
print(f"wrote {out / 'gpu_check.json'}")
EOF
