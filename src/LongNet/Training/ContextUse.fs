/// Measuring whether a model uses long context: the perplexity of the same target tokens given more and
/// more context, the loss by position in a window, and one forward over a very long window (no
/// gradient, layer by layer, memory linear in its length).
namespace LongNet.Training

open System
open System.Diagnostics
open System.Text.Json.Nodes
open TorchSharp
open LongNet
open LongNet.Modules

/// The perplexity of the same targets scored with `Context` tokens before them.
type ContextPerplexity =
    {
        /// Tokens of context before the first target.
        Context: int
        /// Windows scored (each `Context + targets` tokens long).
        Windows: int
        /// Targets scored in all (Windows × the target span).
        Targets: int64
        /// Mean negative log-likelihood per target, in nats.
        MeanNll: float
        /// exp(MeanNll).
        Perplexity: float
        /// Wall time, in seconds.
        Seconds: float
    }

/// The mean loss of the targets at positions [From, To] (inclusive, counted from the window start).
type PositionLoss =
    {
        /// First position of the bucket.
        From: int
        /// Last position of the bucket.
        To: int
        /// Targets in the bucket (over all windows).
        Targets: int64
        /// Mean negative log-likelihood per target, in nats.
        MeanNll: float
    }

/// One forward over a long window.
type LongForward =
    {
        /// Tokens in the window (every one but the first is a target).
        Tokens: int64
        /// Mean negative log-likelihood per target, in nats.
        MeanNll: float
        /// exp(MeanNll).
        Perplexity: float
        /// Wall time, in seconds.
        Seconds: float
        /// The process's peak resident memory during the forward, in MB (None where it cannot be read).
        PeakMb: float option
    }

