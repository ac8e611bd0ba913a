#!/usr/bin/env bash
# The device check: everything a GPU session measures, as one command with each step time-boxed.
#
#   bash scripts/device_check.sh [--cpu] [--quick] [--only tests,bench,sweeps,decode]
#
# Steps, in this order, each under `timeout` and each writing JSON into $OUT:
#   tests   the gpu-marked kernel tests, compiled (interpret off)      -> kernel_tests.json
#   bench   python -m gemma_kernels.bench --device gpu                  -> bench.json
#   sweeps  recall, then tradeoff, at --scale device (the tradeoff      -> recall.csv, tradeoff.csv
#           figure reads the recall summary)
#   decode  gemma3_1b-shaped random weights at 1K and 32K context      -> decode.json
# --quick runs tests and bench (bench --quick) only, in under 3 minutes. --cpu is the rehearsal CI
# runs at tiny sizes: tests only collected (CI runs them, interpreted), bench --device cpu --quick,
# sweeps at --scale quick, decode of tiny_gemma3 at short contexts.
#
# Every step's name, exit code and seconds go into $OUT/steps.json; the script runs every step and
# exits non-zero if any failed. Also written: env.json (card, driver, versions) and device_check.log.
# Environment: OUT (default results/device_check); WORK, where bulky outputs go (sweep runs and
# figures, the decode plot, raw test reports; default $OUT; point it outside $OUT where only a few
# files come back); PYTHON (default .venv/bin/python, else python3); WHEELS (default .whl: wheels
# there, e.g. tokamax, are installed into a temporary --target folder first); LIMIT_<STEP> seconds.
# `python -m gemma_kernels.bench_report $OUT` then fills kernels/BENCHMARKS.md's results section.
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
MODE=gpu QUICK=0 ONLY=""
while (($#)); do
    case "$1" in
        --cpu) MODE=cpu ;;
        --quick) QUICK=1 ;;
        --only) ONLY=${2:?--only needs a comma list of tests,bench,sweeps,decode}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument '$1': allowed --cpu, --quick, --only LIST, --help" >&2; exit 2 ;;
    esac
    shift
done
for s in ${ONLY//,/ }; do
    case "$s" in tests | bench | sweeps | decode) ;;
        *) echo "--only: step '$s' is not one of tests, bench, sweeps, decode" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-results/device_check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$OUT}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/device_check.log") 2>&1

# A device reaches no registry: missing packages travel as wheels and go into a throwaway folder.
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
        && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Without `pip install -e .` (a device's python), the folder kernels/ is importable as gemma_kernels
# through a link; the project root itself is on the path for arch and experiments.
if ! "$PYTHON" -c "import gemma_kernels" 2>/dev/null; then
    shim=$(mktemp -d)
    ln -s "$ROOT/kernels" "$shim/gemma_kernels"
    export PYTHONPATH="$shim:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "device check: mode=$MODE quick=$QUICK only=${ONLY:-all} OUT=$OUT WORK=$WORK python=$PYTHON"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$PYTHON" - "$OUT/env.json" <<'EOF'
import importlib.metadata, json, sys

import jax

from gemma_kernels.bench import versions

env = dict(devices=[d.device_kind for d in jax.devices()], backend=jax.default_backend(), **versions())
for name in ("equinox", "optax", "numpy"):
    try:
        env[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        env[name] = None
print(" ".join(f"{k}={v}" for k, v in env.items()))
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

wanted() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }
STEPS=()
FAILED=0
# step NAME DEFAULT_LIMIT CMD...: runs CMD under `timeout` (LIMIT_<NAME> overrides) and records it.
step() {
    local name=$1 limit_var="LIMIT_${1^^}"
    local limit=${!limit_var:-$2}
    shift 2
    echo "== step $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=15 "$limit" "$@"
    local rc=$?
    local secs=$((SECONDS - start))
    ((rc == 124 || rc == 137)) && echo "== step $name: timed out after ${limit}s"
    echo "== step $name: exit $rc in ${secs}s"
    ((rc != 0)) && FAILED=1
    STEPS+=("{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $secs, \"limit\": $limit}")
    local IFS=,
    printf '{"mode": "%s", "quick": %s, "steps": [%s]}\n' "$MODE" "$([[ $QUICK == 1 ]] && echo true || echo false)" \
        "${STEPS[*]}" >"$OUT/steps.json"
}

sweeps() {  # recall first: the tradeoff figure's recall panel reads its summary
    local scale=$1 rc=0
    cd "$ROOT" || return 2
    "$PYTHON" -m experiments.sweeps recall --scale "$scale" --out "$WORK/results" || rc=1
    "$PYTHON" -m experiments.sweeps tradeoff --scale "$scale" --out "$WORK/results" || rc=1
    cp "$WORK/results/figures/$scale/"{recall,tradeoff}.csv "$OUT/" 2>/dev/null || true
    return $rc
}
export -f sweeps  # `timeout` runs programs, not functions: the step runs it through bash
export PYTHON OUT WORK ROOT

TESTS=(tests/kernels -m gpu -q -p no:cacheprovider)
if [[ $MODE == cpu ]]; then
    # CI runs these tests interpreted already; the rehearsal checks the marker selects them.
    wanted tests && step tests 120 "$PYTHON" scripts/pytest_summary.py "$OUT/kernel_tests.json" -- \
        "${TESTS[@]}" --collect-only
    wanted bench && step bench 300 "$PYTHON" -m gemma_kernels.bench --device cpu --quick --out "$OUT/bench.json"
    if ((!QUICK)); then
        wanted sweeps && step sweeps 600 bash -c 'sweeps quick'
        wanted decode && step decode 300 "$PYTHON" -m experiments.bench.decode --presets tiny_gemma3 \
            --contexts 64,256 --rounds 2 --dtype float32 --out "$WORK/decode" --json "$OUT/decode.json"
    fi
else
    wanted tests && step tests $((QUICK ? 100 : 150)) "$PYTHON" scripts/pytest_summary.py \
        "$OUT/kernel_tests.json" -- "${TESTS[@]}" --junitxml "$WORK/kernel_tests.xml"
    BENCH=(--device gpu --out "$OUT/bench.json")
    ((QUICK)) && BENCH+=(--quick)
    wanted bench && step bench $((QUICK ? 60 : 150)) "$PYTHON" -m gemma_kernels.bench "${BENCH[@]}"
    if ((!QUICK)); then
        wanted sweeps && step sweeps 480 bash -c 'sweeps device'
        wanted decode && step decode 120 "$PYTHON" -m experiments.bench.decode --presets gemma3_1b \
            --contexts 1024,32768 --rounds 8 --dtype bfloat16 --out "$WORK/decode" --json "$OUT/decode.json"
    fi
fi

echo "steps: $OUT/steps.json"
cat "$OUT/steps.json"
exit $FAILED
