#!/usr/bin/env bash
# The GPU checks of LongNet for .NET in one run, for a machine with an NVIDIA GPU and a CUDA build of
# PyTorch (its torch/lib): the attention proofs and fuzzing on CUDA (dense equivalence, gradients,
# causality, float32/bfloat16 — the proof suite adds the CUDA device when libtorch sees one) and the
# GPU bench table (dilated vs dense SDPA, forward and forward+backward, 1K … 1M tokens). Writes JSON.
# The proofs are capped at 3 minutes and the bench at 6 (a cap reached counts as a failed check).
#
#   LONGNET_TORCH_LIB=…/site-packages/torch/lib bash tests/gpu/run.sh [--out DIR] [--max-n N] [--repeats R] [--dry-run]
#
#   --out DIR     results folder, relative to the repository root (default: gpu-results): summary.json,
#                 bench.json, bench plots, logs
#   --max-n N     the longest sequence of the bench, a power of two in [1024, 4194304] (default 1048576)
#   --repeats R   timed runs per bench cell, in [1, 10] (default 3)
#   --dry-run     check the arguments and print the commands without running them
#
# Without a CUDA GPU and a CUDA libtorch it says what is missing, prints the commands it would run and
# exits 0. Exit codes: 0 done (or nothing to do here), 2 bad arguments, 1 a check failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

out=gpu-results
max_n=1048576
repeats=3
dry_run=0

usage_error() {
  echo "error: $1 (see the header of tests/gpu/run.sh)" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage_error "--out needs a folder"; out=$2; shift 2 ;;
    --max-n) [ $# -ge 2 ] || usage_error "--max-n needs a value"; max_n=$2; shift 2 ;;
    --repeats) [ $# -ge 2 ] || usage_error "--repeats needs a value"; repeats=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown argument '$1'; known: --out DIR, --max-n N, --repeats R, --dry-run" ;;
  esac
done

[[ "$max_n" =~ ^[0-9]+$ ]] && [ "$max_n" -ge 1024 ] && [ "$max_n" -le 4194304 ] && [ $((max_n & (max_n - 1))) -eq 0 ] ||
  usage_error "--max-n must be a power of two in [1024, 4194304], got '$max_n'"
[[ "$repeats" =~ ^[0-9]+$ ]] && [ "$repeats" -ge 1 ] && [ "$repeats" -le 10 ] ||
  usage_error "--repeats must be an integer in [1, 10], got '$repeats'"
[ -n "$out" ] || usage_error "--out must name a folder"

lengths=""
for ((n = 1024; n <= max_n; n *= 2)); do lengths="${lengths:+$lengths,}$n"; done

longnet=(dotnet run -c Release --no-build --project src/LongNet.Cli --)
build=(dotnet build LongNet.sln -c Release -nologo -clp:ErrorsOnly)
proofs=(env LONGNET_PROOF_CASES=300 dotnet run -c Release --no-build --project tests/LongNet.Proofs -- --summary)
bench=("${longnet[@]}" bench --device cuda --n "$lengths" --modes fwd,fwdbwd --causal --impls dilated,dense
  --repeats "$repeats" --max-dense-seconds 60 --json "$out/bench.json" --plots "$out")

missing=""
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  missing="no NVIDIA GPU (nvidia-smi finds none)"
elif [ -z "${LONGNET_TORCH_LIB:-}" ] || [ ! -f "${LONGNET_TORCH_LIB}/libtorch_cuda.so" ]; then
  missing="LONGNET_TORCH_LIB does not name a CUDA PyTorch's torch/lib (no libtorch_cuda.so there)"
fi

show() { echo "  $*"; }

if [ -n "$missing" ] || [ "$dry_run" -eq 1 ]; then
  if [ -n "$missing" ]; then echo "GPU checks skipped: $missing."; fi
  echo "dry run: would run, writing to $out/:"
  show "${build[@]}"
  show "${proofs[@]}"
  show "${bench[@]}"
  exit 0
fi

mkdir -p "$out"
started=$(date +%s)
status=0

echo "==> build"
"${build[@]}" >"$out/build.log" 2>&1 || { echo "build failed (see $out/build.log)"; exit 1; }

echo "==> proofs and fuzzing, CUDA included"
if timeout 180 "${proofs[@]}" >"$out/proofs.log" 2>&1; then proofs_ok=true; else proofs_ok=false; status=1; fi
tail -n 5 "$out/proofs.log"

echo "==> bench on CUDA: N = $lengths"
if timeout 360 "${bench[@]}" 2>&1 | tee "$out/bench.log"; then bench_ok=true; else bench_ok=false; status=1; fi

gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -n 1)
seconds=$(($(date +%s) - started))
tmp="$out/summary.json.tmp"
printf '{ "gpu": "%s", "proofs_passed": %s, "bench_completed": %s, "bench": "bench.json", "max_n": %d, "repeats": %d, "seconds": %d }\n' \
  "$gpu" "$proofs_ok" "$bench_ok" "$max_n" "$repeats" "$seconds" >"$tmp" && mv "$tmp" "$out/summary.json"
echo "wrote $out/summary.json in ${seconds} s"
exit $status
