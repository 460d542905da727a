/// Text generation with the KV cache: the prompt is run once through the full forward (filling the
/// cache), then one token at a time is chosen by `Sampling.next` and decoded incrementally — every
/// step costs O(largest segment), and gives the same logits as recomputing the whole sequence.
/// Models without a KV cache (select-and-merge attention, length-dependent scaling) recompute the
/// full forward for every new token, which gives the same tokens by construction.
namespace LongNet.Training

open TorchSharp
open LongNet.Modules
open LongNet.Text

/// What to generate.
type GenerateSettings =
    {
        /// Tokens to generate after the prompt.
        MaxNewTokens: int
        /// How each token is chosen.
        Sampling: SamplingSettings
        /// Stop early when the tokenizer's end-of-text token is generated.
        StopAtEndOfText: bool
    }

/// Generation.
module Generate =
    /// Checks the prompt and budget against the model: a non-empty prompt, ≥ 1 new token, and prompt +
    /// new tokens within maxPositions. Errors say what to change.
    let check (model: LongNetModel) (prompt: int[]) (settings: GenerateSettings) : Result<unit, string> =
        let limit = model.Config.MaxPositions

        if model.Config.Architecture <> Decoder then
            Error "this checkpoint holds an encoder (non-causal); generation needs a decoder."
        elif prompt.Length = 0 then
            Error "the prompt is empty; give some text as the `prompt`."
        elif settings.MaxNewTokens < 1 then
            Error $"`maxNewTokens` must be ≥ 1, got {settings.MaxNewTokens}."
        elif int64 prompt.Length + int64 settings.MaxNewTokens > int64 limit then
            Error
                $"the prompt has {prompt.Length} tokens and {settings.MaxNewTokens} more were asked for, past the model's limit of {limit} positions; shorten the prompt or lower `maxNewTokens`."
        else
            match prompt |> Array.tryFind (fun t -> t < 0 || t >= model.Config.VocabSize) with
            | Some t ->
                Error $"the prompt holds token id {t}, outside the model's vocabulary of {model.Config.VocabSize}."
            | None -> Sampling.validate settings.Sampling |> Result.map ignore

    let private lastLogits (logits: torch.Tensor) =
        // [V] → float64 array
        logits.to_type(torch.ScalarType.Float64).cpu().data<float>().ToArray()

    /// Generates up to `MaxNewTokens` ids after `prompt` (batch of one), calling `onToken` with each new id;
    /// returns the new ids (without the prompt).
    let tokens
        (model: LongNetModel)
        (prompt: int[])
        (settings: GenerateSettings)
        (endOfText: int option)
        (rng: Rng)
        (onToken: int -> unit)
        : Result<int[], string> =
        check model prompt settings
        |> Result.map (fun () ->
            let wasTraining = model.training
            model.eval ()

            try
                use _ = torch.no_grad ()

                if model.SupportsKvCache then
                    use cache = model.NewCache()
                    let generated = ResizeArray<int>()

                    let mutable logits =
                        use scope = torch.NewDisposeScope()
                        let input = torch.tensor(prompt |> Array.map int64).view(1L, -1L)
                        let all = model.Prefill(input, cache)
                        lastLogits (all.select(0L, 0L).select(0L, int64 prompt.Length - 1L))

                    let mutable stop = false

                    while not stop && generated.Count < settings.MaxNewTokens do
                        let next = Sampling.next settings.Sampling rng logits
                        generated.Add next
                        onToken next

                        if settings.StopAtEndOfText && Some next = endOfText then
                            stop <- true
                        elif generated.Count < settings.MaxNewTokens then
                            use scope = torch.NewDisposeScope()
                            let step = model.Step(torch.tensor ([| int64 next |]), cache)
                            logits <- lastLogits (step.select (0L, 0L))

                    generated.ToArray()
                else
                    // no KV cache (select-and-merge, length-dependent scaling): the full forward per token
                    let sequence = ResizeArray<int64>(prompt |> Array.map int64)
                    let generated = ResizeArray<int>()
                    let mutable stop = false

                    while not stop && generated.Count < settings.MaxNewTokens do
                        let logits =
                            use scope = torch.NewDisposeScope()
                            let input = torch.tensor(sequence.ToArray()).view(1L, -1L)
                            lastLogits ((model.forward input).select(0L, 0L).select(0L, int64 sequence.Count - 1L))

                        let next = Sampling.next settings.Sampling rng logits
                        generated.Add next
                        sequence.Add(int64 next)
                        onToken next

                        if settings.StopAtEndOfText && Some next = endOfText then
                            stop <- true

                    generated.ToArray()
            finally
                if wasTraining then
                    model.train ())

    /// Generates a continuation of `prompt` text (after the tokenizer's prompt start, if it has one) and
    /// returns it as text (the prompt excluded).
    let text
        (model: LongNetModel)
        (tokenizer: ITokenizer)
        (prompt: string)
        (settings: GenerateSettings)
        (rng: Rng)
        : Result<string, string> =
        let ids =
            Array.append (Option.toArray tokenizer.PromptStart) (tokenizer.Encode prompt)

        tokens model ids settings tokenizer.EndOfText rng ignore
        |> Result.map tokenizer.Decode

    /// The largest |difference| between the logits of incremental decoding (prefill of the first
    /// `prefill` tokens, then one step per token) and the full forward's logits, over every position of
    /// `tokens` `[n]` — 0 up to rounding when the KV cache is exact.
    let cacheDeviation (model: LongNetModel) (tokens: int[]) (prefill: int) : float =
        if prefill < 1 || prefill > tokens.Length then
            invalidArg "prefill" $"prefill must be in [1, {tokens.Length}], got {prefill}."

        let wasTraining = model.training
        model.eval ()

        try
            use _ = torch.no_grad ()
            use scope = torch.NewDisposeScope()
            let input = torch.tensor(tokens |> Array.map int64).view(1L, -1L)
            let full = model.forward input
            use cache = model.NewCache()
            let first = model.Prefill(input.narrow (1L, 0L, int64 prefill), cache)

            let mutable worst =
                (first - full.narrow (1L, 0L, int64 prefill))
                    .abs()
                    .max()
                    .to_type(torch.ScalarType.Float64)
                    .item<float>()

            for p in prefill .. tokens.Length - 1 do
                use step = torch.NewDisposeScope()
                let logits = model.Step(input.select (1L, int64 p), cache)

                let d =
                    (logits - full.select (1L, int64 p)).abs().max().to_type(torch.ScalarType.Float64).item<float>()

                worst <- max worst d

            worst
        finally
            if wasTraining then
                model.train ()