/// Context use: perplexity by context length, loss by position, long forwards.
module ContextUse =
    /// The number of targets scored per window when measuring perplexity against context (the last
    /// `defaultTargets` tokens of each window).
    let defaultTargets = 256

    /// Tokens per forward batch when many short windows are scored together.
    let private batchTokens = 16384

    /// The checks shared by the measures: ascending positive contexts that fit the model and the text.
    let validateContexts
        (contexts: int list)
        (targets: int)
        (maxPositions: int)
        (available: int)
        : Result<unit, string> =
        if contexts.IsEmpty then
            Error "contexts: give at least one context length."
        elif targets < 1 then
            Error $"targets must be ≥ 1, got {targets}."
        else
            match contexts |> List.tryFind (fun c -> c < 1) with
            | Some c -> Error $"contexts must be ≥ 1, got {c}."
            | None ->
                match contexts |> List.pairwise |> List.tryFind (fun (a, b) -> b <= a) with
                | Some(a, b) -> Error $"contexts must be strictly ascending, got {a} then {b}."
                | None ->
                    let longest = List.last contexts + targets

                    if longest > maxPositions then
                        Error
                            $"contexts: the longest window ({List.last contexts} + {targets} targets = {longest}) exceeds the model's maxPositions {maxPositions}."
                    elif longest + 1 > available then
                        Error
                            $"contexts: the longest window needs {longest + 1} tokens; the text has {available}. Use a larger text or shorter contexts."
                    else
                        Ok()

    /// Start offsets of `count` windows of `length` tokens (+1 for the last target) spread evenly over
    /// `available` tokens, without overlap where the text allows.
    let windowStarts (available: int) (length: int) (count: int) : int[] =
        let room = available - (length + 1)

        if room < 0 || count < 1 then
            [||]
        else
            let count = min count (room / max 1 length + 1)

            if count = 1 then
                [| 0 |]
            else
                Array.init count (fun i -> int (int64 room * int64 i / int64 (count - 1)))

    // Per-target NLL `[b, n]` (float64) of windows of `tokens` starting at `starts`, each `length + 1`
    // tokens long, scored in batches; `keep` gets each batch's NLL and the windows' indices.
    let private scoreWindows
        (model: LongNetModel)
        (tokens: int[])
        (starts: int[])
        (length: int)
        (keep: torch.Tensor -> unit)
        =
        let perBatch = max 1 (batchTokens / length)
        let wasTraining = model.training
        model.eval ()

        try
            use _ = torch.no_grad ()

            for first in 0..perBatch .. starts.Length - 1 do
                use scope = torch.NewDisposeScope()
                let count = min perBatch (starts.Length - first)

                let data =
                    Array.init (count * (length + 1)) (fun k ->
                        let w, j = k / (length + 1), k % (length + 1)
                        int64 tokens.[starts.[first + w] + j])

                let batch = torch.tensor(data).view(int64 count, int64 (length + 1))
                let input = batch.narrow (1L, 0L, int64 length)
                let target = batch.narrow (1L, 1L, int64 length)
                let logits = model.forward input

                let wide =
                    if logits.dtype = torch.ScalarType.Float64 then
                        logits
                    else
                        logits.to_type torch.ScalarType.Float32

                let nll =
                    torch.nn.functional.cross_entropy (
                        wide.reshape (-1L, logits.shape.[2]),
                        target.reshape -1L,
                        reduction = torch.nn.Reduction.None
                    )

                keep (nll.to_type(torch.ScalarType.Float64).view(int64 count, int64 length))
        finally
            if wasTraining then
                model.train ()

    /// The perplexity of the last `targets` tokens of `windows` held-out windows, each scored with every
    /// context length in `contexts` (strictly ascending): a window is cut to its last `c + targets`
    /// tokens, so every context length predicts the same targets and any fall in perplexity is context
    /// used. Windows are `max contexts + targets` tokens long, spread evenly over `tokens`.
    let perplexityByContext
        (model: LongNetModel)
        (tokens: int[])
        (contexts: int list)
        (targets: int)
        (windows: int)
        : Result<ContextPerplexity list, string> =
        match validateContexts contexts targets model.Config.MaxPositions tokens.Length with
        | Error e -> Error e
        | Ok() when windows < 1 -> Error $"windows must be ≥ 1, got {windows}."
        | Ok() ->
            let longest = List.last contexts + targets
            let starts = windowStarts tokens.Length longest windows

            contexts
            |> List.map (fun c ->
                let watch = Stopwatch.StartNew()
                let shift = longest - (c + targets)
                let mutable total = 0.0

                scoreWindows model tokens (starts |> Array.map (fun s -> s + shift)) (c + targets) (fun nll ->
                    total <- total + nll.narrow(1L, int64 c, int64 targets).sum().item<float>())

                let count = int64 starts.Length * int64 targets
                let mean = total / float count

                {
                    Context = c
                    Windows = starts.Length
                    Targets = count
                    MeanNll = mean
                    Perplexity = Math.Exp mean
                    Seconds = watch.Elapsed.TotalSeconds
                })
            |> Ok

    /// Bucket bounds for a window of `length` tokens: 0, 256, 1024, 4096, … (×4) and `length`.
    let defaultBuckets (length: int) : int list =
        let rec go b acc =
            if b >= length then
                List.rev (length :: acc)
            else
                go (b * 4) (b :: acc)

        if length <= 256 then [ 0; length ] else go 256 [ 0 ]

    /// The mean loss by position: `windows` windows of `length` tokens spread over `tokens`, the targets
    /// grouped into buckets [bounds_i, bounds_{i+1}) of their position from the window start (`bounds`
    /// ascending from 0 to `length`; `defaultBuckets` gives 0–255, 256–1023, 1024–4095, …).
    let lossByPosition
        (model: LongNetModel)
        (tokens: int[])
        (length: int)
        (bounds: int list)
        (windows: int)
        : Result<PositionLoss list, string> =
        if length < 1 then
            Error $"length must be ≥ 1, got {length}."
        elif length > model.Config.MaxPositions then
            Error $"length {length} exceeds the model's maxPositions {model.Config.MaxPositions}."
        elif tokens.Length < length + 1 then
            Error $"the text has {tokens.Length} tokens; windows of {length} need at least {length + 1}."
        elif windows < 1 then
            Error $"windows must be ≥ 1, got {windows}."
        elif bounds.Length < 2 || List.head bounds <> 0 || List.last bounds <> length then
            Error $"bounds must run from 0 to the window length {length}, got {bounds}."
        elif bounds |> List.pairwise |> List.exists (fun (a, b) -> b <= a) then
            Error $"bounds must be strictly ascending, got {bounds}."
        else
            let starts = windowStarts tokens.Length length windows
            let sums = Array.zeroCreate<float> length

            scoreWindows model tokens starts length (fun nll ->
                let column = nll.sum(0L).data<float>().ToArray()

                for j in 0 .. length - 1 do
                    sums.[j] <- sums.[j] + column.[j])

            bounds
            |> List.pairwise
            |> List.map (fun (a, b) ->
                let count = int64 starts.Length * int64 (b - a)

                {
                    From = a
                    To = b - 1
                    Targets = count
                    MeanNll = (Array.sum sums.[a .. b - 1]) / float count
                })
            |> Ok

    /// Bytes a long forward of `length` tokens needs beyond the weights, estimated from the model's
    /// widths: the residual stream and one block's activations over the whole window (attention inputs,
    /// outputs and the dilated attention's working set) — the feed-forward network and the output head
    /// run in chunks. `elementBytes` is the size of one activation (4 for float32, 2 for bfloat16).
    let longForwardBytes (config: ModelConfig) (elementBytes: int64) (length: int64) : int64 =
        let e = int64 config.EmbedDim
        let element = elementBytes
        // residual, normed input, q, k, v, attention output, projection, the groups' outputs and lse,
        // RoPE tables: 24 e elements per token, calibrated on a measured 1M-token forward (e = 128:
        // 11.6 GB peak, ~11 kB per token) with a margin
        let perToken = element * e * 24L

        // per chunk of 65,536 tokens: the feed-forward hidden activations, and the logits widened to
        // float32 with their log-softmax (12 bytes per logit)
        let chunkBytes =
            65536L
            * (int64 config.FeedForwardDim * 3L * element + int64 config.VocabSize * 12L)

        length * (perToken + 64L) + chunkBytes

    /// The memory this process may still use, in bytes: the smaller of what its limit leaves (the GC's
    /// view of the machine or container limit, less this process's working set) and what the machine
    /// can still give (other processes' memory counted).
    let availableBytes () : int64 =
        let info = GC.GetGCMemoryInfo()
        let underLimit = info.TotalAvailableMemoryBytes - Environment.WorkingSet

        match ProcessMemory.machineAvailableKb () with
        | Some kb -> min underLimit (int64 (kb * 1024.0))
        | None -> underLimit

    /// Checks that one forward of `length` positions can run: the length is in range for the model and
    /// the memory estimate fits what this process may use.
    let checkForwardFits (model: LongNetModel) (length: int) : Result<unit, string> =
        let elementBytes =
            model.parameters ()
            |> Seq.tryHead
            |> Option.map (fun p -> int64 p.ElementSize)
            |> Option.defaultValue 4L

        let needed = longForwardBytes model.Config elementBytes (int64 length)
        let available = availableBytes ()

        if length < 1 then
            Error $"length must be ≥ 1, got {length}."
        elif length > model.Config.MaxPositions then
            Error $"length {length} exceeds the model's maxPositions {model.Config.MaxPositions}."
        elif needed > available then
            Error
                $"a forward over {length} tokens needs about {needed / 1048576L} MB; this process may use {available / 1048576L} MB. Use a shorter length."
        else
            Ok()

    /// Checks that one long forward of `length` tokens can run: the length is in range for the model,
    /// the text holds `length + 1` tokens, and the memory estimate fits what this process may use.
    let checkLongForward (model: LongNetModel) (tokenCount: int) (length: int) : Result<unit, string> =
        match checkForwardFits model length with
        | Error e -> Error e
        | Ok() when tokenCount < length + 1 ->
            Error $"the text has {tokenCount} tokens; a forward over {length} needs at least {length + 1}."
        | Ok() -> Ok()

    /// One forward over the first `length + 1` tokens of `tokens` without autograd, layer by layer with
    /// the feed-forward networks and the output head in chunks, so memory stays linear in the length: the
    /// perplexity of every target, the seconds and the peak resident memory. Refused up front (with the
    /// estimate) when it would not fit in the memory this process may use.
    let longForward (model: LongNetModel) (tokens: int[]) (length: int) : Result<LongForward, string> =
        match checkLongForward model tokens.Length length with
        | Error e -> Error e
        | Ok() ->
            let watch = Stopwatch.StartNew()
            let wasTraining = model.training
            model.eval ()
            let mutable total = 0.0

            let work () =
                use _ = torch.no_grad ()
                use scope = torch.NewDisposeScope()
                let data = Array.init (length + 1) (fun j -> int64 tokens.[j])
                let all = torch.tensor(data).view(1L, int64 length + 1L)
                let input = all.narrow (1L, 0L, int64 length)
                let target = all.narrow (1L, 1L, int64 length)

                total <- model.NllChunked(input, target, 65536).to_type(torch.ScalarType.Float64).sum().item<float>()

            let measured =
                try
                    try
                        Ok(ProcessMemory.measure work |> Option.map _.PeakMb)
                    with e ->
                        Error $"the forward over {length} tokens failed: {e.Message}"
                finally
                    if wasTraining then
                        model.train ()

            measured
            |> Result.map (fun peak ->
                let mean = total / float length

                {
                    Tokens = int64 length
                    MeanNll = mean
                    Perplexity = Math.Exp mean
                    Seconds = watch.Elapsed.TotalSeconds
                    PeakMb = peak
                })

    /// The JSON form `[ { "context", "ppl", "nll", "windows", "targets", "seconds" } … ]`.
    let contextJson (results: ContextPerplexity list) : JsonArray =
        let items = JsonArray()

        for r in results do
            let o = JsonObject()
            o.["context"] <- JsonValue.Create r.Context
            o.["ppl"] <- JsonValue.Create r.Perplexity
            o.["nll"] <- JsonValue.Create r.MeanNll
            o.["windows"] <- JsonValue.Create r.Windows
            o.["targets"] <- JsonValue.Create r.Targets
            o.["seconds"] <- JsonValue.Create r.Seconds
            items.Add o

        items

    /// The JSON form `[ { "from", "to", "nll", "targets" } … ]`.
    let positionJson (results: PositionLoss list) : JsonArray =
        let items = JsonArray()

        for r in results do
            let o = JsonObject()
            o.["from"] <- JsonValue.Create r.From
            o.["to"] <- JsonValue.Create r.To
            o.["nll"] <- JsonValue.Create r.MeanNll
            o.["targets"] <- JsonValue.Create r.Targets
            items.Add o

        items

    /// The JSON form `{ "tokens", "ppl", "nll", "seconds", "peak_mb" }`.
    let longForwardJson (r: LongForward) : JsonObject =
        let o = JsonObject()
        o.["tokens"] <- JsonValue.Create r.Tokens
        o.["ppl"] <- JsonValue.Create r.Perplexity
        o.["nll"] <- JsonValue.Create r.MeanNll
        o.["seconds"] <- JsonValue.Create r.Seconds

        o.["peak_mb"] <-
            match r.PeakMb with
            | Some mb -> JsonValue.Create mb :> JsonNode
            | None -> null

        o
