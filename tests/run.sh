#!/usr/bin/env bash
# Runs every test suite of LongNet for .NET on a fresh machine and ends with one line
# "N passed, N failed" summed over all suites. Does its own set-up: system packages the tests need
# (installed with apt-get when missing), local tools, paket restore, a Release build.
#   bash tests/run.sh            # everything
#   LONGNET_PROOF_CASES=10000 bash tests/run.sh   # the long fuzz/proof run
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
passed=0
failed=0

step() { printf '\n==> %s\n' "$*"; }

# Records one suite's counts: record NAME PASSED FAILED
record() {
  printf '%-28s %5d passed, %5d failed\n' "$1" "$2" "$3" >>"$results/summary"
  passed=$((passed + $2))
  failed=$((failed + $3))
}

# Installs Debian packages that are missing (the tests need them; a user's machine may lack them).
ensure_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  step "installing ${missing[*]}"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

step "set-up: system packages, tools, paket restore"
df -h . | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'
ensure_packages openmpi-bin libopenmpi-dev || { echo "error: could not install Open MPI (needed by the distributed tests)"; exit 1; }
dotnet tool restore >/dev/null || exit 1
dotnet paket restore || exit 1

step "format check (fantomas)"
if dotnet fantomas --check src tests examples; then record "format (fantomas)" 1 0; else
  echo "fantomas: files need formatting: run 'dotnet fantomas src tests examples'"; record "format (fantomas)" 0 1; fi

step "build (Release)"
if ! dotnet build LongNet.sln -c Release -nologo -clp:ErrorsOnly -p:LongNetSkipToolRestore=true; then
  record "build" 0 1
  echo; cat "$results/summary"; echo "$passed passed, $failed failed"; exit 1
fi
record "build" 1 0

# Counts passed/failed from a .trx file written by `dotnet test --logger trx`.
trx_counts() {
  local trx=$1
  local p f
  p=$(grep -o '<Counters [^>]*' "$trx" | grep -o ' passed="[0-9]*"' | grep -o '[0-9]*')
  f=$(grep -o '<Counters [^>]*' "$trx" | grep -o ' failed="[0-9]*"' | grep -o '[0-9]*')
  echo "${p:-0} ${f:-1}"
}

# Prints the five slowest tests of a .trx file (duration, name): a suite whose time varies between runs
# shows which test took the time.
trx_slowest() {
  grep -o '<UnitTestResult [^>]*' "$1" |
    sed -nE 's/.*testName="([^"]*)".*duration="([^"]*)".*/\2  \1/p' | sort -r | head -n 5
}

for project in tests/*/; do
  name=$(basename "$project")
  [ "$name" = LongNet.MpiTests ] && continue # its own suite below (it launches mpirun)
  if [ -f "$project/$name.fsproj" ] || [ -f "$project/$name.csproj" ]; then
    if grep -q '<IsTestProject>true</IsTestProject>' "$project"/*.??proj; then
      step "$name (xunit)"
      dotnet test "$project" -c Release --no-build -nologo --logger "trx;LogFileName=$results/$name.trx" --logger "console;verbosity=normal" 2>&1 | grep -v '^\s*$' | tail -n 60
      if [ -f "$results/$name.trx" ]; then
        read -r p f < <(trx_counts "$results/$name.trx")
        echo "slowest tests of $name:"; trx_slowest "$results/$name.trx"
      else p=0; f=1; fi
      record "$name" "$p" "$f"
    elif grep -q '<OutputType>Exe</OutputType>' "$project"/*.??proj; then
      step "$name (Expecto)"
      dotnet "$project/bin/Release/net10.0/$name.dll" --colours 0 --no-spinner 2>&1 | tee "$results/$name.log" | tail -n 40
      line=$(grep -E '[0-9]+ passed, [0-9]+ ignored, [0-9]+ failed, [0-9]+ errored' "$results/$name.log" | tail -n 1)
      if [ -n "$line" ]; then
        p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
        f=$(($(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+') + $(echo "$line" | grep -oE '[0-9]+ errored' | grep -oE '[0-9]+')))
      else p=0; f=1; fi
      record "$name" "$p" "$f"
    fi
  fi
done

# Sequence-parallel attention over a real MPI: the driver launches `mpirun --allow-run-as-root
# --oversubscribe -np 2` and `-np 4` itself, plus the fault scenarios, and ends with "MPI: N passed, M failed".
step "LongNet.MpiTests (mpirun -np 2 and -np 4, fault scenarios)"
dotnet tests/LongNet.MpiTests/bin/Release/net10.0/LongNet.MpiTests.dll 2>&1 | tee "$results/mpi.log" | tail -n 40
line=$(grep -E '^MPI: [0-9]+ passed, [0-9]+ failed' "$results/mpi.log" | tail -n 1)
if [ -n "$line" ]; then
  record "LongNet.MpiTests" "$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')" "$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')"
else record "LongNet.MpiTests" 0 1; fi

step "docs (fsdocs: the pages and the API reference from the XML docs)"
if dotnet fsdocs build --properties Configuration=Release LongNetSkipToolRestore=true --output "$results/docs" --clean --strict \
    >"$results/docs.log" 2>&1 && [ -s "$results/docs/reference/index.html" ]; then
  echo "ok   docs built ($(find "$results/docs" -name '*.html' | wc -l) pages)"; record "docs (fsdocs)" 1 0
else tail -n 30 "$results/docs.log"; record "docs (fsdocs)" 0 1; fi

if [ -d examples ] && ls examples/*.fsx >/dev/null 2>&1; then
  step "examples (dotnet fsi)"
  ep=0; ef=0
  for script in examples/*.fsx; do
    # A script that writes files takes an output folder as its first argument.
    if dotnet fsi "$script" "$results/out-$(basename "$script" .fsx)" >"$results/example.log" 2>&1 </dev/null; then ep=$((ep + 1)); echo "ok   $script"
    else ef=$((ef + 1)); echo "FAIL $script"; tail -n 20 "$results/example.log"; fi
  done
  record "examples" "$ep" "$ef"
fi

if [ -f examples/CSharp/LongNet.Examples.CSharp.csproj ]; then
  step "example (C#: examples/CSharp)"
  if dotnet run -c Release --no-build --project examples/CSharp >"$results/example-csharp.log" 2>&1; then
    cat "$results/example-csharp.log"; record "example (C#)" 1 0
  else tail -n 40 "$results/example-csharp.log"; record "example (C#)" 0 1; fi
fi

step "packages (dotnet pack, then install into a fresh C# project)"
bash tests/packaging/check.sh --no-build 2>&1 | tee "$results/packages.log"
line=$(grep -E '^packages: [0-9]+ passed, [0-9]+ failed' "$results/packages.log" | tail -n 1)
if [ -n "$line" ]; then
  p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
  f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
else p=0; f=1; fi
record "packages (NuGet)" "$p" "$f"

echo
cat "$results/summary"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
