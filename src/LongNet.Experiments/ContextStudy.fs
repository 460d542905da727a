/// Seed 000's claim at this machine's scale: with the same wall-clock budget on the same data, does
/// LongNet use long context better than a local-only model (one group, segment 256, r = 1) and a dense
/// Transformer? Each model is trained for the same minutes — from scratch, or on from the same
/// checkpoint's weights — then the same held-out targets are scored with more and more context. Writes
/// results.json, results.md and context.png.
module LongNet.Experiments.ContextStudy

open System
open System.IO
open System.Text.Json.Nodes
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training

/// One contender: a name and its run configuration.
type Contender =
    {
        /// "longnet", "local-256" or "dense".
        Name: string
        /// Its model, training and tokenizer configuration.
        Config: RunConfig
    }

/// What one contender reached.
type RowResult =
    {
        /// The contender's name.
        Name: string
        /// Training sequence length.
        SeqLen: int
        /// Optimizer steps in the budget.
        Steps: int
        /// Training tokens in the budget.
        Tokens: int64
        /// Training wall time, in seconds.
        Seconds: float
        /// Trainable parameters.
        Parameters: int64
        /// Perplexity of the same targets by context length (the contexts that fit its training length).
        Context: ContextPerplexity list
    }

/// What the study does.
type Settings =
    {
        /// The results folder (one sub-folder per contender holds its run).
        OutDir: string
        /// Training minutes per contender.
        MinutesPerModel: float
        /// The corpus (`Corpus.referenceDocsName` or a text file or folder).
        Corpus: string
        /// Context lengths (ascending).
        Contexts: int list
        /// Targets scored per window.
        Targets: int
        /// Windows per context length.
        Windows: int
        /// Where every contender starts: fresh weights, or the same checkpoint's weights (its tokenizer
        /// and model shape too; each contender keeps its own attention).
        Start: Demo.Start
    }

/// The three contenders built from LongNet's configuration: LongNet itself, the same model with one
/// local group (segment 256, r = 1), and the same model with dense attention at the same training length.
let contenders (longnet: RunConfig) : Contender list =
    let local =
        { longnet.Model with
            Groups = Groups.ofPairsOrRaise [ 256, 1 ]
        }

    let dense =
        { longnet.Model with
            Attention = AttentionKind.Dense
        }

    [
        { Name = "longnet"; Config = longnet }
        {
            Name = "local-256"
            Config = { longnet with Model = local }
        }
        {
            Name = "dense"
            Config = { longnet with Model = dense }
        }
    ]

/// The results as JSON: `{ "start": "scratch" | checkpoint file name, "rows": [ { "name", "seq_len",
/// "steps", "tokens", "seconds", "parameters", "context": [ { "context", "ppl", … } ] } ] }`.
let toJson (start: Demo.Start) (rows: RowResult list) : JsonObject =
    let o = JsonObject()

    o.["start"] <-
        JsonValue.Create(
            match start with
            | Demo.FromScratch -> "scratch"
            | Demo.FromCheckpoint path -> Path.GetFileName path
        )

    let items = JsonArray()

    for r in rows do
        let e = JsonObject()
        e.["name"] <- JsonValue.Create r.Name
        e.["seq_len"] <- JsonValue.Create r.SeqLen
        e.["steps"] <- JsonValue.Create r.Steps
        e.["tokens"] <- JsonValue.Create r.Tokens
        e.["seconds"] <- JsonValue.Create r.Seconds
        e.["parameters"] <- JsonValue.Create r.Parameters
        e.["context"] <- ContextUse.contextJson r.Context
        items.Add e

    o.["rows"] <- items
    o

/// How the study's start reads in a sentence: "from scratch" or "on from <file>".
let startText (start: Demo.Start) : string =
    match start with
    | Demo.FromScratch -> "from scratch"
    | Demo.FromCheckpoint path -> $"on from {Path.GetFileName path}"

