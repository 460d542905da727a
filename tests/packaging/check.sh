#!/usr/bin/env bash
# Packaging check: packs LongNet and LongNet.CSharp into a temporary folder feed, checks what a consumer
# receives (README, MIT licence, XML docs, dependencies: TorchSharp not TorchSharp-cpu, FSharp.Core, LongNet),
# then creates a fresh C# console project outside the repository (`dotnet new console`), adds
# LongNet.CSharp and TorchSharp-cpu from that feed plus nuget.org, and runs a program that uses the builders
# (attention, and a tiny model that generates a few tokens).
# Ends with "packages: N passed, N failed"; exits 1 on any failure.
#   bash tests/packaging/check.sh              # builds the two projects if needed
#   bash tests/packaging/check.sh --no-build   # after a Release build (what tests/run.sh does)
# The packages get a unique prerelease version, and restore uses a private packages folder (with the
# user's NuGet cache as a read-only fallback), so no stale package is ever picked up and nothing is left behind.
set -uo pipefail
cd "$(dirname "$0")/../.."
build_flag=""
[ "${1:-}" = "--no-build" ] && build_flag="--no-build"

work=$(mktemp -d)
feed="$work/feed"
packages="$work/packages"
app="$work/app"
cache="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
base=$(grep -o '<Version>[^<]*' Directory.Build.props | head -n 1 | cut -d'>' -f2)
version="$base-pkgtest.$(date +%Y%m%d%H%M%S).$$"
# The pack leaves a nuspec per version in obj/; remove this run's with the rest.
trap 'rm -rf "$work"; rm -f src/LongNet/obj/*/LongNet."$version".nuspec src/LongNet.CSharp/obj/*/LongNet.CSharp."$version".nuspec' EXIT
passed=0
failed=0

