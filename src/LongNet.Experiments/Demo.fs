/// The main job as library code: a LongNet language model trained at a long training length on the
/// .NET reference documentation, then measured as the LongNet paper measures context use — the perplexity of the
/// same held-out targets given more context, the loss by position, one forward over a million held-out
/// tokens — plus the exact KV cache and samples, written as report.json, report.md and plots.
module LongNet.Experiments.Demo

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text.Json.Nodes
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training

/// Where the demo's model starts.
type Start =
    /// From freshly initialised weights.
    | FromScratch
    /// From the weights of a checkpoint file (its tokenizer and model configuration too).
    | FromCheckpoint of path: string

/// The name of the base checkpoint embedded in this assembly (made by `makeBase`; see docs/model.md).
let baseResource = "LongNet.Experiments.demo-base.ckpt"

/// Writes the embedded base checkpoint to `path` (atomically); false when this build embeds none.
let extractBase (path: string) : bool =
    use stream = typeof<Start>.Assembly.GetManifestResourceStream baseResource

    if isNull stream then
        false
    else
        AtomicFile.ensureFolderOf path
        AtomicFile.write path (fun target -> stream.CopyTo target)
        true

/// How `makeBase` trains the base checkpoint.
type BaseSettings =
    {
        /// The checkpoint file to write (weights only, bfloat16).
        Path: string
        /// Optimizer steps (the whole schedule; no time budget, so the run is reproducible).
        Steps: int
        /// The corpus (`Corpus.referenceDocsName` or a text file or folder).
        Corpus: string
        /// The run configuration (its step count is replaced by `Steps`).
        Config: RunConfig
        /// A folder for the run's logs and full checkpoint (resumable).
        RunDir: string
    }

/// What the demo does.
type Settings =
    {
        /// The report folder (created if missing; the CLI also writes the extracted base checkpoint there).
        OutDir: string
        /// Training time budget in minutes (the step count is fitted to it during warm-up).
        Minutes: float
        /// The corpus (`Corpus.referenceDocsName` or a text file or folder).
        Corpus: string
        /// The run configuration (model, training, tokenizer).
        Config: RunConfig
        /// Where the model starts.
        Start: Start
        /// Context lengths for the perplexity of the same targets (ascending).
        Contexts: int list
        /// Targets scored per window.
        Targets: int
        /// Windows per context length and for the loss by position.
        Windows: int
        /// Tokens of the one long forward (0: skip it).
        LongTokens: int
        /// Positions decoded one at a time to check the KV cache against the full forward.
        CachePositions: int
    }

/// What the caller sees while the demo runs.
type Hooks =
    {
        /// A section heading.
        Heading: string -> unit
        /// A line of progress.
        Log: string -> unit
        /// Runs the training loop (a console progress bar, or `TrainLoop.run` with no display).
        Train: TrainSession -> Corpus -> TrainLoopOptions -> TrainLoopOutcome
    }

/// The demo's results (report.json).
type Report =
    {
        /// Training sequence length.
        SeqLen: int
        /// Optimizer steps taken in this run.
        Steps: int
        /// Training tokens of this run.
        Tokens: int64
        /// Training wall time of this run, in seconds.
        TrainSeconds: float
        /// Perplexity of the same targets by context length.
        Context: ContextPerplexity list
        /// Loss by position in windows of the training length.
        PositionLoss: PositionLoss list
        /// The long forward (None when skipped, with the reason in `Notes`).
        LongEval: LongForward option
        /// Largest |logit difference| between KV-cache decoding and the full forward.
        KvCacheMaxAbsDiff: float
        /// Things the reader should know (skipped parts, where the model started).
        Notes: string list
        /// Wall time of the whole demo, in seconds.
        SecondsTotal: float
    }

