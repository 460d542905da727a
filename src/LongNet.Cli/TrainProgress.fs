/// The console face of the library's training loop (`LongNet.Training.TrainLoop`), shared by
/// `longnet train` and `longnet demo`: a Spectre.Console progress bar (loss, tokens/s) on a terminal or
/// a log line every `logEvery` steps otherwise, and Ctrl+C that stops after the current step and saves.
/// Only rank 0 of a split run prints.
module LongNet.Cli.TrainProgress

open System
open System.Diagnostics
open Spectre.Console
open LongNet.Text
open LongNet.Training

let private human (tokensPerSecond: float) =
    if tokensPerSecond >= 1000.0 then
        $"{tokensPerSecond / 1000.0:F1}k"
    else
        $"{tokensPerSecond:F0}"

let private duration (seconds: float) =
    let t = TimeSpan.FromSeconds(max 0.0 seconds)

    if t.TotalHours >= 1.0 then
        $"{int t.TotalHours}h{t.Minutes:D2}m"
    else
        $"{t.Minutes}m{t.Seconds:D2}s"

/// Runs the library loop with a progress display; a failing step raises `CommandError`.
let run (session: TrainSession) (corpus: Corpus) (options: TrainLoopOptions) : TrainLoopOutcome =
    let leader = session.Communicator |> Option.forall (fun c -> c.Rank = 0)
    let mutable interrupted = false

    let onCancel =
        ConsoleCancelEventHandler(fun _ e ->
            e.Cancel <- true
            interrupted <- true)

    let recent = Collections.Generic.Queue<StepReport>()
    let watch = Stopwatch.StartNew()
    let startStep = session.Step

    let remember (r: StepReport) =
        recent.Enqueue r

        if recent.Count > 10 then
            recent.Dequeue() |> ignore

    let recentRate () =
        let seconds = recent |> Seq.sumBy _.StepSeconds

        if seconds > 0.0 then
            float (recent |> Seq.sumBy _.Tokens) / seconds
        else
            0.0

    let describeLine (r: StepReport) =
        let left =
            float (session.Config.Train.Steps - r.Step)
            * (watch.Elapsed.TotalSeconds / float (r.Step - startStep))

        $"step {r.Step}/{session.Config.Train.Steps}  loss {r.Loss:F3}  lr {r.LearningRate:E1}  {human (recentRate ())} tok/s  eta {duration left}"

    let loop (observe: StepReport -> unit) =
        LongNet.Training.TrainLoop.run session corpus options observe (fun () -> interrupted)

    Console.CancelKeyPress.AddHandler onCancel

    let outcome =
        try
            if leader && AnsiConsole.Profile.Capabilities.Interactive then
                let mutable result = Unchecked.defaultof<_>

                AnsiConsole
                    .Progress()
                    // refreshed by this thread after each step: a render thread would allocate, and a
                    // garbage collection it triggers during a native call can free TorchSharp's
                    // temporary Scalars while libtorch still reads them
                    .AutoRefresh(false)
                    .AutoClear(false)
                    .HideCompleted(false)
                    .Columns(
                        [|
                            TaskDescriptionColumn() :> ProgressColumn
                            ProgressBarColumn()
                            PercentageColumn()
                            RemainingTimeColumn()
                            SpinnerColumn()
                        |]
                    )
                    .Start(fun ctx ->
                        let task = ctx.AddTask("starting", true, float session.Config.Train.Steps)
                        task.Value <- float session.Step

                        result <-
                            loop (fun r ->
                                remember r
                                task.MaxValue <- float session.Config.Train.Steps
                                task.Value <- float r.Step

                                task.Description <-
                                    Markup.Escape
                                        $"step {r.Step}/{session.Config.Train.Steps}  loss {r.Loss:F3}  {human (recentRate ())} tok/s"

                                ctx.Refresh())

                        task.StopTask())

                result
            else
                loop (fun r ->
                    remember r

                    if
                        leader
                        && (r.Step % session.Config.Train.LogEvery = 0
                            || r.Step = startStep + 1
                            || session.Finished)
                    then
                        Console.WriteLine(describeLine r))
        finally
            Console.CancelKeyPress.RemoveHandler onCancel

    match outcome with
    | Ok o -> o
    | Error e -> Errors.fail e
