/// The LongNet language model (Ding et al. 2023, arXiv 2307.02486, §4): token embedding, N pre-LN blocks of multi-head dilated
/// attention and a feed-forward network, a final LayerNorm and an output head tied to the embedding.
/// The decoder is causal and decodes incrementally with an exact KV cache; the encoder is non-causal.
/// Notation: b batch, n positions, e embedding width, V vocabulary size.
namespace LongNet.Modules

open System
open TorchSharp
open TorchSharp.Modules
open type TorchSharp.torch.nn
open LongNet
open LongNet.Distributed

/// One pre-LN block: x + attn(LN(x)), then x + drop(ffn(LN(x))).
[<Sealed>]
type LongNetBlock(name: string, config: ModelConfig, dilated: DilatedConfig) as this =
    inherit Module<torch.Tensor, torch.Tensor>(name)

    let e = int64 config.EmbedDim
    let attentionNorm = NormKind.create config.Norm e config.LayerNormEpsilon

    let attention =
        new MultiheadDilatedAttention("self_attn", ModelConfig.attention config dilated)

    let feedForwardNorm = NormKind.create config.Norm e config.LayerNormEpsilon

    let feedForward =
        new FeedForward(
            "ffn",
            config.EmbedDim,
            config.FeedForwardDim,
            config.FeedForward,
            config.SubLayerNorm,
            config.Bias,
            config.LayerNormEpsilon
        )

    let dropout = Dropout(config.Dropout)

    do
        this.register_module ("self_attn_layer_norm", attentionNorm)
        this.register_module ("self_attn", attention)
        this.register_module ("final_layer_norm", feedForwardNorm)
        this.register_module ("ffn", feedForward)
        this.register_module ("dropout", dropout)

    let feedForwardPart (x: torch.Tensor) =
        TensorOps.plus x (dropout.forward (feedForward.forward (feedForwardNorm.forward x)))

    /// The block's attention layer.
    member _.Attention = attention

    /// The block's feed-forward network.
    member _.FeedForward = feedForward

    /// `[b, n, e]` with precomputed `positions`; resets `cache` when given.
    member _.Forward(x: torch.Tensor, positions: PositionInputs, cache: LayerCache option) : torch.Tensor =
        use scope = torch.NewDisposeScope()

        let x =
            TensorOps.plus x (attention.Forward(attentionNorm.forward x, positions, cache))

        (feedForwardPart x).MoveToOuterDisposeScope()

    /// `[b, n, e]` → `[b, n, e]` without autograd, the feed-forward network run on at most `chunk`
    /// positions at a time (memory for one long window); the result equals `Forward` without a cache.
    member _.ForwardChunked(x: torch.Tensor, positions: PositionInputs, chunk: int) : torch.Tensor =
        use _ = torch.no_grad ()
        use scope = torch.NewDisposeScope()

        let h =
            TensorOps.plus x (attention.Forward(attentionNorm.forward x, positions, None))

        let n = h.shape.[1]

        for start in 0L .. int64 chunk .. n - 1L do
            use inner = torch.NewDisposeScope()
            let part = h.narrow (1L, start, min (int64 chunk) (n - start))

            part.add_ (dropout.forward (feedForward.forward (feedForwardNorm.forward part)))
            |> ignore

        h.MoveToOuterDisposeScope()

    /// This rank's slice `[b, slice.Length, e]` of a sequence split over the ranks of `slice`, with the
    /// position `tables` of its positions → `[b, slice.Length, e]`. Collective (see `SequenceSlice`).
    member _.ForwardSlice(x: torch.Tensor, tables: Rope.Tables option, slice: SequenceSlice) : torch.Tensor =
        use scope = torch.NewDisposeScope()

        let x =
            TensorOps.plus x (attention.ForwardSlice(attentionNorm.forward x, tables, slice))

        (feedForwardPart x).MoveToOuterDisposeScope()

    /// One decoding step `[b, 1, e]` → `[b, 1, e]` at position `cache.Next`.
    member _.Step(x: torch.Tensor, tables: Rope.Tables option, cache: LayerCache) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        let x = TensorOps.plus x (attention.Step(attentionNorm.forward x, tables, cache))
        (feedForwardPart x).MoveToOuterDisposeScope()

    /// `[b, n, e]` → `[b, n, e]` at positions 0 … n−1 (plain, unscaled position encoding).
    override b.forward(x: torch.Tensor) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        b.Forward(x, attention.PlainPositions(int x.shape.[1], x), None).MoveToOuterDisposeScope()