/// The report as JSON: `{ "train": {…}, "context": […], "position_loss": […], "long_eval": {…},
/// "kv_cache_max_abs_diff", "seconds_total", "notes" }`.
let toJson (r: Report) : JsonObject =
    let o = JsonObject()
    let train = JsonObject()
    train.["seq_len"] <- JsonValue.Create r.SeqLen
    train.["steps"] <- JsonValue.Create r.Steps
    train.["tokens"] <- JsonValue.Create r.Tokens
    train.["seconds"] <- JsonValue.Create r.TrainSeconds
    o.["train"] <- train
    o.["context"] <- ContextUse.contextJson r.Context
    o.["position_loss"] <- ContextUse.positionJson r.PositionLoss

    o.["long_eval"] <-
        match r.LongEval with
        | Some l -> ContextUse.longForwardJson l :> JsonNode
        | None -> null

    o.["kv_cache_max_abs_diff"] <- JsonValue.Create r.KvCacheMaxAbsDiff
    o.["seconds_total"] <- JsonValue.Create r.SecondsTotal
    let notes = JsonArray()

    for n in r.Notes do
        notes.Add(JsonValue.Create n)

    o.["notes"] <- notes
    o

/// A prompt from the held-out text: the start of the first held-out document (its first line when short).
let promptFrom (tokenizer: ITokenizer) (validation: int[]) : string =
    let firstDocument =
        match tokenizer.EndOfText with
        | Some eot ->
            match Array.tryFindIndex ((=) eot) validation with
            | Some i -> validation.[.. i - 1]
            | None -> validation
        | None -> validation
        |> Array.truncate 400
        |> tokenizer.Decode

    match firstDocument.IndexOf '\n' with
    | i when i > 0 && i <= 80 -> firstDocument.Substring(0, i + 1)
    | _ -> firstDocument.Substring(0, min 60 firstDocument.Length)

let private markdownCode (text: string) =
    "```text\n" + text.Replace("```", "'''").TrimEnd() + "\n```"

let private groupsText (m: ModelConfig) = Groups.describe m.Groups

