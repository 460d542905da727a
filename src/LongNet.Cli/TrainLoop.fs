/// The training loop shared by `longnet train` and `longnet demo`: steps with a Spectre.Console
/// progress bar (loss, tokens/s, ETA), a CSV log, periodic validation and atomic checkpoints, an
/// optional wall-clock budget, and Ctrl+C that stops after the current step and saves.
/// When the session's sequences are split over ranks, every rank runs the steps and validations
/// (collectives) and only rank 0 prints, logs and saves.
module LongNet.Cli.TrainLoop

open System
open System.Diagnostics
open System.IO
open System.Text
open Spectre.Console
open TorchSharp
open LongNet
open LongNet.Distributed
open LongNet.Text
open LongNet.Training

/// The checkpoint file of a run folder.
let checkpointPath (outDir: string) = Path.Combine(outDir, "checkpoint.ckpt")

/// The per-step CSV log of a run folder.
let logPath (outDir: string) = Path.Combine(outDir, "train_log.csv")

/// The validation CSV log of a run folder.
let validationLogPath (outDir: string) =
    Path.Combine(outDir, "validation_log.csv")

/// The CRD NTK draw log of a run folder (one row per micro-batch; CRD NTK runs only).
let crdLogPath (outDir: string) = Path.Combine(outDir, "crd_log.csv")

/// How the loop runs.
type Options =
    {
        /// The run folder (checkpoint, logs).
        OutDir: string
        /// Stop (and save) once this much wall time has passed in this invocation.
        TimeBudget: TimeSpan option
        /// With a budget: after the first steps, shrink the run's total steps to what fits in it
        /// (only while in warm-up, so the schedule stays reproducible).
        FitStepsToBudget: bool
    }

/// What the loop did.
type Outcome =
    {
        /// Reports of the steps run in this invocation.
        Reports: StepReport list
        /// (step, validation loss) measured in this invocation.
        Validation: (int * float) list
        /// Stopped by Ctrl+C.
        Interrupted: bool
        /// Stopped by the time budget before the configured steps.
        OutOfTime: bool
    }

let private csvHeader =
    "step,loss,learning_rate,grad_norm,tokens_per_second,elapsed_seconds,tokens_seen"

let private invariant (x: float) =
    x.ToString("R", Globalization.CultureInfo.InvariantCulture)

/// Keeps the log rows of steps ≤ `step` (a resumed run rewrites the steps after its checkpoint).
let private trimLog (path: string) (header: string) (step: int) =
    let kept =
        if File.Exists path then
            File.ReadAllLines path
            |> Array.skip 1
            |> Array.filter (fun line ->
                match Int32.TryParse(line.Split(',').[0]) with
                | true, s -> s <= step
                | _ -> false)
        else
            [||]

    AtomicFile.write path (fun stream ->
        use writer = new StreamWriter(stream, UTF8Encoding false, leaveOpen = true)
        writer.WriteLine header

        for line in kept do
            writer.WriteLine line)

/// Reads a CSV log of this module as (step, values) rows.
let readLog (path: string) : (int * float[])[] =
    if not (File.Exists path) then
        [||]
    else
        File.ReadAllLines path
        |> Array.skip 1
        |> Array.choose (fun line ->
            let cells = line.Split ','

            match Int32.TryParse cells.[0] with
            | true, step ->
                Some(
                    step,
                    cells.[1..]
                    |> Array.map (fun c -> Double.Parse(c, Globalization.CultureInfo.InvariantCulture))
                )
            | _ -> None)

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

