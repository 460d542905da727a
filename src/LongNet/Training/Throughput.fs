/// Training throughput as a user waits on it: tokens per second of full training steps (forward,
/// backward, gradient clipping and the AdamW update) of a run configuration at several sequence
/// lengths, with the same tokens per step at every length, on seeded random token ids (the cost of a
/// step does not depend on the text).
module LongNet.Training.Throughput

open System
open System.Text.Json
open System.Text.Json.Nodes
open LongNet
open LongNet.Text

/// One measured sequence length.
type ThroughputCell =
    {
        /// Training sequence length.
        SeqLen: int
        /// Sequences per step (tokens per step / SeqLen, at least 1).
        Batch: int
        /// Tokens per step, Batch × SeqLen.
        TokensPerStep: int64
        /// Median seconds of the measured steps.
        SecondsPerStep: float
        /// TokensPerStep / SecondsPerStep.
        TokensPerSecond: float
        /// Slowest measured step / fastest.
        Spread: float
        /// The process's peak resident memory above the cell's start, in MB (None where not readable).
        PeakMb: float option
    }

/// A finished throughput run.
type ThroughputResult =
    {
        /// The machine.
        Machine: BenchMachine
        /// The name of the measured configuration (e.g. the preset).
        Model: string
        /// The model's parameters (the same at every length).
        Parameters: int64
        /// One cell per sequence length, in the order given.
        Cells: ThroughputCell list
    }

/// The vocabulary size a configuration trains with: its tokenizer's (a learnt BPE's target size), else
/// its model's.
let vocabularyOf (config: RunConfig) : int =
    match config.Tokenizer with
    | LearnedBpe size -> size
    | FromCheckpoint -> config.Model.VocabSize
    | _ ->
        match RunConfig.tokenizer config with
        | Ok t -> t.VocabSize
        | Error _ -> config.Model.VocabSize

/// Measures `steps` training steps (after one warm-up step) of `config` at each of `seqLens`, each
/// step holding about `tokensPerStep` tokens; `report` sees each cell as it is measured. Curriculum and
/// copy warm-up are switched off; everything else (model, optimizer, precision) is the configuration's.
let measure
    (config: RunConfig)
    (seqLens: int list)
    (tokensPerStep: int)
    (steps: int)
    (seed: int)
    (report: ThroughputCell -> unit)
    : Result<ThroughputCell list * int64, string> =
    if seqLens.IsEmpty || seqLens |> List.exists (fun l -> l < 2) then
        Error "seqLens must hold lengths ≥ 2."
    elif tokensPerStep < 1 then
        Error $"tokensPerStep must be ≥ 1, got {tokensPerStep}."
    elif steps < 1 then
        Error $"steps must be ≥ 1, got {steps}."
    else
        Native.ensureLoaded () |> ignore
        let vocab = vocabularyOf config
        let tokenizer = IdsOnlyTokenizer vocab :> ITokenizer
        let mutable parameters = 0L

        let cell (length: int) : Result<ThroughputCell, string> =
            let batch = max 1 (tokensPerStep / length)

            let run =
                { config with
                    Model =
                        { config.Model with
                            VocabSize = vocab
                            MaxPositions = max config.Model.MaxPositions length
                        }
                    Train =
                        { config.Train with
                            SeqLen = length
                            BatchSize = batch
                            Accumulation = 1
                            Steps = steps + 1
                            WarmupSteps = 1
                            CurriculumStartLength = 0
                            CurriculumSteps = 0
                            CopyWarmupShare = 0.0
                            CopyWarmupSteps = 0
                            CopyProblemSteps = 0
                            CheckpointEvery = 0
                        }
                }

            TrainSession.Create(run, tokenizer)
            |> Result.bind (fun session ->
                use session = session
                parameters <- session.Model.ParameterCount
                let random = Random(seed)
                let data = Array.init (batch * length * 4 + length + 1) (fun _ -> random.Next vocab)
                let seconds = ResizeArray<float>()
                let mutable failure = None

                let peak =
                    ProcessMemory.measure (fun () ->
                        for _ in 0..steps do
                            if failure.IsNone then
                                match session.TrainStep data with
                                | Ok r -> seconds.Add r.StepSeconds
                                | Error e -> failure <- Some e)

                match failure with
                | Some e -> Error $"sequence length {length}: {e}"
                | None ->
                    // the first step pays one-time costs (allocation, tables) and is left out
                    let measured = seconds |> Seq.skip 1 |> Seq.sort |> Array.ofSeq
                    let median = measured.[measured.Length / 2]
                    let tokens = int64 batch * int64 length

                    Ok
                        {
                            SeqLen = length
                            Batch = batch
                            TokensPerStep = tokens
                            SecondsPerStep = median
                            TokensPerSecond = float tokens / median
                            Spread = Array.last measured / measured.[0]
                            PeakMb = peak |> Option.map _.AboveBaselineMb
                        })

        let rec go (done_: ThroughputCell list) (left: int list) =
            match left with
            | [] -> Ok(List.rev done_, parameters)
            | l :: rest ->
                match cell l with
                | Error e -> Error e
                | Ok c ->
                    report c
                    go (c :: done_) rest

        go [] seqLens

/// The result as JSON: `machine`, `model`, `parameters` and one object per sequence length with
/// `seq_len`, `batch`, `tokens_per_step`, `seconds_per_step`, `tokens_per_second`, `relative` (to the
/// first length), `spread` and `peak_mb`.
let toJson (r: ThroughputResult) : string =
    let root = JsonObject()
    root["machine"] <- Benchmarking.machineJson r.Machine
    root["model"] <- JsonValue.Create r.Model
    root["parameters"] <- JsonValue.Create r.Parameters
    let cells = JsonArray()
    let first = r.Cells |> List.tryHead |> Option.map _.TokensPerSecond

    for c in r.Cells do
        let o = JsonObject()
        o["seq_len"] <- JsonValue.Create c.SeqLen
        o["batch"] <- JsonValue.Create c.Batch
        o["tokens_per_step"] <- JsonValue.Create c.TokensPerStep
        o["seconds_per_step"] <- JsonValue.Create c.SecondsPerStep
        o["tokens_per_second"] <- JsonValue.Create c.TokensPerSecond
        o["relative"] <- JsonValue.Create(c.TokensPerSecond / defaultArg first c.TokensPerSecond)
        o["spread"] <- JsonValue.Create c.Spread

        o["peak_mb"] <-
            match c.PeakMb with
            | Some v -> JsonValue.Create v
            | None -> null

        cells.Add o

    root["cells"] <- cells
    root.ToJsonString(JsonSerializerOptions(WriteIndented = true))

/// The result as a text table, one row per sequence length.
let toTable (r: ThroughputResult) : string =
    let first = r.Cells |> List.tryHead |> Option.map _.TokensPerSecond

    let rows =
        r.Cells
        |> List.map (fun c ->
            let peak =
                match c.PeakMb with
                | Some v -> $"{v, 9:F0}"
                | None -> $"{'-', 9}"

            $"{c.SeqLen, 8} {c.Batch, 6} {c.TokensPerStep, 8} {c.SecondsPerStep, 9:F3} {c.TokensPerSecond, 10:F0} {c.TokensPerSecond / defaultArg first c.TokensPerSecond, 9:F3} {c.Spread, 7:F2} {peak}")

    let header =
        $"""{"seq_len", 8} {"batch", 6} {"tokens", 8} {"s/step", 9} {"tokens/s", 10} {"relative", 9} {"spread", 7} {"peak MB", 9}"""

    String.Join("\n", header :: rows)
