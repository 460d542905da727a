/// The suite driver (run without mpirun): launches `mpirun` for the checks on 2 and 4 ranks, for each
/// fault scenario and for `longnet train --ranks 2` against a single-process run of the same command;
/// checks exit codes, messages, logs and timing, and prints "MPI: N passed, M failed".
module LongNet.MpiTests.Driver

open System
open System.Diagnostics
open System.IO
open System.Reflection
open System.Text.RegularExpressions

let private count (text: string) (pattern: string) =
    Regex.Matches(text, Regex.Escape pattern).Count

/// What one mpirun launch did.
type Run =
    {
        ExitCode: int
        Output: string
        Elapsed: TimeSpan
        TimedOut: bool
    }

/// Runs `program arguments`, collecting stdout and stderr together, and kills it after `limit`.
let launch (program: string) (arguments: string list) (limit: TimeSpan) : Run =
    let info = ProcessStartInfo(program)

    for a in arguments do
        info.ArgumentList.Add a

    info.RedirectStandardOutput <- true
    info.RedirectStandardError <- true
    info.UseShellExecute <- false
    // Quiet Open MPI's notice about unused high-speed transports on machines without them.
    info.Environment.["OMPI_MCA_btl_base_warn_component_unused"] <- "0"
    let output = Text.StringBuilder()
    let gate = obj ()
    let clock = Stopwatch.StartNew()
    use proc = new Process(StartInfo = info)

    let append (e: DataReceivedEventArgs) =
        if not (isNull e.Data) then
            lock gate (fun () -> output.AppendLine e.Data |> ignore)

    proc.OutputDataReceived.Add append
    proc.ErrorDataReceived.Add append
    proc.Start() |> ignore
    proc.BeginOutputReadLine()
    proc.BeginErrorReadLine()
    let finished = proc.WaitForExit(int limit.TotalMilliseconds)

    if not finished then
        proc.Kill true
        proc.WaitForExit()
    else
        proc.WaitForExit()

    {
        ExitCode = (if finished then proc.ExitCode else -1)
        Output = lock gate (fun () -> output.ToString())
        Elapsed = clock.Elapsed
        TimedOut = not finished
    }

/// Launches `mpirun --allow-run-as-root --oversubscribe -np ranks dotnet <dll> arguments`, exporting
/// `environment` to every rank, and kills it after `limit`.
let mpirunDll
    (ranks: int)
    (dll: string)
    (arguments: string list)
    (environment: (string * string) list)
    (limit: TimeSpan)
    : Run =
    let exports =
        environment |> List.collect (fun (name, value) -> [ "-x"; $"{name}={value}" ])

    launch
        "mpirun"
        ([ "--allow-run-as-root"; "--oversubscribe"; "-np"; string ranks ]
         @ exports
         @ [ "dotnet"; dll ]
         @ arguments)
        limit

/// Launches this test program under mpirun in `mode` (see `mpirunDll`).
let mpirun (ranks: int) (mode: string) (environment: (string * string) list) (limit: TimeSpan) : Run =
    mpirunDll ranks (Assembly.GetEntryAssembly().Location) [ mode ] environment limit

/// The `longnet` command's assembly built beside this one (same configuration), e.g.
/// src/LongNet.Cli/bin/Release/net10.0/LongNet.Cli.dll.
let cliAssembly () : string =
    let here =
        DirectoryInfo(Path.GetDirectoryName(Assembly.GetEntryAssembly().Location))
    // tests/LongNet.MpiTests/bin/<configuration>/<framework>
    let framework, configuration = here.Name, here.Parent.Name
    let root = here.Parent.Parent.Parent.Parent.Parent.FullName
    Path.Combine(root, "src", "LongNet.Cli", "bin", configuration, framework, "LongNet.Cli.dll")

/// The loss column of a `train_log.csv` (or the validation loss column of `validation_log.csv`).
let private lossColumn (path: string) : float[] =
    if File.Exists path then
        File.ReadAllLines path
        |> Array.skip 1
        |> Array.map (fun line -> Double.Parse(line.Split(',').[1], Globalization.CultureInfo.InvariantCulture))
    else
        [||]