/// Writes report.json, report.md, samples.txt and the plots (loss.png, context.png, position.png).
let writeReport
    (outDir: string)
    (config: RunConfig)
    (parameters: int64)
    (report: Report)
    (outcome: TrainLoopOutcome)
    (prompt: string, greedy: string, sampled: string)
    : unit =
    let file (name: string) = Path.Combine(outDir, name)
    AtomicFile.writeText (file "report.json") (JsonFields.write (toJson report))

    AtomicFile.writeText
        (file "samples.txt")
        $"prompt:\n{prompt}\n\ngreedy:\n{prompt}{greedy}\n\nsampled:\n{prompt}{sampled}\n"

    let log = TrainLoop.readLog (TrainLoop.logPath outDir)

    Plots.attempt (file "loss.png") (fun path ->
        Plots.lossCurve
            path
            (log |> Array.map (fst >> float))
            (log |> Array.map (fun (_, v) -> v.[0]))
            (outcome.Validation |> List.map (fun (s, l) -> float s, l) |> Array.ofList))
    |> ignore

    Plots.attempt (file "context.png") (fun path ->
        Plots.contextCurve
            path
            "Perplexity of the same held-out targets given more context"
            [
                "LongNet", report.Context |> List.map (fun r -> r.Context, r.Perplexity) |> Array.ofList
            ])
    |> ignore

    Plots.attempt (file "position.png") (fun path ->
        Plots.positionLoss
            path
            (report.PositionLoss
             |> List.map (fun b -> b.From, b.To, b.MeanNll)
             |> Array.ofList))
    |> ignore

    let m = config.Model
    let t = config.Train

    let contextRows =
        report.Context
        |> List.map (fun r -> $"| {r.Context} | {r.Windows} | {r.Targets} | {r.MeanNll:F4} | {r.Perplexity:F3} |")
        |> String.concat "\n"

    let positionRows =
        report.PositionLoss
        |> List.map (fun b -> $"| {b.From}–{b.To} | {b.Targets} | {b.MeanNll:F4} |")
        |> String.concat "\n"

    let ratio =
        match report.Context with
        | first :: _ :: _ ->
            let last = List.last report.Context
            $"Perplexity with {last.Context} tokens of context is **{last.Perplexity / first.Perplexity:F3}×** that with {first.Context}."
        | _ -> ""

    let longText =
        match report.LongEval with
        | Some l ->
            let peak =
                l.PeakMb
                |> Option.map (fun mb -> $"{mb:F0} MB")
                |> Option.defaultValue "not measured"

            $"One forward over **{l.Tokens:N0}** held-out tokens ({float l.Tokens / float report.SeqLen:F0}× the training length), without autograd and layer by layer: perplexity **{l.Perplexity:F3}** over every target, {l.Seconds:F1} s, peak resident memory {peak}."
        | None -> "The long forward was skipped (see the notes)."

    let notes =
        if report.Notes.IsEmpty then
            ""
        else
            "## Notes\n\n"
            + String.Join("\n", report.Notes |> List.map (fun n -> "- " + n))
            + "\n"

    let now = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm")

    let targetsPerWindow =
        report.Context
        |> List.tryHead
        |> Option.map (fun r -> r.Targets / int64 r.Windows)
        |> Option.defaultValue 0L

    let text =
        $"""# LongNet demo report

{now} UTC, {report.SecondsTotal / 60.0:F1} minutes on {Environment.ProcessorCount} CPU cores ({RuntimeInformation.OSDescription}, .NET {Environment.Version}).

## Model and training

A decoder-only Transformer whose attention is dilated attention: {m.Layers} pre-LN blocks, embedding {m.EmbedDim},
{m.Heads} heads, {FeedForwardKind.name m.FeedForward} {m.FeedForwardDim}, groups (w, r) = {groupsText m}, position encoding: {ModelConfig.positionName m.Position}, tied embeddings,
{parameters:N0} parameters. This run: {report.Steps} steps of {t.BatchSize} × {report.SeqLen} tokens ({report.Tokens:N0} tokens) in
{report.TrainSeconds:F0} s; AdamW, peak learning rate {t.LearningRate}, seed {t.Seed}.

![training loss](loss.png)

## Perplexity of the same targets given more context

The last {targetsPerWindow} tokens of each held-out window, scored with each many tokens before them:
any fall is context the model uses. {ratio}

| context | windows | targets | nll / token | perplexity |
| --- | --- | --- | --- | --- |
{contextRows}

![perplexity against context](context.png)

## Loss by position

| positions | targets | nll / token |
| --- | --- | --- |
{positionRows}

![loss by position](position.png)

## A million tokens

{longText}

## KV cache

Incremental decoding gives logits within **{report.KvCacheMaxAbsDiff:E2}** of the full forward at every position.

## Sample

{markdownCode (prompt + greedy)}

{notes}"""

    AtomicFile.writeText (file "report.md") text

/// The base model's recipe for `steps` optimizer steps: `RunConfig.longContext` with a curriculum from
/// 1,024-token windows to the training length over the first 40 % of the steps, with `seed` (no copy
/// warm-up: at this scale it cost more perplexity than it gained, docs/model.md).
let baseConfig (steps: int) (seed: int64) : RunConfig =
    let preset = RunConfig.longContext
    let early = max 1 (steps * 2 / 5)

    { preset with
        Train =
            { preset.Train with
                Steps = steps
                Seed = seed
                CurriculumStartLength = 1024
                CurriculumSteps = early
            }
    }

/// The contexts the demo and the context study score the same targets with: windows of 512, 1,024,
/// 4,096 and 8,192 tokens, so that the 256 targets end where the longctx model's segments end.
let defaultContexts = [ 256; 768; 3840; 7936 ]

/// The demo's recipe when it trains on from the base checkpoint: `RunConfig.longContext` at the
/// learning rate the base run ended with (a tenth of its peak) with a short warm-up, with `seed`.
let continueConfig (seed: int64) : RunConfig =
    let preset = RunConfig.longContext

    { preset with
        Train =
            { preset.Train with
                LearningRate = preset.Train.LearningRate * preset.Train.MinLearningRateRatio
                WarmupSteps = 20
                Seed = seed
            }
    }

