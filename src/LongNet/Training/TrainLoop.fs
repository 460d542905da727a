/// A training run's loop: steps until the configured count, a wall-clock budget or a stop request, with
/// a CSV log of every step, periodic validation and atomic checkpoints in a run folder. The caller
/// observes each step (a progress display) and may ask it to stop (Ctrl+C). When the session's
/// sequences are split over ranks, every rank runs the steps and validations (collectives) and only
/// rank 0 writes files.
namespace LongNet.Training

open System
open System.Diagnostics
open System.IO
open System.Text
open TorchSharp
open LongNet
open LongNet.Distributed
open LongNet.Text

/// How the loop runs.
type TrainLoopOptions =
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
type TrainLoopOutcome =
    {
        /// Reports of the steps run in this invocation.
        Reports: StepReport list
        /// (step, validation loss) measured in this invocation.
        Validation: (int * float) list
        /// Stopped because the caller asked.
        Interrupted: bool
        /// Stopped by the time budget before the configured steps.
        OutOfTime: bool
        /// Wall time of the loop, in seconds.
        Seconds: float
    }

/// The training loop and its run-folder files.
module TrainLoop =
    /// The checkpoint file of a run folder.
    let checkpointPath (outDir: string) = Path.Combine(outDir, "checkpoint.ckpt")

    /// The per-step CSV log of a run folder.
    let logPath (outDir: string) = Path.Combine(outDir, "train_log.csv")

    /// The validation CSV log of a run folder.
    let validationLogPath (outDir: string) =
        Path.Combine(outDir, "validation_log.csv")

    /// The CRD NTK draw log of a run folder (one row per micro-batch; CRD NTK runs only).
    let crdLogPath (outDir: string) = Path.Combine(outDir, "crd_log.csv")

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

    /// Runs `session` on `corpus` until its configured steps are done, the budget is spent or
    /// `stopRequested ()` (polled after every step) is true; logs to `options.OutDir` and saves
    /// `checkpoint.ckpt` every `checkpointEvery` steps and at the end. `observe` sees every step's report
    /// on the training thread. A failing step (NaN loss) returns its error without saving over the last
    /// good checkpoint.
    let run
        (session: TrainSession)
        (corpus: Corpus)
        (options: TrainLoopOptions)
        (observe: StepReport -> unit)
        (stopRequested: unit -> bool)
        : Result<TrainLoopOutcome, string> =
        if session.Communicator.IsSome && options.TimeBudget.IsSome then
            // wall time differs across ranks; they would stop at different steps
            invalidArg "options" "a time budget cannot be used when the sequences are split over ranks."

        // Only rank 0 of a split run writes files.
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
        let startStep = session.Step

        let save () =
            if leader then
                session.Save(checkpointPath options.OutDir)

        let validate () =
            match session.ValidationLoss corpus.Validation with
            | Ok loss ->
                validation.Add((session.Step, loss))

                if leader then
                    File.AppendAllText(validationLog, $"{session.Step},{invariant loss},{invariant (exp loss)}\n")
            | Error _ -> ()

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

        let overBudget () =
            match options.TimeBudget with
            | Some b when watch.Elapsed >= b -> true
            | _ -> false

        let mutable failure = None
        let mutable interrupted = false
        let mutable outOfTime = false

        while not session.Finished && failure.IsNone && not interrupted && not outOfTime do
            match session.TrainStep corpus.Train with
            | Error e -> failure <- Some e
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
                    validate ()
                    save ()

                observe r
                interrupted <- anyRank (stopRequested ())
                outOfTime <- not interrupted && overBudget () && not session.Finished

        match failure with
        | Some e -> Error e
        | None ->
            if session.Step > startStep then
                validate ()
                save ()

            Ok
                {
                    Reports = List.ofSeq reports
                    Validation = List.ofSeq validation
                    Interrupted = interrupted
                    OutOfTime = outOfTime
                    Seconds = watch.Elapsed.TotalSeconds
                }
