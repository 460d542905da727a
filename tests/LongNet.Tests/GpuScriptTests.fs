/// The GPU check script (tests/gpu/run.sh) on a machine without a GPU: it checks its arguments, says
/// what is missing and exits 0 after a dry run; bad arguments exit 2 naming the option.
module LongNet.Tests.GpuScriptTests

open System
open System.Diagnostics
open System.IO
open Xunit

/// Runs the script with `args` (and LONGNET_TORCH_LIB unset, so no CUDA libtorch is found).
let private runScript (args: string list) : int * string * string =
    let info =
        ProcessStartInfo("bash", RedirectStandardOutput = true, RedirectStandardError = true)

    info.ArgumentList.Add(Path.Combine(DocsTests.repositoryRoot (), "tests", "gpu", "run.sh"))

    for a in args do
        info.ArgumentList.Add a

    info.Environment.Remove "LONGNET_TORCH_LIB" |> ignore
    use p = Process.Start info
    let stdout = p.StandardOutput.ReadToEndAsync()
    let stderr = p.StandardError.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, stdout.Result, stderr

[<Fact>]
let ``without a CUDA libtorch the GPU script says what is missing and prints its plan`` () =
    let code, stdout, stderr =
        runScript [ "--max-n"; "4096"; "--repeats"; "2"; "--out"; "gpu-out" ]

    Assert.True((code = 0), stderr)
    Assert.Contains("GPU checks skipped:", stdout)
    Assert.Contains("bench --device cuda --n 1024,2048,4096 ", stdout)
    Assert.Contains("--repeats 2", stdout)
    Assert.Contains("--json gpu-out/bench.json", stdout)
    Assert.Contains("LongNet.Proofs", stdout)

[<Fact>]
let ``the GPU script refuses bad arguments with exit code 2 naming the option`` () =
    for args, option in
        [
            [ "--repeats"; "0" ], "--repeats"
            [ "--repeats"; "x" ], "--repeats"
            [ "--max-n"; "1000" ], "--max-n"
            [ "--max-n"; "8388608" ], "--max-n"
            [ "--out" ], "--out"
            [ "--frobnicate" ], "--frobnicate"
        ] do
        let code, stdout, stderr = runScript args
        Assert.Equal(2, code)
        Assert.Contains(option, stderr)
        Assert.DoesNotContain("dry run", stdout)