/// The demo's recipe from scratch: `baseConfig` with its early phases fitted to about `expectedSteps`.
let scratchConfig (expectedSteps: int) (seed: int64) : RunConfig =
    let config = baseConfig expectedSteps seed

    { config with
        Train =
            { config.Train with
                Steps = RunConfig.longContext.Train.Steps
            }
    }

/// Trains the demo's base model from scratch for `Steps` steps (seeded, no time budget: anyone can
/// rerun it) and writes its weights alone, in bfloat16, to `Path` atomically — the checkpoint the demo
/// starts from. The full run (logs, resumable checkpoint) stays in `RunDir`.
let makeBase (settings: BaseSettings) (hooks: Hooks) : Result<CheckpointHeader, string> =
    Native.ensureLoaded () |> ignore

    let config =
        { settings.Config with
            Train =
                { settings.Config.Train with
                    Steps = settings.Steps
                }
        }

    let checkpoint = TrainLoop.checkpointPath settings.RunDir

    // a resumed run keeps the tokenizer it started with
    let tokenizerOf source =
        if File.Exists checkpoint then
            Checkpoint.load checkpoint
            |> Result.bind (fun loaded ->
                for KeyValue(_, t) in loaded.Tensors do
                    t.Dispose()

                Tokenizer.ofSpec loaded.Header.Tokenizer)
        else
            RunConfig.tokenizerFor config source

    Corpus.readSource settings.Corpus
    |> Result.bind (fun source ->
        tokenizerOf source
        |> Result.bind (fun tokenizer -> Corpus.ofSource tokenizer source |> Result.map (fun c -> tokenizer, c)))
    |> Result.bind (fun (tokenizer, corpus) ->
        hooks.Log $"{corpus.Description}: {corpus.Train.Length:N0} training tokens ({tokenizer.Name})"
        let config = RunConfig.withVocabulary tokenizer config

        let session =
            if File.Exists checkpoint then
                Checkpoint.load checkpoint
                |> Result.bind (fun loaded ->
                    try
                        TrainSession.Resume(loaded, Some settings.Steps)
                    finally
                        for KeyValue(_, t) in loaded.Tensors do
                            t.Dispose())
            else
                TrainSession.Create(config, tokenizer)

        session
        |> Result.map (fun session ->
            use session = session

            hooks.Log
                $"training {session.Config.Train.Steps} steps from step {session.Step} (run folder {settings.RunDir})"

            let outcome =
                hooks.Train
                    session
                    corpus
                    {
                        OutDir = settings.RunDir
                        TimeBudget = None
                        FitStepsToBudget = false
                    }

            ignore outcome
            let header = session.Header

            let weights =
                Checkpoint.weights session.Model
                |> List.map (fun (name, t) -> name, t.detach().to_type torch.ScalarType.BFloat16)

            try
                AtomicFile.ensureFolderOf settings.Path
                Checkpoint.save settings.Path header weights
            finally
                for _, t in weights do
                    t.Dispose()

            header))