/// Runs `session` on `corpus` until its configured steps are done (or the budget or Ctrl+C stops it),
/// logging to `options.OutDir` and saving `checkpoint.ckpt` every `checkpointEvery` steps and at the end.
/// A failing step (NaN loss) raises `CommandError` without saving over the last good checkpoint.
let run (session: TrainSession) (corpus: Corpus) (options: Options) : Outcome =
    if session.Communicator.IsSome && options.TimeBudget.IsSome then
        // wall time differs across ranks; they would stop at different steps
        invalidArg "options" "a time budget cannot be used when the sequences are split over ranks."

    // Only rank 0 of a split run writes files and prints.
    let leader = session.Communicator |> Option.forall (fun c -> c.Rank = 0)

    // Whether any rank wants to stop (every rank must stop after the same step).
    let anyRank (flag: bool) =
        match session.Communicator with
        | None -> flag
        | Some comm ->
            use scope = torch.NewDisposeScope()

            (Collectives.allReduceSum comm (torch.tensor [| (if flag then 1L else 0L) |])).[0].item<int64>() > 0L

    let log = logPath options.OutDir
    let validationLog = validationLogPath options.OutDir

    let crdLog = crdLogPath options.OutDir

    if leader then
        Directory.CreateDirectory options.OutDir |> ignore
        trimLog log csvHeader session.Step
        trimLog validationLog "step,validation_loss,validation_perplexity" session.Step

        match session.Config.Model.PositionScaling with
        | LongNet.Modules.CrdNtk _ -> trimLog crdLog "step,micro_batch,scale,offset,length,split,gap" session.Step
        | _ -> ()

    let reports = ResizeArray<StepReport>()
    let validation = ResizeArray<int * float>()
    let watch = Stopwatch.StartNew()
    let mutable interrupted = false
    let mutable outOfTime = false
    let startStep = session.Step

    let onCancel =
        ConsoleCancelEventHandler(fun _ e ->
            e.Cancel <- true
            interrupted <- true)

    Console.CancelKeyPress.AddHandler onCancel

    let save () =
        if leader then
            session.Save(checkpointPath options.OutDir)

    let validate () =
        match session.ValidationLoss corpus.Validation with
        | Ok loss ->
            validation.Add((session.Step, loss))

            if leader then
                File.AppendAllText(validationLog, $"{session.Step},{invariant loss},{invariant (exp loss)}\n")

            Some loss
        | Error _ -> None

    let recentRate () =
        let recent = reports |> Seq.skip (max 0 (reports.Count - 10)) |> Array.ofSeq
        let seconds = recent |> Array.sumBy _.StepSeconds

        if seconds > 0.0 then
            float (recent |> Array.sumBy _.Tokens) / seconds
        else
            0.0

    let configuredSteps = session.Config.Train.Steps

    let fitToBudget () =
        match options.TimeBudget with
        | Some budget when
            options.FitStepsToBudget
            && session.Step < session.Config.Train.WarmupSteps
            && (reports.Count = 4 || session.Step = session.Config.Train.WarmupSteps - 1)
            ->
            // after a few steps, and again at the end of warm-up (the last chance to change the total
            // reproducibly), from the latest steps' pace; the first step pays one-time costs and is left out
            let recent = reports |> Seq.skip (max 1 (reports.Count - 10)) |> Array.ofSeq
            let perStep = (recent |> Array.averageBy _.StepSeconds) * 1.1
            let left = budget.TotalSeconds - watch.Elapsed.TotalSeconds
            let affordable = session.Step + int (left / perStep)
            let total = min configuredSteps affordable

            if total <> session.Config.Train.Steps then
                session.SetTotalSteps total
        | _ -> ()

    let checkpointEvery = session.Config.Train.CheckpointEvery

    let step (describe: StepReport -> unit) =
        match session.TrainStep corpus.Train with
        | Error e -> Errors.fail e
        | Ok r ->
            reports.Add r

            if leader then
                File.AppendAllText(
                    log,
                    $"{r.Step},{invariant r.Loss},{invariant r.LearningRate},{invariant r.GradNorm},{invariant (float r.Tokens / r.StepSeconds)},{invariant r.ElapsedSeconds},{r.TokensSeen}\n"
                )

            if not r.Draws.IsEmpty then
                let rows =
                    r.Draws
                    |> List.mapi (fun i d ->
                        $"{r.Step},{i},{invariant d.Scale},{d.Offset},{d.Length},{d.Split},{d.Gap}\n")

                File.AppendAllText(crdLog, String.Join("", rows))

            fitToBudget ()

            if checkpointEvery > 0 && r.Step % checkpointEvery = 0 && not session.Finished then
                validate () |> ignore
                save ()

            describe r

    let overBudget () =
        match options.TimeBudget with
        | Some b when watch.Elapsed >= b -> true
        | _ -> false

    let describeLine (r: StepReport) =
        let rate = recentRate ()

        let left =
            float (session.Config.Train.Steps - r.Step)
            * (watch.Elapsed.TotalSeconds / float (r.Step - startStep))

        $"step {r.Step}/{session.Config.Train.Steps}  loss {r.Loss:F3}  lr {r.LearningRate:E1}  {human rate} tok/s  eta {duration left}"

    try
        if leader && AnsiConsole.Profile.Capabilities.Interactive then
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

                    while not session.Finished && not interrupted && not outOfTime do
                        step (fun r ->
                            task.MaxValue <- float session.Config.Train.Steps
                            task.Value <- float r.Step

                            task.Description <-
                                Markup.Escape
                                    $"step {r.Step}/{session.Config.Train.Steps}  loss {r.Loss:F3}  {human (recentRate ())} tok/s"

                            ctx.Refresh())

                        interrupted <- anyRank interrupted
                        outOfTime <- overBudget () && not session.Finished

                    task.StopTask())
        else
            while not session.Finished && not interrupted && not outOfTime do
                step (fun r ->
                    if
                        leader
                        && (r.Step % session.Config.Train.LogEvery = 0
                            || r.Step = startStep + 1
                            || session.Finished)
                    then
                        Console.WriteLine(describeLine r))

                interrupted <- anyRank interrupted
                outOfTime <- overBudget () && not session.Finished
    finally
        Console.CancelKeyPress.RemoveHandler onCancel

    if session.Step > startStep then
        validate () |> ignore
        save ()

    {
        Reports = List.ofSeq reports
        Validation = List.ofSeq validation
        Interrupted = interrupted
        OutOfTime = outOfTime
    }
