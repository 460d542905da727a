/// `longnet train`: trains a LongNet language model on a corpus, with a progress bar, logs and
/// atomic checkpoints in `--out`; `--resume` continues the run stored there with the same losses an
/// uninterrupted run would have had. `--ranks P` (under `mpirun -np P`) splits every training sequence
/// over P processes (sequence parallel); rank 0 prints, logs and saves.
module LongNet.Cli.Train

open System
open System.IO
open LongNet
open LongNet.Distributed
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Errors

/// Usage text.
let help =
    """longnet train (--corpus PATH | --task passkey) (--config PATH | --preset NAME | --init CKPT | --init-hf DIR)
              --out DIR [--resume]
              [--steps N] [--seq-len N] [--seed S] [--init CHECKPOINT] [--ranks P]
              [--attention dilated|dense|select-merge] [--scaling none|pi|ntk|dynamic-ntk|yarn|crd-ntk] [...]

Trains a LongNet language model (a Transformer whose attention is dilated attention by default).

  --corpus PATH     a UTF-8 text file, or a folder of them (read recursively)
  --task NAME       text (default: windows of --corpus) or passkey (generated passkey prompts with their
                    answers, at a random depth; no corpus needed) — teaches a model passkey retrieval
  --config PATH     a JSON run configuration: { "preset", "model", "train", "tokenizer" } (all optional)
  --preset NAME     a built-in configuration instead of --config: tiny, demo, small, longctx
  --out DIR         the run folder: checkpoint.ckpt, config.json, train_log.csv, validation_log.csv
  --resume          continue the run in DIR (same corpus; --config/--preset, if given, must match it)
  --steps N         total optimizer steps of the run (overrides the configuration; may extend a resumed run)
  --seq-len N       training sequence length (overrides the configuration; not when resuming)
  --seed S          seed of initialisation, batches, dropout and CRD draws (not when resuming)
  --init CHECKPOINT start from that checkpoint's weights (fine-tuning, e.g. with --scaling crd-ntk); the
                    model must have the same shape; without --config/--preset the run takes the
                    checkpoint's model, tokenizer and training settings (e.g. a model from longnet import)
  --init-hf DIR     start from a Hugging Face Llama/Mistral folder: its model, weights and tokenizer.model
                    (as longnet import, without writing a checkpoint), the library's training defaults
  --lora-rank R     low-rank adapters (LoRA) of rank R on the attention projections: only the adapters
                    and the norms train (the rest is frozen, with no optimizer state); export merges them
  --lora-alpha A    the adapters' α: updates are scaled by α / R (default 2R)
  --lora-targets L  the adapted projections, a comma list of q, k, v, o (default q,v)
  --ranks P         sequence parallel: split every training sequence over P processes started by mpirun
                    (each holds a contiguous slice; attention exchanges dilated keys/values over MPI;
                    gradients are summed so every rank takes the same step; rank 0 prints and saves):
                      mpirun --allow-run-as-root --oversubscribe -np P longnet train --ranks P …
                    needs Open MPI (apt-get install openmpi-bin libopenmpi-dev); dilated attention,
                    plain RoPE and the text task only; see docs/distributed.md
"""
    + ModelOptions.help
    + """

With --scaling crd-ntk every micro-batch draws (seeded by --seed, the step and its index) an NTK scale from
a ceiling that grows over each cycle and restarts, a random length and randomly truncated positions with a
gap (see docs/casm.md); the draws are logged to crd_log.csv. At inference crd-ntk is dynamic NTK.

Ctrl+C stops after the current step and saves (under mpirun, Ctrl+C ends every rank; the last saved
checkpoint stays). Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    ModelOptions.valueOptions
    @ [
        "--task"
        "--init"
        "--init-hf"
        "--corpus"
        "--config"
        "--preset"
        "--out"
        "--steps"
        "--seq-len"
        "--seed"
        "--ranks"
        "--lora-rank"
        "--lora-alpha"
        "--lora-targets"
    ]

let private switches = [ "--resume"; "--help" ] @ ModelOptions.switches

/// Reads the run configuration named by --config or --preset (or None when neither is given).
let configFrom (p: Args.Parsed) : RunConfig option =
    match Args.optional p "--config", Args.optional p "--preset" with
    | Some _, Some _ -> raise (Args.UsageError "give either --config or --preset, not both.")
    | Some path, None -> Some(RunConfig.load path |> orFail)
    | None, Some name ->
        match RunConfig.preset name with
        | Ok c -> Some c
        | Error e -> raise (Args.UsageError e)
    | None, None when not (Args.has p "--resume") ->
        // fine-tuning a checkpoint or a Hugging Face folder as it is: its model and tokenizer (and a
        // checkpoint's training settings; the library's defaults for a folder)
        match Args.optional p "--init", Args.optional p "--init-hf" with
        | Some _, Some _ -> raise (Args.UsageError "give --init or --init-hf, not both.")
        | Some path, None ->
            match Checkpoint.readHeader path with
            | Ok h ->
                Some
                    {
                        Model = h.Model
                        Train = h.Train
                        Tokenizer = FromCheckpoint
                    }
            | Error e -> raise (Args.UsageError $"--init: {e}")
        | None, Some folder ->
            let pretrained =
                try
                    LongNet.Interop.HuggingFace.readConfig folder
                with
                | :? IOException
                | :? InvalidDataException as e -> raise (Args.UsageError $"--init-hf: {e.Message}")

            Some
                {
                    Model = pretrained.Model
                    Train = TrainConfig.defaults
                    Tokenizer = FromCheckpoint
                }
        | None, None -> None
    | None, None -> None

/// The training task named by --task (None when absent).
let private taskFrom (p: Args.Parsed) : TrainTask option =
    match Args.optional p "--task" with
    | None -> None
    | Some "text" -> Some TextWindows
    | Some "passkey" -> Some PasskeySamples
    | Some other -> raise (Args.UsageError $"--task must be text or passkey, got '{other}'.")

/// Applies --lora-rank, --lora-alpha and --lora-targets (adapters only when --lora-rank is given).
let private loraOverride (p: Args.Parsed) (m: ModelConfig) : ModelConfig =
    match Args.optional p "--lora-rank" with
    | None ->
        for option in [ "--lora-alpha"; "--lora-targets" ] do
            if (Args.optional p option).IsSome then
                raise (Args.UsageError $"{option} needs --lora-rank (the adapters' rank).")

        m
    | Some text ->
        let rank = Args.toInt "--lora-rank" 1L (int64 m.EmbedDim) text |> int

        let alpha =
            Args.optional p "--lora-alpha"
            |> Option.map (Args.toFloat "--lora-alpha" true)
            |> Option.defaultValue (2.0 * float rank)

        let targets =
            match Args.optional p "--lora-targets" with
            | None -> Lora.defaults.Targets
            | Some list ->
                [
                    for name in list.Split ',' do
                        match Lora.tryParseTarget name with
                        | Some t -> t
                        | None ->
                            raise (Args.UsageError $"--lora-targets must list q, k, v or o (e.g. q,v), got '{list}'.")
                ]

        let lora =
            match
                Lora.validate
                    m.EmbedDim
                    {
                        Rank = rank
                        Alpha = alpha
                        Targets = targets
                    }
            with
            | Ok l -> l
            | Error e -> raise (Args.UsageError $"--lora-{e.Parameter.Substring 5}: {e.Message}")

        { m with Lora = Some lora }

/// Applies --steps, --seq-len, --seed, --task and the attention and scaling options to a configuration.
/// The tokenizer of a run: for a run without a configuration, the one of the checkpoint (`--init`) or
/// Hugging Face folder (`--init-hf`) it starts from.
let private runTokenizer (p: Args.Parsed) (c: RunConfig) : ITokenizer =
    match c.Tokenizer, Args.optional p "--init-hf" with
    | FromCheckpoint, Some folder ->
        LongNet.Interop.HuggingFace.readTokenizer folder c.Model.VocabSize
        |> orFail
        |> fst
        |> Tokenizer.ofSpec
        |> orFail
    | FromCheckpoint, None ->
        (Checkpoint.readHeader (Args.required p "--init") |> orFail).Tokenizer
        |> Tokenizer.ofSpec
        |> orFail
    | _ -> RunConfig.tokenizer c |> orFail

let private overrides (p: Args.Parsed) (c: RunConfig) : RunConfig =
    let steps =
        Args.optional p "--steps"
        |> Option.map (Args.toInt "--steps" 1L 100_000_000L >> int)

    let seqLen =
        Args.optional p "--seq-len"
        |> Option.map (Args.toInt "--seq-len" 1L 100_000_000L >> int)

    let seed =
        Args.optional p "--seed" |> Option.map (Args.toInt "--seed" 0L Int64.MaxValue)

    let seqLen = defaultArg seqLen c.Train.SeqLen
    let task = defaultArg (taskFrom p) c.Train.Task

    if task = PasskeySamples && c.Train.CurriculumStartLength > 0 then
        raise (
            Args.UsageError
                "--task passkey: this configuration has a sequence-length curriculum (curriculumStartLength), which applies to text windows only; use another --preset or a --config without one."
        )

    let shortestSample =
        match task with
        | PasskeySamples -> runTokenizer p c |> Passkey.minimumSampleLength
        | TextWindows -> 1

    { c with
        Model = ModelOptions.apply p seqLen shortestSample c.Model |> loraOverride p
        Train =
            { c.Train with
                Steps = defaultArg steps c.Train.Steps
                SeqLen = seqLen
                Seed = defaultArg seed c.Train.Seed
                Task = task
            }
    }

/// Prints what a run is about to do.
let describe (session: TrainSession) (corpus: Corpus) =
    let c = session.Config
    let m = c.Model

    let groups = Groups.describe m.Groups

    printfn
        "model: %d layers, embed %d, %d heads, %s %d, groups %s, %s; %s parameters"
        m.Layers
        m.EmbedDim
        m.Heads
        (FeedForwardKind.name m.FeedForward)
        m.FeedForwardDim
        groups
        (match m.Position with
         | Rope _ -> "RoPE, " + ModelOptions.describe m
         | XPos _ -> "xPos, " + ModelOptions.describe m
         | NoPosition -> "no positions, " + ModelOptions.describe m
         | DistanceBiased b ->
             $"{DistanceBias.formName b.Form} distance bias (slopes {b.MaxSlope:G4} … {b.MinSlope:G4}), "
             + ModelOptions.describe m)
        (session.Model.ParameterCount.ToString("N0"))

    m.Lora
    |> Option.iter (fun l ->
        let trained =
            session.Model.named_parameters ()
            |> Seq.sumBy (fun struct (name, p) ->
                if LongNetModel.TrainedWithAdapters name then
                    p.numel ()
                else
                    0L)

        let targets = String.Join(",", l.Targets |> List.map Lora.targetName)

        printfn
            "LoRA: rank %d, alpha %g on %s; %s parameters train (adapters and norms), the rest is frozen"
            l.Rank
            l.Alpha
            targets
            (trained.ToString("N0")))

    printfn
        "data: %s — %s training and %s validation tokens (%s)"
        corpus.Description
        (corpus.Train.Length.ToString("N0"))
        (corpus.Validation.Length.ToString("N0"))
        session.Tokenizer.Name

    printfn
        "training: %d steps × %d × %d tokens (accumulation %d), lr %g, warm-up %d, %s, seed %d"
        c.Train.Steps
        c.Train.BatchSize
        c.Train.SeqLen
        c.Train.Accumulation
        c.Train.LearningRate
        c.Train.WarmupSteps
        (Precision.name c.Train.Precision)
        c.Train.Seed

/// Checks that a resumed run's requested configuration matches the checkpoint's.
let private checkResumable (p: Args.Parsed) (requested: RunConfig option) (header: CheckpointHeader) =
    if
        Args.optional p "--seq-len"
        |> Option.exists (fun s -> Args.toInt "--seq-len" 1L Int64.MaxValue s <> int64 header.Train.SeqLen)
    then
        fail
            $"--seq-len cannot change when resuming (the run uses {header.Train.SeqLen}); start a new run in another --out."

    if
        Args.optional p "--seed"
        |> Option.exists (fun s -> Args.toInt "--seed" 0L Int64.MaxValue s <> header.Train.Seed)
    then
        fail $"--seed cannot change when resuming (the run uses {header.Train.Seed}); start a new run in another --out."

    match requested with
    | None -> ()
    | Some c ->
        match RunConfig.resumeDifferences c header.Model header.Train with
        | [] -> ()
        | diffs ->
            let list = String.Join("; ", diffs)

            fail
                $"the configuration does not match the checkpoint's (given vs stored: {list}); resume without --config/--preset, or start a new run in another --out."

/// The environment variables mpirun sets in every process it starts: this rank and the number of ranks.
let private mpiRankVariable, private mpiSizeVariable =
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"

let private environmentInt (name: string) =
    match Int32.TryParse(Environment.GetEnvironmentVariable name) with
    | true, value -> Some value
    | _ -> None

/// Checks that this process is one of `ranks` processes started by mpirun, or raises a usage error
/// saying how to launch.
let private checkLaunch (ranks: int) =
    let launch =
        $"start it as mpirun --allow-run-as-root --oversubscribe -np {ranks} longnet train --ranks {ranks} … (Open MPI: apt-get install openmpi-bin libopenmpi-dev)"

    match environmentInt mpiSizeVariable with
    | None -> raise (Args.UsageError $"--ranks {ranks} needs {ranks} processes started by mpirun; {launch}.")
    | Some size when size <> ranks ->
        raise (Args.UsageError $"--ranks {ranks} but mpirun started {size} processes; {launch}.")
    | Some _ -> ()

/// Trains on this process (`split` = None) or on this rank of a split run.
let private train (p: Args.Parsed) (split: ICommunicator option) : int =
    let outDir = Args.required p "--out"
    let requested = configFrom p
    let resume = Args.has p "--resume"
    let leader = split |> Option.forall (fun c -> c.Rank = 0)
    Native.ensureLoaded () |> ignore
    let checkpoint = TrainLoop.checkpointPath outDir
    let source = lazy (Corpus.readSource (Args.required p "--corpus") |> orFail)

    let session =
        if resume then
            let loaded = Checkpoint.load checkpoint |> orFail
            checkResumable p requested loaded.Header

            let steps =
                Args.optional p "--steps"
                |> Option.map (Args.toInt "--steps" 1L 100_000_000L >> int)

            let session =
                match split with
                | None -> TrainSession.Resume(loaded, steps)
                | Some comm -> TrainSession.Resume(loaded, steps, comm)

            for KeyValue(_, t) in loaded.Tensors do
                t.Dispose()

            let session = orFail session

            if leader then
                printfn "resuming %s at step %d of %d" checkpoint session.Step session.Config.Train.Steps

            session
        else
            if File.Exists checkpoint then
                fail $"'{outDir}' already holds a checkpoint; pass --resume to continue it, or choose another --out."

            let config = overrides p requested.Value

            let tokenizer =
                match config.Tokenizer, config.Train.Task with
                | LearnedBpe _, TextWindows -> RunConfig.tokenizerFor config source.Value |> orFail
                | _ -> runTokenizer p config

            let session =
                match split with
                | None -> TrainSession.Create(config, tokenizer)
                | Some comm -> TrainSession.Create(config, tokenizer, comm)
                |> orFail

            match Args.optional p "--init-hf" with
            | None -> ()
            | Some folder ->
                // the folder's weights, read into a model of the folder's own shape, then copied
                let loaded =
                    LongNet.Interop.HuggingFace.load folder id
                    |> Result.bind (fun (model, _) ->
                        use model = model
                        session.LoadWeights(Map.ofList (Checkpoint.weights model)))

                match loaded with
                | Ok() ->
                    if leader then
                        printfn "starting from the weights of %s" folder
                | Error e ->
                    (session :> IDisposable).Dispose()
                    fail $"--init-hf: {e}"

            match Args.optional p "--init" with
            | None -> ()
            | Some path ->
                match Checkpoint.withTensors path session.LoadWeights |> orFail with
                | Ok() ->
                    if leader then
                        printfn "starting from the weights of %s" path
                | Error e ->
                    (session :> IDisposable).Dispose()
                    fail $"--init: checkpoint '{path}' does not fit this model ({e}); give one with the same shape."

            session

    use session = session

    let corpus =
        match session.Config.Train.Task with
        | PasskeySamples -> Passkey.corpus session.Tokenizer session.Config.Train.SeqLen
        | TextWindows -> Loading.corpusOf session.Tokenizer source.Value

    if leader then
        Directory.CreateDirectory outDir |> ignore

        if not resume then
            Loading.writeConfig outDir session.Config

        describe session corpus

        split
        |> Option.iter (fun comm ->
            printfn
                "sequence parallel: %d ranks, each holding %d of every %d-token sequence"
                comm.Size
                (int (snd (ShardPlan.slice (int64 session.Config.Train.SeqLen) comm.Size 0)))
                session.Config.Train.SeqLen)

    let outcome =
        TrainProgress.run
            session
            corpus
            {
                OutDir = outDir
                TimeBudget = None
                FitStepsToBudget = false
            }

    match List.tryLast outcome.Reports, List.tryLast outcome.Validation with
    | _ when not leader -> ()
    | Some last, validation ->
        let rate =
            float (outcome.Reports |> List.sumBy _.Tokens)
            / (outcome.Reports |> List.sumBy _.StepSeconds)

        printfn
            "%s at step %d: loss %.4f%s, %.0f tokens/s; checkpoint %s"
            (if outcome.Interrupted then "stopped" else "done")
            last.Step
            last.Loss
            (match validation with
             | Some(_, v) -> $", validation loss {v:F4} (perplexity {exp v:F2})"
             | None -> "")
            rate
            checkpoint
    | None, _ -> printfn "no steps run; checkpoint %s unchanged" checkpoint

    0

/// Runs `longnet train`.
let run (argv: string list) : int =
    let ranks =
        // parsed again, with errors, below; here only to keep ranks > 0 quiet before MPI starts
        argv |> List.contains "--ranks"

    let rank = environmentInt mpiRankVariable |> Option.defaultValue 0
    let errors = Console.Error

    if ranks && rank > 0 then
        // every rank checks the command line identically; rank 0 reports
        Console.SetOut IO.TextWriter.Null
        Console.SetError IO.TextWriter.Null

    Errors.guard "train" (fun () ->
        let p = Args.parse valueOptions switches argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let resume = Args.has p "--resume"

            let modelOptionGiven =
                ModelOptions.valueOptions |> List.exists (fun o -> (Args.optional p o).IsSome)
                || ModelOptions.switches |> List.exists (Args.has p)

            if
                resume
                && (modelOptionGiven
                    || (Args.optional p "--task").IsSome
                    || (Args.optional p "--init").IsSome
                    || (Args.optional p "--init-hf").IsSome
                    || (Args.optional p "--lora-rank").IsSome)
            then
                raise (
                    Args.UsageError
                        "--task, --init, --init-hf, --lora-rank and the attention and scaling options cannot change when resuming; start a new run in another --out."
                )

            Args.required p "--out" |> ignore
            let requested = configFrom p

            if not resume && requested.IsNone then
                raise (
                    Args.UsageError
                        "give --config PATH or --preset NAME (tiny, demo, small, longctx), or --init CHECKPOINT / --init-hf DIR to fine-tune it as it is."
                )

            match Args.optional p "--ranks" |> Option.map (Args.toInt "--ranks" 1L 4096L >> int) with
            | None -> train p None
            | Some ranks ->
                checkLaunch ranks
                Console.SetError errors

                Mpi.runRank (fun mpi ->
                    try
                        train p (Some(mpi :> ICommunicator))
                    with
                    // the same on every rank (configuration, corpus, a NaN loss): reported once, by rank 0
                    | CommandError message
                    | Args.UsageError message -> raise (CollectiveException $"error: {message}")))
