/// The suite driver (run without mpirun): launches `mpirun` for the checks on 2 and 4 ranks and for
/// each fault scenario, checks exit codes, messages and timing, and prints "MPI: N passed, M failed".
module LongNet.MpiTests.Driver

open System
open System.Diagnostics
open System.Reflection
open System.Text.RegularExpressions

/// What one mpirun launch did.
type Run =
    {
        ExitCode: int
        Output: string
        Elapsed: TimeSpan
        TimedOut: bool
    }

/// Launches `mpirun --allow-run-as-root --oversubscribe -np ranks dotnet <this dll> mode`, exporting
/// `environment` to every rank, and kills it after `limit`.
let mpirun (ranks: int) (mode: string) (environment: (string * string) list) (limit: TimeSpan) : Run =
    let dll = Assembly.GetEntryAssembly().Location
    let info = ProcessStartInfo("mpirun")

    for a in [ "--allow-run-as-root"; "--oversubscribe"; "-np"; string ranks ] do
        info.ArgumentList.Add a

    for name, value in environment do
        info.ArgumentList.Add "-x"
        info.ArgumentList.Add $"{name}={value}"

    for a in [ "dotnet"; dll; mode ] do
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

let private count (text: string) (pattern: string) =
    Regex.Matches(text, Regex.Escape pattern).Count

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

    printfn "MPI: %d passed, %d failed" passed failed
    failed
