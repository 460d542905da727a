/// Evaluation: mean negative log-likelihood and perplexity of held-out tokens at several sequence
/// lengths — also longer than the model was trained on — in consecutive windows from the start of the
/// validation tokens, so every length predicts the same tokens when the budget allows.
namespace LongNet.Training

open System
open System.Diagnostics
open System.Text.Json.Nodes
open TorchSharp
open LongNet.Distributed
open LongNet.Modules

/// The perplexity of one sequence length.
type PerplexityResult =
    {
        /// The window length (tokens of context + prediction).
        Length: int
        /// Windows evaluated.
        Windows: int
        /// Tokens predicted (Windows × Length).
        Tokens: int64
        /// Mean negative log-likelihood per token, in nats.
        MeanNll: float
        /// exp(MeanNll).
        Perplexity: float
        /// Wall time of the evaluation, in seconds.
        Seconds: float
    }

/// Perplexity evaluation.
module Evaluate =
    /// Mean cross-entropy (nats per token, float32 or float64 accumulation) of `logits` `[b, n, V]` against `targets` `[b, n]`.
    let crossEntropy (logits: torch.Tensor) (targets: torch.Tensor) : torch.Tensor =
        let v = logits.shape.[2]

        let logits =
            if logits.dtype = torch.ScalarType.Float64 then
                logits
            else
                logits.to_type torch.ScalarType.Float32

        torch.nn.functional.cross_entropy (logits.reshape (-1L, v), targets.reshape -1L)

    /// The number of windows of `length` tokens evaluated from `available` tokens within `maxTokens`.
    let windowCount (available: int) (length: int) (maxTokens: int) : int =
        min ((available - 1) / length) (max 1 (maxTokens / length))

    // The perplexity loop shared by the single-process and the split evaluation. `split`, when given, is
    // the communicator of the ranks sharing every window: each rank scores its slice, the sums are added.
    let private evaluate
        (split: ICommunicator option)
        (model: LongNetModel)
        (tokens: int[])
        (length: int)
        (maxTokens: int)
        : Result<PerplexityResult, string> =
        if length < 1 then
            Error $"evaluation length must be ≥ 1, got {length}."
        elif length > model.Config.MaxPositions then
            Error $"evaluation length {length} exceeds the model's maxPositions {model.Config.MaxPositions}."
        elif tokens.Length < length + 1 then
            Error
                $"the validation text has {tokens.Length} tokens; length {length} needs at least {length + 1}. Use a larger corpus or shorter `lengths`."
        elif split |> Option.exists (fun c -> length < c.Size) then
            Error $"evaluation length {length} is shorter than the number of ranks ({split.Value.Size}) sharing it."
        else
            let watch = Stopwatch.StartNew()
            let windows = windowCount tokens.Length length maxTokens
            let perBatch = max 1 (16384 / length)
            let slice = split |> Option.map (fun c -> SequenceSlice(c, int64 length))
            let wasTraining = model.training
            model.eval ()
            let mutable total = 0.0

            try
                use _ = torch.no_grad ()

                for first in 0..perBatch .. windows - 1 do
                    use scope = torch.NewDisposeScope()
                    let count = min perBatch (windows - first)

                    let data =
                        Array.init (count * (length + 1)) (fun k ->
                            let w, j = k / (length + 1), k % (length + 1)
                            int64 tokens.[(first + w) * length + j])

                    let batch = torch.tensor(data).view(int64 count, int64 (length + 1))
                    let input = batch.narrow (1L, 0L, int64 length)
                    let target = batch.narrow (1L, 1L, int64 length)

                    let nll =
                        match slice with
                        | None ->
                            let loss = crossEntropy (model.forward input) target
                            loss.to_type(torch.ScalarType.Float64).item<float>() * float count
                        | Some s ->
                            let part (t: torch.Tensor) = t.narrow (1L, s.Start, s.Length)
                            let loss = crossEntropy (model.ForwardSlice(part input, s)) (part target)
                            // this rank's tokens' share of the windows' mean
                            loss.to_type(torch.ScalarType.Float64).item<float>()
                            * float count
                            * float s.Length
                            / float length

                    total <- total + nll
            finally
                if wasTraining then
                    model.train ()

            let total =
                match split with
                | None -> total
                | Some comm ->
                    use scope = torch.NewDisposeScope()
                    (Collectives.allReduceSum comm (torch.tensor [| total |])).[0].item<float>()

            let nll = total / float windows

            Ok
                {
                    Length = length
                    Windows = windows
                    Tokens = int64 windows * int64 length
                    MeanNll = nll
                    Perplexity = Math.Exp nll
                    Seconds = watch.Elapsed.TotalSeconds
                }

    /// Perplexity of `tokens` at window length `length`, predicting at most about `maxTokens` tokens
    /// (at least one window). Fails when there are fewer than length + 1 tokens.
    let perplexity
        (model: LongNetModel)
        (tokens: int[])
        (length: int)
        (maxTokens: int)
        : Result<PerplexityResult, string> =
        evaluate None model tokens length maxTokens

    /// `perplexity` with every window split over the ranks of `comm` (sequence parallel, see
    /// `SequenceSlice`); every rank gets the same result, equal to the single-process one. Collective.
    let perplexitySplit
        (comm: ICommunicator)
        (model: LongNetModel)
        (tokens: int[])
        (length: int)
        (maxTokens: int)
        : Result<PerplexityResult, string> =
        evaluate (Some comm) model tokens length maxTokens

    /// Perplexities at every length (stops at the first failure).
    let perplexities (model: LongNetModel) (tokens: int[]) (lengths: int list) (maxTokens: int) =
        let rec go acc lengths =
            match lengths with
            | [] -> Ok(List.rev acc)
            | l :: rest ->
                match perplexity model tokens l maxTokens with
                | Ok r -> go (r :: acc) rest
                | Error e -> Error e

        go [] lengths

    /// The JSON form of results: `{ "results": [ { "length", "windows", "tokens", "meanNll", "perplexity", "seconds" } … ] }`
    /// plus the given extra fields.
    let toJson (extra: (string * JsonNode) list) (results: PerplexityResult list) : JsonObject =
        let o = JsonObject()

        for name, value in extra do
            o.[name] <- value

        let items = JsonArray()

        for r in results do
            let e = JsonObject()
            e.["length"] <- JsonValue.Create r.Length
            e.["windows"] <- JsonValue.Create r.Windows
            e.["tokens"] <- JsonValue.Create r.Tokens
            e.["meanNll"] <- JsonValue.Create r.MeanNll
            e.["perplexity"] <- JsonValue.Create r.Perplexity
            e.["seconds"] <- JsonValue.Create r.Seconds
            items.Add e

        o.["results"] <- items
        o
