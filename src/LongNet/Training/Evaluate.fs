/// Evaluation: mean negative log-likelihood and perplexity of held-out tokens at several sequence
/// lengths — also longer than the model was trained on — in consecutive windows from the start of the
/// validation tokens, so every length predicts the same tokens when the budget allows.
namespace LongNet.Training

open System
open System.Diagnostics
open System.Text.Json.Nodes
open TorchSharp
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

    /// Perplexity of `tokens` at window length `length`, predicting at most about `maxTokens` tokens
    /// (at least one window). Fails when there are fewer than length + 1 tokens.
    let perplexity
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
                $"the validation text has {tokens.Length} tokens; length {length} needs at least {length + 1}. Use a larger corpus or shorter --lengths."
        else
            let watch = Stopwatch.StartNew()
            let windows = windowCount tokens.Length length maxTokens
            let perBatch = max 1 (16384 / length)
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
                    let loss = crossEntropy (model.forward input) target
                    total <- total + loss.to_type(torch.ScalarType.Float64).item<float>() * float count
            finally
                if wasTraining then
                    model.train ()

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
