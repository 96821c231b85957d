#!/usr/bin/env bash
# Installs ortmodels the two documented ways into scratch venvs and checks that each holds
# exactly one ONNX Runtime: the GPU build (packaging/gpu, `ortmodels-gpu`) only
# onnxruntime-gpu, offering CUDAExecutionProvider (a provider list needs no GPU); the CPU
# build (`pip install -e .`) only onnxruntime. The extras that need torch (export) or the
# plain onnxruntime (dev: fastembed) are resolved without installing them.
#
# Not part of `make test`: onnxruntime-gpu is a few hundred MB. Run it (`make
# check-gpu-install`) before landing a change to pyproject.toml, packaging/gpu/ or the
# README's install section.  Usage: scripts/check_gpu_install.sh [python]
set -euo pipefail

PYTHON=${1:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ortmodels-gpu-check.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# A copy of the working tree as git sees it (tracked and new files, nothing ignored): what
# a clone would hold, so the install writes nothing into the checkout.
mkdir "$SCRATCH/src"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | tar -C "$ROOT" --null --ignore-failed-read -T - -cf - | tar -C "$SCRATCH/src" -xf -

# onnx_count VENV_PYTHON EXPECTED [PROVIDER]: the venv's onnxruntime* distributions and the
# distributions that provide the module `onnxruntime` are both exactly EXPECTED.
onnx_count() {
    "$1" - "$2" "${3:-}" <<'EOF'
import importlib.metadata as md
import sys

expected, provider = sys.argv[1], sys.argv[2]
names = sorted({d.metadata["Name"].lower() for d in md.distributions()
                if d.metadata["Name"].lower().startswith("onnxruntime")})
owners = sorted({n.lower() for n in md.packages_distributions().get("onnxruntime", [])})
print(f"  onnxruntime* distributions: {names}; module onnxruntime provided by: {owners}")
if names != [expected] or owners != [expected]:
    sys.exit(f"FAIL: expected exactly one ONNX Runtime, {expected}")
import onnxruntime

providers = onnxruntime.get_available_providers()
print(f"  onnxruntime {onnxruntime.__version__} from {md.version(expected)}: {providers}")
if provider and provider not in providers:
    sys.exit(f"FAIL: {provider} not offered")
EOF
}

# resolved VENV_PYTHON EXPECTED SPEC: what pip would install for SPEC holds exactly one
# onnxruntime* distribution, EXPECTED (resolved, nothing installed).
resolved() {
    "$1" -m pip install --quiet --dry-run --ignore-installed --report "$SCRATCH/report.json" "$3"
    "$1" - "$2" "$SCRATCH/report.json" "$3" <<'EOF'
import json
import sys

expected, report, spec = sys.argv[1:]
names = sorted(i["metadata"]["name"].lower() for i in json.load(open(report))["install"]
               if i["metadata"]["name"].lower().startswith("onnxruntime"))
print(f"  {spec.rsplit('/', 1)[-1]} would install: {names}")
if names != [expected]:
    sys.exit(f"FAIL: expected exactly one ONNX Runtime, {expected}")
EOF
}

venv() {
    "$PYTHON" -m venv "$SCRATCH/$1"
    "$SCRATCH/$1/bin/python" -m pip install --quiet --upgrade pip
}

echo "GPU build: pip install -e packaging/gpu"
venv gpu
GPU=$SCRATCH/gpu/bin/python
resolved "$GPU" onnxruntime-gpu "$SCRATCH/src/packaging/gpu[export,serve,ray]"
"$GPU" -m pip install --quiet -e "$SCRATCH/src/packaging/gpu[serve]"
"$GPU" -m pip check
onnx_count "$GPU" onnxruntime-gpu CUDAExecutionProvider
(cd "$SCRATCH" && "$GPU" -c "import ortmodels.engine.session as s; print('  ortmodels devices:', s.available_devices())")

echo "CPU build: pip install -e ."
venv cpu
CPU=$SCRATCH/cpu/bin/python
resolved "$CPU" onnxruntime "$SCRATCH/src[export,serve,ray,dev]"
"$CPU" -m pip install --quiet -e "$SCRATCH/src[serve]"
"$CPU" -m pip check
onnx_count "$CPU" onnxruntime CPUExecutionProvider

echo "OK: one ONNX Runtime in each build"