/// The LongNet model: token ids `[b, n]` (int64) → logits `[b, n, V]`. Build it after
/// `torch.manual_seed` for a reproducible initialisation.
[<Sealed>]
type LongNetModel(config: ModelConfig) as this =
    inherit Module<torch.Tensor, torch.Tensor>("longnet")

    let config =
        match ModelConfig.validate config with
        | Ok c -> c
        | Error e -> e.Raise()

    let dilated =
        match ModelConfig.dilated config with
        | Ok d -> d
        | Error e -> e.Raise()

    let e = int64 config.EmbedDim
    let embedding = Embedding(int64 config.VocabSize, e)
    let dropout = Dropout(config.Dropout)

    let blocks =
        ModuleList<LongNetBlock>(Array.init config.Layers (fun i -> new LongNetBlock($"layers.{i}", config, dilated)))

    let finalNorm = NormKind.create config.Norm e config.LayerNormEpsilon

    let head =
        if config.TiedEmbeddings then
            None
        else
            Some(Linear(e, int64 config.VocabSize, hasBias = false))

    let headDim = config.EmbedDim / config.Heads

    do
        this.register_module ("embed_tokens", embedding)
        this.register_module ("dropout", dropout)
        this.register_module ("layers", blocks)
        this.register_module ("layer_norm", finalNorm)
        head |> Option.iter (fun h -> this.register_module ("output_projection", h))

        // Initialisation: N(0, 0.02) for embeddings and projections, zero biases; the residual output
        // projections scaled by 1/sqrt(2·layers) (GPT-2). With sub-LN, Magneto's gain sqrt(log(2·layers))
        // on v, out and the feed-forward projections (xavier-normal), as torchscale does.
        use _ = torch.no_grad ()
        let std = 0.02
        let residualStd = std / sqrt (2.0 * float config.Layers)
        let magneto = sqrt (log (2.0 * float config.Layers))

        let normal (l: Linear) (s: float) =
            init.normal_ (l.weight, 0.0, s) |> ignore

            if not (isNull l.bias) then
                init.zeros_ l.bias |> ignore

        let xavier (l: Linear) =
            init.xavier_normal_ (l.weight, magneto) |> ignore

            if not (isNull l.bias) then
                init.zeros_ l.bias |> ignore

        // TorchSharp's Embedding.weight getter wraps a new handle on every call: free this one
        let embeddingWeight = embedding.weight
        init.normal_ (embeddingWeight, 0.0, std) |> ignore
        embeddingWeight.Dispose()
        head |> Option.iter (fun h -> normal h std)

        for block in blocks do
            match block.Attention.Projections with
            | [ q; k; v; o ] ->
                normal q std
                normal k std

                if config.SubLayerNorm then
                    xavier v
                    xavier o
                else
                    normal v std
                    normal o residualStd
            | _ -> ()

            for l in block.FeedForward.InputProjections do
                if config.SubLayerNorm then xavier l else normal l std

            if config.SubLayerNorm then
                xavier block.FeedForward.OutputProjection
            else
                normal block.FeedForward.OutputProjection residualStd

    // Token ids: int64 in [0, V) (checked before the embedding, whose own error names no parameter).
    let checkIds (tokens: torch.Tensor) =
        if tokens.dtype <> torch.ScalarType.Int64 then
            raise (ArgumentException($"tokens must be int64 token ids; got {tokens.dtype}.", "tokens"))

        if tokens.NumberOfElements > 0L then
            use scope = torch.NewDisposeScope()
            let lowest = tokens.min().item<int64>()
            let highest = tokens.max().item<int64>()

            if lowest < 0L || highest >= int64 config.VocabSize then
                raise (
                    ArgumentException(
                        $"tokens must be ids in [0, vocabSize = {config.VocabSize}); got ids from {lowest} to {highest}.",
                        "tokens"
                    )
                )

    let checkTokens (tokens: torch.Tensor) (total: int64) =
        if isNull (box tokens) then
            raise (ArgumentNullException "tokens")

        if tokens.Dimensions <> 2L then
            raise (ArgumentException($"tokens must be 2-D [batch, seq]; got {tokens.Dimensions}-D.", "tokens"))

        if tokens.shape.[1] < 1L then
            raise (ArgumentException("tokens must hold at least one position.", "tokens"))

        checkIds tokens

        if total > int64 config.MaxPositions then
            raise (
                ArgumentException(
                    $"the sequence has {total} tokens, more than the model's maxPositions {config.MaxPositions}.",
                    "tokens"
                )
            )

    let project (hidden: torch.Tensor) =
        match head with
        | Some h -> h.forward hidden
        | None -> functional.linear (hidden, embedding.weight)

    /// The validated configuration.
    member _.Config = config

    /// Whether the parameter `name` trains in a model with low-rank adapters: the adapters and the norms.
    static member TrainedWithAdapters(name: string) : bool =
        Lora.isAdapterParameter name
        || name.Contains "layer_norm"
        || name.Contains "inner_attn_ln"
        || name.Contains ".subln."

    /// The model's weights with every adapter folded into its projection (W + (α / r)·B·A), by parameter
    /// name, adapter factors left out — the weights of the same model without adapters (detached).
    member m.MergedWeights() : (string * torch.Tensor) list =
        let merged =
            dict
                [
                    for i in 0 .. config.Layers - 1 do
                        let attention = blocks.[i].Attention

                        for target, projection in
                            [
                                QueryProjection, "q_proj"
                                KeyProjection, "k_proj"
                                ValueProjection, "v_proj"
                                OutputProjection, "out_proj"
                            ] do
                            $"layers.{i}.self_attn.{projection}.weight", attention.MergedWeight target
                ]

        [
            for struct (name, p) in m.named_parameters () do
                if not (Lora.isAdapterParameter name) then
                    match merged.TryGetValue name with
                    | true, w -> name, w
                    | _ -> name, p.detach ()
        ]

    /// The dilated-attention configuration shared by every block.
    member _.Dilated = dilated

    /// The number of trainable parameters (tied weights counted once).
    member m.ParameterCount: int64 = m.parameters () |> Seq.sumBy _.numel()

    /// The position inputs of `positions` at current length `length`, with the configured scaling or
    /// `scaling` instead (e.g. one CRD draw's NTK scale in training).
    member _.Positions
        (positions: int64[], length: int, scaling: ScalingMethod option, dtype: torch.ScalarType, device: torch.Device)
        : PositionInputs =
        match config.Position, defaultArg scaling config.PositionScaling with
        | Rope r, PlainRope ->
            {
                Tables = Rope.tables config.Position headDim positions dtype device
                Rotation = Some(Casm.SelectMerge.ropeRotation r headDim)
            }
        | Rope r, method ->
            let settings = { Base = r.Base; Method = method }

            {
                Tables = Some(ScaledRope.tables settings headDim length positions dtype device)
                Rotation =
                    Some
                        {
                            Frequencies = ScaledRope.inverseFrequencies settings headDim length
                            Amplitude = ScaledRope.attentionScale settings
                        }
            }
        | other, _ ->
            {
                Tables = Rope.tables other headDim positions dtype device
                Rotation = None
            }

    /// Whether `Prefill`/`Step` decode with an exact KV cache (see `ModelConfig.supportsKvCache`);
    /// otherwise generation recomputes the full forward for every new token.
    member _.SupportsKvCache = ModelConfig.supportsKvCache config

    /// The transformer's output `[b, n, e]` after the final LayerNorm for tokens at `positions` (n of
    /// them, ≥ 0 and strictly ascending) with the configured position scaling or `scaling` instead. When
    /// `cache` is given (decoder with a KV cache; positions must then be 0 … n−1), it is reset to continue
    /// at position n. Raises ArgumentException naming `positions` otherwise.
    member m.HiddenAt
        (tokens: torch.Tensor, positions: int64[], scaling: ScalingMethod option, cache: KvCache option)
        : torch.Tensor =
        checkTokens tokens (if tokens.Dimensions = 2L then tokens.shape.[1] else 0L)

        if int64 positions.Length <> tokens.shape.[1] then
            invalidArg "positions" $"positions has {positions.Length} entries for {tokens.shape.[1]} tokens."

        match positions |> Array.tryFindIndex (fun p -> p < 0L) with
        | Some i -> invalidArg "positions" $"positions must be ≥ 0, got positions.[{i}] = {positions.[i]}."
        | None -> ()

        match Array.pairwise positions |> Array.tryFindIndex (fun (a, b) -> b <= a) with
        | Some i ->
            invalidArg
                "positions"
                $"positions must be strictly ascending, got positions.[{i}] = {positions.[i]} then {positions.[i + 1]}."
        | None -> ()

        // a distance bias is computed from sequence indices: positions with gaps would be misread
        match config.Position with
        | DistanceBiased _ when Array.pairwise positions |> Array.exists (fun (a, b) -> b <> a + 1L) ->
            invalidArg
                "positions"
                "a distance-biased model takes consecutive positions (its bias is computed from sequence indices)."
        | _ -> ()

        if
            cache.IsSome
            && positions |> Array.mapi (fun i p -> p <> int64 i) |> Array.exists id
        then
            invalidArg "positions" "with a KV cache, positions must be 0 … n−1 (the cache continues at position n)."

        match cache with
        | Some c when c.Layers <> config.Layers ->
            invalidArg "cache" $"the cache has {c.Layers} layers; the model has {config.Layers}."
        | Some _ when config.Architecture = Encoder ->
            invalidOp "a KV cache needs a decoder; this model is an encoder (non-causal)."
        | Some _ when not m.SupportsKvCache ->
            invalidOp
                "this model has no KV cache (select-and-merge attention or a length-dependent position scaling); generation recomputes the full forward."
        | _ -> ()

        use scope = torch.NewDisposeScope()
        let n = tokens.shape.[1]
        let x = dropout.forward (embedding.forward tokens)
        let inputs = m.Positions(positions, int n, scaling, x.dtype, x.device)
        let mutable x = x

        for i in 0 .. config.Layers - 1 do
            x <- blocks.[i].Forward(x, inputs, cache |> Option.map _.Layer(i))

        cache |> Option.iter (fun c -> c.Position <- n)
        (finalNorm.forward x).MoveToOuterDisposeScope()

    /// The transformer's output `[b, n, e]` after the final LayerNorm, at positions 0 … n−1 (the
    /// encoder's representation). When `cache` is given (decoder), it is reset to continue at position n.
    member m.Hidden(tokens: torch.Tensor, cache: KvCache option) : torch.Tensor =
        let n =
            if isNull (box tokens) || tokens.Dimensions = 0L then
                0
            else
                int tokens.shape.[tokens.shape.Length - 1]

        m.HiddenAt(tokens, Array.init n int64, None, cache)

    /// The transformer's output `[b, slice.Length, e]` after the final LayerNorm for this rank's slice
    /// `tokens` `[b, slice.Length]` of a sequence split over the ranks of `slice` (positions `slice.Start …`):
    /// embeddings, feed-forward networks and norms run locally, attention with the other ranks, so the
    /// ranks' outputs together equal `Hidden` of the whole sequence. Collective (see `SequenceSlice`).
    member _.HiddenSlice(tokens: torch.Tensor, slice: SequenceSlice) : torch.Tensor =
        checkTokens tokens slice.Total

        if tokens.shape.[1] <> slice.Length then
            raise (
                ArgumentException(
                    $"rank {slice.Communicator.Rank} holds positions [{slice.Start}, {slice.Start + slice.Length}) of {slice.Total}: tokens must be [batch, {slice.Length}]; got {tokens.shape.[1]} positions.",
                    "tokens"
                )
            )

        use scope = torch.NewDisposeScope()
        let x = dropout.forward (embedding.forward tokens)
        let tables = Rope.tables config.Position headDim slice.Positions x.dtype x.device
        let mutable x = x

        for i in 0 .. config.Layers - 1 do
            x <- blocks.[i].ForwardSlice(x, tables, slice)

        (finalNorm.forward x).MoveToOuterDisposeScope()

    /// Logits `[b, slice.Length, V]` of this rank's slice `tokens` `[b, slice.Length]` of a sequence split
    /// over the ranks of `slice` (see `HiddenSlice`). Collective.
    member m.ForwardSlice(tokens: torch.Tensor, slice: SequenceSlice) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        (project (m.HiddenSlice(tokens, slice))).MoveToOuterDisposeScope()

    /// Logits `[b, n, V]` for every position of `tokens` `[b, n]`.
    override m.forward(tokens: torch.Tensor) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        (project (m.Hidden(tokens, None))).MoveToOuterDisposeScope()

    /// Logits `[b, n, V]` of `tokens` `[b, n]` placed at `positions` (n, ≥ 0, strictly ascending) with the configured
    /// scaling or `scaling` instead — how CRD NTK fine-tuning runs a sample at its drawn positions and scale.
    member m.ForwardAt(tokens: torch.Tensor, positions: int64[], scaling: ScalingMethod option) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        (project (m.HiddenAt(tokens, positions, scaling, None))).MoveToOuterDisposeScope()

    // The blocks' output `[b, n, e]` (before the final norm) of `tokens` at positions 0 … n−1, layer by
    // layer with the feed-forward networks on at most `chunk` positions at a time (call without autograd).
    member private m.BodyChunked(tokens: torch.Tensor, chunk: int) : torch.Tensor =
        let n = tokens.shape.[1]
        let x = embedding.forward tokens
        let inputs = m.Positions(Array.init (int n) int64, int n, None, x.dtype, x.device)
        let mutable x = x

        for i in 0 .. config.Layers - 1 do
            let next = blocks.[i].ForwardChunked(x, inputs, chunk)
            x.Dispose()
            x <- next

        x

    /// The most likely next token `[b, count]` (int64) after each of the last `count` positions of
    /// `tokens` `[b, n]`, without autograd and layer by layer as `NllChunked` — the greedy choices along a
    /// given continuation, for very long prompts.
    member m.GreedyTail(tokens: torch.Tensor, count: int, chunk: int) : torch.Tensor =
        checkTokens tokens (if tokens.Dimensions = 2L then tokens.shape.[1] else 0L)

        if chunk < 1 then
            invalidArg "chunk" $"chunk must be ≥ 1, got {chunk}."

        if config.Architecture <> Decoder then
            invalidOp "greedy choices need a decoder; this model is an encoder (non-causal)."

        if count < 1 || int64 count > tokens.shape.[1] then
            raise (
                ArgumentOutOfRangeException(
                    "count",
                    box count,
                    $"count must be in [1, {tokens.shape.[1]}] (the tokens given), got {count}."
                )
            )

        use _ = torch.no_grad ()
        use scope = torch.NewDisposeScope()
        let x = m.BodyChunked(tokens, chunk)
        let tail = x.narrow (1L, x.shape.[1] - int64 count, int64 count)
        (project (finalNorm.forward tail)).argmax(-1L).MoveToOuterDisposeScope()

    /// The negative log-likelihood `[b, n]` (float32; float64 for a float64 model) of `targets` `[b, n]`
    /// after `tokens` `[b, n]`, without autograd and layer by layer, the feed-forward networks and the
    /// output head run on at most `chunk` positions at a time — memory linear in n with a small constant,
    /// for very long windows.
    member m.NllChunked(tokens: torch.Tensor, targets: torch.Tensor, chunk: int) : torch.Tensor =
        checkTokens tokens (if tokens.Dimensions = 2L then tokens.shape.[1] else 0L)

        if chunk < 1 then
            invalidArg "chunk" $"chunk must be ≥ 1, got {chunk}."

        if isNull (box targets) || targets.shape <> tokens.shape then
            invalidArg "targets" "targets must have the shape of tokens."

        use _ = torch.no_grad ()
        use scope = torch.NewDisposeScope()
        let n = tokens.shape.[1]
        let x = m.BodyChunked(tokens, chunk)

        let wide =
            if x.dtype = torch.ScalarType.Float64 then
                torch.ScalarType.Float64
            else
                torch.ScalarType.Float32

        let nll = torch.empty ([| tokens.shape.[0]; n |], wide)

        for start in 0L .. int64 chunk .. n - 1L do
            use inner = torch.NewDisposeScope()
            let length = min (int64 chunk) (n - start)
            let logits = project (finalNorm.forward (x.narrow (1L, start, length)))

            let part =
                torch.nn.functional.cross_entropy (
                    logits.to_type(wide).reshape(-1L, logits.shape.[2]),
                    targets.narrow(1L, start, length).reshape -1L,
                    reduction = torch.nn.Reduction.None
                )

            nll.narrow(1L, start, length).copy_(part.view (tokens.shape.[0], length))
            |> ignore

        nll.MoveToOuterDisposeScope()

    /// A fresh, empty KV cache for this model.
    member _.NewCache() : KvCache = new KvCache(config.Layers)

    /// Runs the prompt `tokens` `[b, n]` through the model, fills `cache` for decoding from position n
    /// and returns the logits `[b, n, V]`. Needs `SupportsKvCache`.
    member m.Prefill(tokens: torch.Tensor, cache: KvCache) : torch.Tensor =
        use scope = torch.NewDisposeScope()
        (project (m.Hidden(tokens, Some cache))).MoveToOuterDisposeScope()

    /// Decodes one token per batch item, `tokens` `[b]`, at position `cache.Position`; returns the
    /// logits `[b, V]` — equal to the full forward's logits at that position — and advances the cache.
    /// Needs `SupportsKvCache`.
    member m.Step(tokens: torch.Tensor, cache: KvCache) : torch.Tensor =
        if config.Architecture = Encoder then
            invalidOp "incremental decoding needs a decoder; this model is an encoder (non-causal)."

        if not m.SupportsKvCache then
            invalidOp
                "this model has no KV cache (select-and-merge attention or a length-dependent position scaling); generation recomputes the full forward."

        if cache.Layers <> config.Layers then
            invalidArg "cache" $"the cache has {cache.Layers} layers; the model has {config.Layers}."

        if isNull (box tokens) then
            raise (ArgumentNullException "tokens")

        if tokens.Dimensions <> 1L || tokens.shape.[0] < 1L then
            raise (ArgumentException($"tokens must be 1-D [batch ≥ 1]; got {tokens.Dimensions}-D.", "tokens"))

        checkIds tokens
        let p = cache.Position

        if p >= int64 config.MaxPositions then
            invalidOp $"position {p} is past the model's maxPositions {config.MaxPositions}."

        use scope = torch.NewDisposeScope()
        let x = dropout.forward (embedding.forward (tokens.reshape (-1L, 1L)))
        let tables = m.Positions([| p |], int p + 1, None, x.dtype, x.device).Tables
        let mutable x = x

        for i in 0 .. config.Layers - 1 do
            x <- blocks.[i].Step(x, tables, cache.Layer i)

        cache.Position <- p + 1L
        (project (finalNorm.forward x)).squeeze(1L).MoveToOuterDisposeScope()