/// Writes results.json, results.md and context.png to `outDir`.
let writeResults (outDir: string) (settings: Settings) (rows: RowResult list) : unit =
    let file (name: string) = Path.Combine(outDir, name)
    AtomicFile.writeText (file "results.json") (JsonFields.write (toJson settings.Start rows))

    Plots.attempt (file "context.png") (fun path ->
        Plots.contextCurve
            path
            $"Same held-out targets, same {settings.MinutesPerModel:F0}-minute training budget ({startText settings.Start})"
            [
                for r in rows -> r.Name, r.Context |> List.map (fun c -> c.Context, c.Perplexity) |> Array.ofList
            ])
    |> ignore

    let contexts = settings.Contexts

    let header =
        "| model | training length | steps | tokens | "
        + String.Join(" | ", contexts |> List.map (fun c -> $"ppl @ {c}"))
        + " |"

    let rule =
        "| --- | --- | --- | --- | "
        + String.Join(" | ", contexts |> List.map (fun _ -> "---"))
        + " |"

    let line (r: RowResult) =
        let cells =
            contexts
            |> List.map (fun c ->
                match r.Context |> List.tryFind (fun x -> x.Context = c) with
                | Some x -> $"{x.Perplexity:F3}"
                | None -> "—")

        $"| {r.Name} | {r.SeqLen} | {r.Steps} | {r.Tokens:N0} | "
        + String.Join(" | ", cells)
        + " |"

    let table = String.Join("\n", header :: rule :: (rows |> List.map line))

    AtomicFile.writeText
        (file "results.md")
        $"""# Context study

Each model trained {startText settings.Start} for {settings.MinutesPerModel:F1} minutes on the same data, then the last
{settings.Targets} tokens of {settings.Windows} held-out windows scored with each context length.

{table}

![perplexity against context](context.png)
"""

/// Runs the study: for each contender, a fresh run trained for the budget in `OutDir/<name>/` (from
/// `Start`), then its perplexity by context; writes the results after every contender (a partial study
/// is kept). From a checkpoint, `longnet`'s model is the checkpoint's and the others differ from it only
/// in attention.
let run (settings: Settings) (longnet: RunConfig) (hooks: Demo.Hooks) : Result<RowResult list, string> =
    Native.ensureLoaded () |> ignore
    let outDir = Path.GetFullPath settings.OutDir
    Directory.CreateDirectory outDir |> ignore

    let startHeader =
        match settings.Start with
        | Demo.FromScratch -> Ok None
        | Demo.FromCheckpoint path -> Checkpoint.readHeader path |> Result.map Some

    startHeader
    |> Result.bind (fun header -> Corpus.readSource settings.Corpus |> Result.map (fun source -> header, source))
    |> Result.bind (fun (header, source) ->
        let longnet, tokenizer =
            match header with
            | Some h -> { longnet with Model = h.Model }, Tokenizer.ofSpec h.Tokenizer
            | None -> longnet, RunConfig.tokenizerFor longnet source

        tokenizer
        |> Result.bind (fun tokenizer ->
            Corpus.ofSource tokenizer source |> Result.map (fun c -> longnet, tokenizer, c)))
    |> Result.bind (fun (longnet, tokenizer, corpus) ->
        hooks.Log
            $"{corpus.Description}: {corpus.Train.Length:N0} training and {corpus.Validation.Length:N0} held-out tokens ({tokenizer.Name}); every model starts {startText settings.Start}"

        let startSession (config: RunConfig) : Result<TrainSession, string> =
            TrainSession.Create(config, tokenizer)
            |> Result.bind (fun session ->
                match settings.Start with
                | Demo.FromScratch -> Ok session
                | Demo.FromCheckpoint path ->
                    match Checkpoint.withTensors path session.LoadWeights |> Result.bind id with
                    | Ok() -> Ok session
                    | Error e ->
                        (session :> IDisposable).Dispose()
                        Error e)

        let rec go (done_: RowResult list) (left: Contender list) =
            match left with
            | [] -> Ok(List.rev done_)
            | c :: rest ->
                hooks.Heading $"{c.Name}: {settings.MinutesPerModel:F1} minutes of training {startText settings.Start}"
                let config = RunConfig.withVocabulary tokenizer c.Config

                match startSession config with
                | Error e -> Error $"{c.Name}: {e}"
                | Ok session ->
                    use session = session

                    let outcome =
                        hooks.Train
                            session
                            corpus
                            {
                                OutDir = Path.Combine(outDir, c.Name)
                                TimeBudget = Some(TimeSpan.FromMinutes settings.MinutesPerModel)
                                FitStepsToBudget = true
                            }

                    let seqLen = config.Train.SeqLen

                    let contexts =
                        settings.Contexts |> List.filter (fun x -> x + settings.Targets <= seqLen)

                    match
                        ContextUse.perplexityByContext
                            session.Model
                            corpus.Validation
                            contexts
                            settings.Targets
                            settings.Windows
                    with
                    | Error e -> Error $"{c.Name}: {e}"
                    | Ok context ->
                        for r in context do
                            hooks.Log $"{c.Name}: context {r.Context, 6}: perplexity {r.Perplexity:F3}"

                        let row =
                            {
                                Name = c.Name
                                SeqLen = seqLen
                                Steps = outcome.Reports.Length
                                Tokens = outcome.Reports |> List.sumBy _.Tokens
                                Seconds = outcome.Reports |> List.sumBy _.StepSeconds
                                Parameters = session.Model.ParameterCount
                                Context = context
                            }

                        let finished = row :: done_
                        writeResults outDir settings (List.rev finished)
                        go finished rest

        go [] (contenders longnet))