/// The end-to-end checks of `longnet train --ranks P`: (name, passed, run) for each.
let private trainCommandChecks () : (string * bool * Run) list =
    let cli = cliAssembly ()

    let folder =
        Path.Combine(Path.GetTempPath(), $"longnet-mpi-train-{Guid.NewGuid():N}")

    Directory.CreateDirectory folder |> ignore

    try
        let corpus = Path.Combine(folder, "corpus.txt")

        File.WriteAllText(
            corpus,
            String.replicate 60 "Seven wizards hex the quick brown fox near the old mill bridge; "
        )

        let config = Path.Combine(folder, "run.json")
        // fp64, no dropout: the split run must reproduce the single-process run to rounding
        File.WriteAllText(
            config,
            """{ "preset": "tiny", "model": { "dropout": 0.0, "embedDim": 16, "segmentLengths": [8, 16, 32], "dilationRates": [1, 2, 4] }, "train": { "steps": 3, "seqLen": 45, "batchSize": 2, "precision": "fp64", "evalTokens": 180, "warmupSteps": 2 } }"""
        )

        let arguments (out: string) =
            [
                "train"
                "--corpus"
                corpus
                "--config"
                config
                "--out"
                Path.Combine(folder, out)
            ]

        let limit = TimeSpan.FromSeconds 180.0
        let single = launch "dotnet" (cli :: arguments "single") limit
        let split = mpirunDll 2 cli (arguments "split" @ [ "--ranks"; "2" ]) [] limit

        let close (a: float[]) (b: float[]) =
            a.Length > 0
            && a.Length = b.Length
            && Array.forall2 (fun (x: float) y -> abs (x - y) <= 1e-10) a b

        let log (run: string) (name: string) = Path.Combine(folder, run, name)

        let sameRun =
            single.ExitCode = 0
            && split.ExitCode = 0
            && close (lossColumn (log "single" "train_log.csv")) (lossColumn (log "split" "train_log.csv"))
            && close (lossColumn (log "single" "validation_log.csv")) (lossColumn (log "split" "validation_log.csv"))
            && File.Exists(log "split" "checkpoint.ckpt")
            && count split.Output "done at step 3" = 1
            && count split.Output "sequence parallel: 2 ranks" = 1

        let unlaunched =
            launch "dotnet" (cli :: arguments "unlaunched" @ [ "--ranks"; "2" ]) limit

        let wrongSize = mpirunDll 2 cli (arguments "wrong" @ [ "--ranks"; "3" ]) [] limit

        [
            "longnet train --ranks 2 under mpirun -np 2: the single-process losses and validation loss (fp64, 1e-10), one report, one checkpoint",
            sameRun,
            split
            "longnet train --ranks 2 without mpirun exits 2 and says how to launch",
            unlaunched.ExitCode = 2
            && count unlaunched.Output "mpirun --allow-run-as-root --oversubscribe -np 2 longnet train --ranks 2" = 1
            && not (Directory.Exists(Path.Combine(folder, "unlaunched"))),
            unlaunched
            "longnet train --ranks 3 under mpirun -np 2 fails (exit 2 from rank 0), reported once",
            wrongSize.ExitCode = 2
            && count wrongSize.Output "--ranks 3 but mpirun started 2 processes" = 1,
            wrongSize
        ]
    finally
        try
            Directory.Delete(folder, true)
        with _ ->
            ()

let private tail (text: string) =
    let lines = text.Split('\n')
    lines.[max 0 (lines.Length - 25) ..] |> String.concat "\n"

/// Runs the whole MPI suite and returns the number of failed checks.
let run () : int =
    let mutable passed = 0
    let mutable failed = 0

    let report (name: string) (ok: bool) (run: Run) =
        if ok then
            passed <- passed + 1
            printfn "ok    %s (%.1f s)" name run.Elapsed.TotalSeconds
        else
            failed <- failed + 1

            printfn
                "FAIL  %s (exit %d, %.1f s%s); output:"
                name
                run.ExitCode
                run.Elapsed.TotalSeconds
                (if run.TimedOut then ", killed: hung" else "")

            printfn "%s" (tail run.Output)

    for ranks in [ 2; 4 ] do
        let r = mpirun ranks "cases" [] (TimeSpan.FromSeconds 240.0)
        printf "%s" r.Output

        let summary =
            Regex.Match(r.Output, $"MPI ranks={ranks}: (\\d+) passed, (\\d+) failed")

        if summary.Success && r.ExitCode = 0 && not r.TimedOut then
            passed <- passed + int summary.Groups.[1].Value
            failed <- failed + int summary.Groups.[2].Value
        elif summary.Success then
            passed <- passed + int summary.Groups.[1].Value
            failed <- failed + max 1 (int summary.Groups.[2].Value)
        else
            report $"checks on {ranks} ranks ran to their summary" false r

    let quick (r: Run) =
        r.ExitCode <> 0 && not r.TimedOut && r.Elapsed < TimeSpan.FromSeconds 90.0

    let fault = mpirun 2 "fault" [] (TimeSpan.FromSeconds 120.0)

    report
        "fault: a rank that throws ends every rank, non-zero, with one message naming it"
        (quick fault
         && count fault.Output "longnet: rank 1 of 2 failed: Exception: deliberate failure in rank 1" = 1
         && count fault.Output "longnet:" = 1)
        fault

    let mismatch = mpirun 2 "mismatch" [] (TimeSpan.FromSeconds 120.0)

    report
        "fault: mismatched configs are detected at start and reported once, listing each rank's"
        (quick mismatch
         && count mismatch.Output "differs across ranks" = 1
         && count mismatch.Output "rank 1: groups=(8,1)(16,2) offsets=Paper causal=True" = 1
         && count mismatch.Output "rank 0: groups=(8,1)(16,2) offsets=Paper causal=False" = 1)
        mismatch

    let stall =
        mpirun 2 "stall" [ "LONGNET_MPI_TIMEOUT", "3" ] (TimeSpan.FromSeconds 120.0)

    report
        "fault: a rank that stops calling collectives is caught by the timeout, which names the call"
        (quick stall
         && count stall.Output "rank 0 of 2: MPI_Barrier did not complete within 3 s (LONGNET_MPI_TIMEOUT)" = 1)
        stall

    let death = mpirun 2 "death" [] (TimeSpan.FromSeconds 120.0)
    report "fault: a rank killed by a signal ends the whole run without a hang" (quick death) death

    for name, ok, run in trainCommandChecks () do
        report name ok run

    printfn "MPI: %d passed, %d failed" passed failed
    failed