/// Runs the demo: corpus, tokenizer, model (fresh or from a checkpoint), training for the budget, the
/// context measures, the KV-cache check, samples, and the report files in `settings.OutDir`.
let run (settings: Settings) (hooks: Hooks) : Result<Report, string> =
    let total = Stopwatch.StartNew()
    Native.ensureLoaded () |> ignore
    let outDir = Path.GetFullPath settings.OutDir
    let notes = ResizeArray<string>()

    hooks.Log(
        $"machine: {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, .NET {Environment.Version}, libtorch threads {torch.get_num_threads ()}"
    )

    hooks.Log $"report folder: {outDir}"
    hooks.Heading "1. corpus and tokenizer"

    // the starting checkpoint's header (its tokenizer and model), read once; its tensors are loaded later
    let startHeader =
        match settings.Start with
        | FromScratch -> Ok None
        | FromCheckpoint path -> Checkpoint.readHeader path |> Result.map Some

    startHeader
    |> Result.bind (fun header -> Corpus.readSource settings.Corpus |> Result.map (fun source -> header, source))
    |> Result.bind (fun (header, source) ->
        let tokenizer =
            match header with
            | Some h -> Tokenizer.ofSpec h.Tokenizer
            | None -> RunConfig.tokenizerFor settings.Config source

        tokenizer |> Result.map (fun t -> source, t))
    |> Result.bind (fun (source, tokenizer) -> Corpus.ofSource tokenizer source |> Result.map (fun c -> tokenizer, c))
    |> Result.bind (fun (tokenizer, corpus) ->
        hooks.Log(
            $"{corpus.Description}: {corpus.Documents:N0} documents, {corpus.Characters:N0} characters → {corpus.Train.Length:N0} training and {corpus.Validation.Length:N0} held-out tokens ({tokenizer.Name})"
        )

        hooks.Heading "2. training"

        let config =
            match startHeader with
            // the base's own model (its shape), trained on with the demo's training settings
            | Ok(Some h) -> { settings.Config with Model = h.Model }
            | _ -> settings.Config

        let config = RunConfig.withVocabulary tokenizer config

        TrainSession.Create(config, tokenizer)
        |> Result.bind (fun session ->
            let loaded =
                match settings.Start with
                | FromScratch -> Ok()
                | FromCheckpoint path ->
                    Checkpoint.withTensors path session.LoadWeights
                    |> Result.bind id
                    |> Result.map (fun () ->
                        notes.Add $"The model started from the weights of {Path.GetFileName path}.")

            match loaded with
            | Error e ->
                (session :> IDisposable).Dispose()
                Error e
            | Ok() -> Ok(session, tokenizer, corpus)))
    |> Result.bind (fun (session, tokenizer, corpus) ->
        use session = session
        Directory.CreateDirectory outDir |> ignore
        let m = session.Config.Model
        let seqLen = session.Config.Train.SeqLen

        hooks.Log(
            $"model: {m.Layers} layers, embedding {m.EmbedDim}, {m.Heads} heads, groups (w, r) = {groupsText m}, {session.Model.ParameterCount:N0} parameters; training length {seqLen}"
        )

        hooks.Log $"time budget: {settings.Minutes:F1} minutes (the step count is fitted to it after the first steps)"

        let outcome =
            hooks.Train
                session
                corpus
                {
                    OutDir = outDir
                    TimeBudget = Some(TimeSpan.FromMinutes settings.Minutes)
                    FitStepsToBudget = true
                }

        let reports = outcome.Reports
        let trainSeconds = reports |> List.sumBy _.StepSeconds
        let trainTokens = reports |> List.sumBy _.Tokens

        hooks.Log(
            $"trained {reports.Length} steps, {trainTokens:N0} tokens in {trainSeconds:F0} s ({float trainTokens / max trainSeconds 1e-9:F0} tokens/s)"
        )

        // the early phases are sized for the steps the budget was expected to buy; say if it bought fewer
        let phases = session.Config.Train

        if phases.CurriculumStartLength > 0 && session.Step < phases.CurriculumSteps then
            notes.Add
                $"Training stopped at step {session.Step}, inside the curriculum (windows reach {seqLen} tokens at step {phases.CurriculumSteps}): the model saw fewer full-length windows than planned."

        if phases.CopyWarmupShare > 0.0 && session.Step < phases.CopyWarmupSteps then
            notes.Add
                $"Training stopped at step {session.Step}, inside the copy warm-up (planned to end at step {phases.CopyWarmupSteps})."

        let model = session.Model
        hooks.Heading "3. perplexity of the same targets given more context"

        let contexts =
            settings.Contexts |> List.filter (fun c -> c + settings.Targets <= seqLen)

        if contexts.Length < settings.Contexts.Length then
            notes.Add
                $"Contexts {settings.Contexts |> List.except contexts} were skipped: a window of context + {settings.Targets} targets must fit the training length {seqLen}."

        ContextUse.perplexityByContext model corpus.Validation contexts settings.Targets settings.Windows
        |> Result.bind (fun context ->
            for r in context do
                hooks.Log
                    $"context {r.Context, 6}: perplexity {r.Perplexity:F3} (nll {r.MeanNll:F4}, {r.Targets} targets)"

            hooks.Heading "4. loss by position"

            ContextUse.lossByPosition
                model
                corpus.Validation
                seqLen
                (ContextUse.defaultBuckets seqLen)
                (max 4 (settings.Windows / 2))
            |> Result.map (fun positions -> context, positions))
        |> Result.bind (fun (context, positions) ->
            for b in positions do
                hooks.Log $"positions {b.From, 6}–{b.To, -6}: loss {b.MeanNll:F4}"

            hooks.Heading "5. one forward over a very long window"

            let longEval =
                if settings.LongTokens = 0 then
                    None
                elif corpus.Validation.Length < settings.LongTokens + 1 then
                    notes.Add
                        $"The long forward was skipped: the held-out text has {corpus.Validation.Length:N0} tokens, fewer than {settings.LongTokens + 1:N0}."

                    None
                else
                    match ContextUse.longForward model corpus.Validation settings.LongTokens with
                    | Ok r ->
                        let peak =
                            r.PeakMb
                            |> Option.map (fun mb -> $"{mb:F0} MB")
                            |> Option.defaultValue "not measured"

                        hooks.Log(
                            $"{r.Tokens:N0} tokens ({float r.Tokens / float seqLen:F0}× the training length): perplexity {r.Perplexity:F3} in {r.Seconds:F1} s, peak resident memory {peak}"
                        )

                        Some r
                    | Error e ->
                        notes.Add $"The long forward was skipped: {e}"
                        None

            hooks.Heading "6. KV cache: incremental decoding = full forward"
            let prompt = promptFrom tokenizer corpus.Validation
            let promptIds = tokenizer.Encode prompt
            let rng () = Rng.Create session.Config.Train.Seed

            Generate.tokens
                model
                promptIds
                {
                    MaxNewTokens = max 1 (settings.CachePositions - promptIds.Length)
                    Sampling = Sampling.defaults
                    StopAtEndOfText = false
                }
                tokenizer.EndOfText
                (rng ())
                ignore
            |> Result.bind (fun sampled ->
                let sequence = Array.append promptIds sampled
                let deviation = Generate.cacheDeviation model sequence promptIds.Length

                hooks.Log(
                    $"decoded {sequence.Length} positions one token at a time: max |Δ logit| vs the full forward = {deviation:E2}"
                )

                hooks.Heading "7. samples"

                Generate.tokens
                    model
                    promptIds
                    {
                        MaxNewTokens = 120
                        Sampling = Sampling.greedy
                        StopAtEndOfText = true
                    }
                    tokenizer.EndOfText
                    (rng ())
                    ignore
                |> Result.map (fun greedy -> deviation, sampled, tokenizer.Decode greedy, prompt))
            |> Result.map (fun (deviation, sampled, greedy, prompt) ->
                let sampledText = tokenizer.Decode(Array.truncate 200 sampled)
                hooks.Log $"prompt: {prompt.TrimEnd()}"
                hooks.Log $"greedy: {greedy}"
                hooks.Log $"sampled (temperature 0.8, top-k 40, top-p 0.95): {sampledText}"

                let report =
                    {
                        SeqLen = seqLen
                        Steps = reports.Length
                        Tokens = trainTokens
                        TrainSeconds = trainSeconds
                        Context = context
                        PositionLoss = positions
                        LongEval = longEval
                        KvCacheMaxAbsDiff = deviation
                        Notes = List.ofSeq notes
                        SecondsTotal = total.Elapsed.TotalSeconds
                    }

                writeReport
                    outDir
                    session.Config
                    (session.Model.ParameterCount)
                    report
                    outcome
                    (prompt, greedy, sampledText)

                report)))