check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then passed=$((passed + 1)); echo "ok   $what"
  else failed=$((failed + 1)); echo "FAIL $what"; fi
}
finish() {
  echo "packages: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

for project in src/LongNet src/LongNet.CSharp; do
  if ! dotnet pack "$project" -c Release $build_flag -nologo -v quiet -o "$feed" \
      -p:PackageVersion="$version" -p:LongNetSkipToolRestore=true >"$work/pack.log" 2>&1; then
    tail -n 30 "$work/pack.log"; failed=$((failed + 1)); echo "FAIL dotnet pack $project"; finish
  fi
done
check "LongNet.$version.nupkg in the feed" test -f "$feed/LongNet.$version.nupkg"
check "LongNet.CSharp.$version.nupkg in the feed" test -f "$feed/LongNet.CSharp.$version.nupkg"

# A fresh console project, outside the repository (so no Directory.Build.props or paket applies); its
# config adds the local feed to the machine's configured package sources.
cat >"$work/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <config>
    <add key="globalPackagesFolder" value="$packages" />
  </config>
  <fallbackPackageFolders>
    <add key="cache" value="$cache" />
  </fallbackPackageFolders>
  <packageSources>
    <add key="local" value="$feed" />
  </packageSources>
</configuration>
XML
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
unset NUGET_PACKAGES
if ! (cd "$work" && dotnet new console -o app --framework net10.0 >"$work/new.log" 2>&1 &&
      cd app && dotnet add package LongNet.CSharp --version "$version" >"$work/add.log" 2>&1 &&
      dotnet add package TorchSharp-cpu --version 0.107.0 >>"$work/add.log" 2>&1); then
  cat "$work/new.log" "$work/add.log" | tail -n 30; failed=$((failed + 1)); echo "FAIL create the consumer project"; finish
fi
passed=$((passed + 1)); echo "ok   dotnet new console + dotnet add package LongNet.CSharp $version, TorchSharp-cpu"

# What the consumer received, as NuGet extracted it.
csharp_pkg="$packages/longnet.csharp/$version"
core_pkg="$packages/longnet/$version"
check "LongNet: licence expression MIT" grep -q '<license type="expression">MIT</license>' "$core_pkg/longnet.nuspec"
check "LongNet: README.md packed and declared" grep -q '<readme>README.md</readme>' "$core_pkg/longnet.nuspec"
check "LongNet: README.md present" test -s "$core_pkg/README.md"
check "LongNet: XML docs (lib/net10.0/LongNet.xml)" test -s "$core_pkg/lib/net10.0/LongNet.xml"
check "LongNet: depends on TorchSharp" grep -q '<dependency id="TorchSharp"' "$core_pkg/longnet.nuspec"
check "LongNet: depends on FSharp.Core" grep -q '<dependency id="FSharp.Core"' "$core_pkg/longnet.nuspec"
check "LongNet: no TorchSharp-cpu dependency" bash -c "! grep -qi 'TorchSharp-cpu' '$core_pkg/longnet.nuspec'"
check "LongNet.CSharp: licence expression MIT" grep -q '<license type="expression">MIT</license>' "$csharp_pkg/longnet.csharp.nuspec"
check "LongNet.CSharp: README.md packed and declared" grep -q '<readme>README.md</readme>' "$csharp_pkg/longnet.csharp.nuspec"
check "LongNet.CSharp: XML docs (lib/net10.0/LongNet.CSharp.xml)" test -s "$csharp_pkg/lib/net10.0/LongNet.CSharp.xml"
check "LongNet.CSharp: depends on LongNet $version" grep -q "<dependency id=\"LongNet\" version=\"$version\"" "$csharp_pkg/longnet.csharp.nuspec"
check "LongNet.CSharp: no TorchSharp-cpu dependency" bash -c "! grep -qi 'TorchSharp-cpu' '$csharp_pkg/longnet.csharp.nuspec'"

# A portable consumer build copies libtorch for three platforms (~2.5 GB); hard links keep the disk free.
cat >"$app/Program.cs" <<'CS'
using LongNet.CSharp;
using static TorchSharp.torch;

LongNetRuntime.EnsureLoaded();
var attention = DilatedAttention.Create().Segments(4, 8).Rates(1, 2).HeadOffsets(HeadOffsets.Paper).Build();
var plan = attention.Plan(sequenceLength: 16, heads: 2, headDim: 4);

using var scope = NewDisposeScope();
var generator = new Generator(1, CPU);
var q = randn([1, 2, 16, 4], dtype: ScalarType.Float64, generator: generator);
var k = randn([1, 2, 16, 4], dtype: ScalarType.Float64, generator: generator);
var v = ones(1, 2, 16, 4, dtype: ScalarType.Float64);
var output = attention.Forward(q, k, v);                      // a convex mixture of ones is one
var explicitOutput = attention.ToBuilder().Kernel(AttentionKernel.Explicit).Build().Forward(q, k, v);
var agree = output.allclose(explicitOutput, rtol: 0, atol: 1e-12);
Console.WriteLine($"pairs={plan.AttendedPairs} mean={output.mean().item<double>():F6} kernels-agree={agree}");

using var model = LongNetModel.Create().Vocabulary(32).Embedding(8).Layers(1).Heads(2).FeedForward(16)
    .Segments(4, 8).Rates(1, 2).Causal().Seed(1).Build();
var logits = model.Forward(zeros(1, 5, dtype: ScalarType.Int64));
var next = TextGenerator.Create().MaxNewTokens(3).Greedy().Build().GenerateTokens(model, [1, 2, 3]);
Console.WriteLine($"logits=[{string.Join(",", logits.shape)}] parameters={model.ParameterCount} generated={next.Length}");
CS
expected="pairs=192 mean=1.000000 kernels-agree=True"
expected_model="logits=[1,5,32] parameters=944 generated=3"
if (cd "$app" && timeout 300 dotnet run -c Release -p:WarningsAsErrors=nullable -p:CreateHardLinksForCopyLocalIfPossible=true >"$work/run.log" 2>&1); then
  if grep -qxF "$expected" "$work/run.log"; then passed=$((passed + 1)); echo "ok   the consumer program prints: $expected"
  else failed=$((failed + 1)); echo "FAIL the consumer program should print: $expected"; tail -n 20 "$work/run.log"; fi
  if grep -qxF "$expected_model" "$work/run.log"; then passed=$((passed + 1)); echo "ok   the consumer program builds a model: $expected_model"
  else failed=$((failed + 1)); echo "FAIL the consumer program should print: $expected_model"; tail -n 20 "$work/run.log"; fi
else
  failed=$((failed + 1)); echo "FAIL the consumer program did not build or run"; tail -n 30 "$work/run.log"
fi
finish
