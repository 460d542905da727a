/// Multi-head attention on `[batch, seq, embed]` — dilated (default), dense or select-and-merge:
/// q/k/v/out projections, optional RoPE or xPos,
/// optional sub-LN (Magneto: a LayerNorm before the output projection), dropout on the output.
/// A drop-in for `torch.nn.MultiheadAttention(batch_first = true)` self-attention with the softmax
/// replaced by `DilatedAttention`; also decodes one token at a time against a `LayerCache`.
/// Notation: b batch, n positions, e embedding width, h heads, d = e / h head width.
namespace LongNet.Modules

open System
open TorchSharp
open TorchSharp.Modules
open type TorchSharp.torch.nn
open LongNet
open LongNet.Distributed

/// Settings of select-and-merge attention in a model layer; causality comes from the layer.
type SelectMergeOptions =
    {
        /// Rows per block b (≥ 1).
        BlockSize: int
        /// Key blocks each query group keeps besides its own (and the sink) (≥ 0).
        TopK: int
        /// Adjacent query blocks sharing one selection m (≥ 1).
        MergeFactor: int
        /// Always keep key block 0 (an attention sink).
        Sink: bool
        /// Rotate q/k at positions renumbered over the merged sequence instead of original positions.
        RenumberPositions: bool
        /// Blocks right before each query group that it always keeps (≥ 0): a local window.
        LocalBlocks: int
        /// How candidate blocks are ranked and weighted (the paper's correlation, or trainable).
        Selection: Casm.BlockSelection
    }

/// Which attention a layer computes.
[<RequireQualifiedAccess>]
type AttentionKind =
    /// LongNet dilated attention over the configured groups (exact KV-cache decoding).
    | Dilated
    /// Full softmax attention (exact KV-cache decoding).
    | Dense
    /// CASM select-and-merge block-sparse attention (no KV cache: decoding recomputes).
    | SelectMerge of SelectMergeOptions

/// The position encoding of one forward pass over positions p₀ … p₀+n−1.
type PositionInputs =
    {
        /// Rotation tables at the original positions (`None`: no position encoding, or applied by `Rotation`).
        Tables: Rope.Tables option
        /// The rotation renumbered select-merge applies itself to the merged sequences.
        Rotation: Casm.SelectMerge.Rotation option
    }

/// Settings of one multi-head dilated attention layer.
type AttentionSettings =
    {
        /// The embedding width e (a multiple of `Heads`).
        Embed: int
        /// The number of heads h.
        Heads: int
        /// Groups, head offsets, causality and scale of the dilated attention (for dense attention, one
        /// group that covers every position: the KV cache of dense decoding).
        Dilated: DilatedConfig
        /// Which attention the layer computes (causality and scale from `Dilated` for every kind).
        Attention: AttentionKind
        /// Relative positions applied to queries and keys.
        Position: PositionEncoding
        /// Magneto's sub-LN: a LayerNorm over the attention output before the output projection.
        SubLayerNorm: bool
        /// Dropout probability on the layer's output (training only).
        Dropout: float
        /// Whether the projections have biases.
        Bias: bool
        /// ε of the sub-LN.
        LayerNormEpsilon: float
        /// Smeared keys: each position's key is mixed with the previous position's, k'ₚ = g·kₚ + (1 − g)·kₚ₋₁,
        /// with a learnt gate g per head (before the position encoding) — one layer can then match "the
        /// token before this key" (an induction head) without a previous-token head below it.
        SmearedKeys: bool
        /// Key/value heads (grouped-query attention): a divisor of `Heads`; query head j reads key/value
        /// head j / (Heads / KvHeads). Equal to `Heads` for ordinary multi-head attention.
        KvHeads: int
        /// Low-rank adapters on the projections (`None`: none).
        Lora: LoraSettings option
    }

/// Validation of `AttentionSettings`.
module AttentionSettings =
    /// Checks the widths, heads and dropout; errors name the field.
    let validate (s: AttentionSettings) : Result<AttentionSettings, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

        if s.Embed < 1 then
            error "embedDim" $"embedDim must be ≥ 1, got {s.Embed}."
        elif s.Heads < 1 then
            error "heads" $"heads must be ≥ 1, got {s.Heads}."
        elif s.Embed % s.Heads <> 0 then
            error "heads" $"embedDim ({s.Embed}) must be a multiple of heads ({s.Heads})."
        elif s.KvHeads < 1 || s.KvHeads > s.Heads || s.Heads % s.KvHeads <> 0 then
            error "kvHeads" $"kvHeads must be a divisor of heads ({s.Heads}), got {s.KvHeads}."
        elif not (s.Dropout >= 0.0 && s.Dropout < 1.0) then
            error "dropout" $"dropout must be in [0, 1), got {s.Dropout}."
        elif
            (match s.Lora with
             | Some lora -> Result.isError (Lora.validate s.Embed lora)
             | None -> false)
        then
            Lora.validate s.Embed s.Lora.Value |> Result.map (fun _ -> s)
        else
            let selectMerge =
                match s.Attention with
                | AttentionKind.SelectMerge o when o.BlockSize < 1 ->
                    error "selectMerge.blockSize" $"selectMerge.blockSize must be ≥ 1, got {o.BlockSize}."
                | AttentionKind.SelectMerge o when o.TopK < 0 ->
                    error "selectMerge.topK" $"selectMerge.topK must be ≥ 0, got {o.TopK}."
                | AttentionKind.SelectMerge o when o.Selection = Casm.BlockSelection.Trainable && o.TopK < 2 ->
                    error
                        "selectMerge.topK"
                        $"selectMerge.topK must be ≥ 2 with selection \"trainable\" (a softmax over one chosen block is constant, so nothing would train it), got {o.TopK}."
                | AttentionKind.SelectMerge o when o.LocalBlocks < 0 ->
                    error "selectMerge.localBlocks" $"selectMerge.localBlocks must be ≥ 0, got {o.LocalBlocks}."
                | AttentionKind.SelectMerge o when o.MergeFactor < 1 ->
                    error "selectMerge.mergeFactor" $"selectMerge.mergeFactor must be ≥ 1, got {o.MergeFactor}."
                | AttentionKind.SelectMerge o when
                    o.RenumberPositions
                    && (match s.Position with
                        | XPos _ -> true
                        | _ -> false)
                    ->
                    error
                        "selectMerge.renumberPositions"
                        "selectMerge.renumberPositions needs position \"rope\" or \"none\" (xPos amplitudes depend on original positions)."
                | AttentionKind.SelectMerge _ when
                    (match s.Position with
                     | DistanceBiased _ -> true
                     | _ -> false)
                    ->
                    error
                        "position"
                        "position \"distance-bias\" needs attention \"dilated\" or \"dense\" (select-and-merge has no score bias)."
                | _ -> Ok s

            match selectMerge with
            | Error e -> Error e
            | Ok _ ->
                match s.Position with
                | NoPosition -> Ok s
                | DistanceBiased _ -> Rope.distanceBias s.Position s.Heads |> Result.map (fun _ -> s)
                | Rope _
                | XPos _ when (s.Embed / s.Heads) % 2 <> 0 ->
                    error
                        "position"
                        $"rotary positions need an even head width; embedDim / heads = {s.Embed / s.Heads}. Change embedDim or heads, or use position \"none\"."
                | Rope r when not (r.Base > 1.0) -> error "ropeBase" $"ropeBase must be > 1, got {r.Base}."
                | XPos x when not (x.Base > 1.0) -> error "ropeBase" $"ropeBase must be > 1, got {x.Base}."
                | XPos x when not (x.ScaleBase > 0.0) ->
                    error "xposScaleBase" $"xposScaleBase must be > 0, got {x.ScaleBase}."
                | _ -> Ok s

/// Multi-head dilated self-attention `[b, n, e]` → `[b, n, e]`.
[<Sealed>]
type MultiheadDilatedAttention(name: string, settings: AttentionSettings) as this =
    inherit Module<torch.Tensor, torch.Tensor>(name)

    let settings =
        match AttentionSettings.validate settings with
        | Ok s -> s
        | Error e -> e.Raise()

    let e = int64 settings.Embed
    let h = int64 settings.Heads
    let d = e / h
    let kvHeads = int64 settings.KvHeads
    // the width of the key and value projections: kvHeads · d
    let kvE = kvHeads * d
    let query = Linear(e, e, hasBias = settings.Bias)
    let key = Linear(e, kvE, hasBias = settings.Bias)
    let value = Linear(e, kvE, hasBias = settings.Bias)
    let output = Linear(e, e, hasBias = settings.Bias)
    let dropout = Dropout(settings.Dropout)

    let subLayerNorm =
        if settings.SubLayerNorm then
            Some(LayerNorm([| e |], settings.LayerNormEpsilon))
        else
            None

    do
        this.register_module ("q_proj", query)
        this.register_module ("k_proj", key)
        this.register_module ("v_proj", value)
        this.register_module ("out_proj", output)
        this.register_module ("dropout", dropout)
        subLayerNorm |> Option.iter (fun m -> this.register_module ("inner_attn_ln", m))

    // the adapted projections and their input and output widths
    let adapted =
        match settings.Lora with
        | None -> []
        | Some lora ->
            lora.Targets
            |> List.map (fun target ->
                target,
                match target with
                | QueryProjection -> e, e
                | KeyProjection
                | ValueProjection -> e, kvE
                | OutputProjection -> e, e)

    // A [r, in] uniform in ±1/√in (as a linear layer's weight), B [out, r] zero: the update starts at 0
    do
        for target, (inputs, outputs) in adapted do
            let rank = int64 settings.Lora.Value.Rank
            let bound = 1.0 / sqrt (float inputs)

            let start =
                use scope = torch.NewDisposeScope()
                ((torch.rand (rank, inputs) * 2.0 - 1.0) * bound).MoveToOuterDisposeScope()

            let a = Parameter(start)
            let b = Parameter(torch.zeros (outputs, rank))

            for factor, p in [ 'a', a; 'b', b ] do
                p.DetachFromDisposeScope() |> ignore
                this.register_parameter (Lora.parameterName target factor, p)

    let loraScaling =
        settings.Lora |> Option.map Lora.scaling |> Option.defaultValue 0.0

    // y = W x (+ bias) + (α / r)·B·A x where the projection carries an adapter
    let project (target: LoraTarget) (linear: Linear) (x: torch.Tensor) =
        let y = linear.forward x

        if adapted |> List.exists (fun (t, _) -> t = target) then
            // looked up by name: moving the module to another dtype or device replaces the parameter
            let a = this.get_parameter (Lora.parameterName target 'a')
            let b = this.get_parameter (Lora.parameterName target 'b')
            y + x.matmul(a.t ()).matmul(b.t ()) * loraScaling
        else
            y

    // the dilated configuration with the position encoding's distance bias, if any
    let dilated =
        match
            Rope.distanceBias settings.Position settings.Heads
            |> Result.bind (fun bias -> DilatedConfig.withBias bias settings.Dilated)
        with
        | Ok config -> config
        | Error e -> e.Raise()

    let causal = dilated.Causal
    let scale = DilatedConfig.scaleFor dilated (int d)

    // the smearing gates' logits, one per head (g = sigmoid, ½ at the start)
    do
        if settings.SmearedKeys then
            // owned by the module, not by a dispose scope the module happens to be built in
            let gates = Parameter(torch.zeros [| kvHeads |])
            gates.DetachFromDisposeScope() |> ignore
            this.register_parameter ("k_smear", gates)

    // k'ₚ = g·kₚ + (1 − g)·kₚ₋₁ over raw keys `[b, n, e]`; `previous` `[b, 1, e]` is the raw key before
    // position 0 (zeros at the start of a sequence).
    let smear (previous: torch.Tensor option) (k: torch.Tensor) =
        if not settings.SmearedKeys then
            k
        else
            use scope = torch.NewDisposeScope()
            // looked up by name: moving the module to another dtype or device replaces the parameter
            let logits = this.get_parameter "k_smear"
            let gate = torch.sigmoid(logits).repeat_interleave(d).view(1L, 1L, kvE)
            let n = k.shape.[1]

            let before =
                match previous with
                | Some p -> p
                | None -> torch.zeros_like (k.narrow (1L, 0L, 1L))

            let shifted =
                if n = 1L then
                    before
                else
                    torch.cat ([| before; k.narrow (1L, 0L, n - 1L) |], 1L)

            // g·k + (1 − g)·shifted, with no temporary Scalar
            torch.lerp(shifted, k, gate).MoveToOuterDisposeScope()

    // The layer's attention over rotated q, k (or raw q, k when renumbered select-merge rotates them):
    // dilated on the default kernel (libtorch's fused kernels where they serve the dtype and device, with
    // their exact backward), dense as one covering group on the same kernels, or select-and-merge.
    let attend (rotation: Casm.SelectMerge.Rotation option) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) =
        match settings.Attention with
        | AttentionKind.Dilated -> DilatedAttention.forward dilated q k v
        | AttentionKind.Dense ->
            // one group whose segment covers the sequence, with r = 1: dense attention, on the same kernels
            let whole =
                { DilatedConfig.createOrRaise [ int q.shape.[2] ] [ 1 ] dilated.Offsets causal dilated.Scale with
                    Bias = dilated.Bias
                }

            DilatedAttention.forward whole q k v
        | AttentionKind.SelectMerge o ->
            let config =
                { Casm.SelectMergeConfig.create o.BlockSize o.TopK o.MergeFactor o.Sink causal o.RenumberPositions with
                    LocalBlocks = o.LocalBlocks
                    Selection = o.Selection
                }
                |> Casm.SelectMergeConfig.validate

            fst (Casm.SelectMerge.attendRotated config rotation scale q k v)

    let rotates (positions: PositionInputs) =
        match settings.Attention, positions.Rotation with
        | AttentionKind.SelectMerge o, Some _ when o.RenumberPositions -> None
        | _ -> positions.Tables

    // Inputs `[b ≥ 1, n ≥ 1, e]` of the layer's dtype and device (checked before any projection).
    let shapeText (t: torch.Tensor) = "[" + String.Join(", ", t.shape) + "]"

    let checkInput (parameter: string) (x: torch.Tensor) =
        if isNull (box x) then
            raise (ArgumentNullException parameter)

        if x.Dimensions <> 3L || x.shape.[0] < 1L || x.shape.[1] < 1L || x.shape.[2] <> e then
            raise (
                ArgumentException(
                    $"{parameter} must be [batch ≥ 1, seq ≥ 1, embed = {e}]; got shape {shapeText x}.",
                    parameter
                )
            )

        let weight = query.weight

        if x.dtype <> weight.dtype then
            raise (
                ArgumentException($"{parameter} must have the layer's dtype {weight.dtype}; got {x.dtype}.", parameter)
            )

        if x.device_type <> weight.device_type || x.device_index <> weight.device_index then
            raise (
                ArgumentException(
                    $"{parameter} must be on the layer's device {weight.device}; got {x.device}.",
                    parameter
                )
            )

    // The rotation select-merge applies itself: only at renumbered positions; at original positions q and
    // k were already rotated by `rotates`' tables (at the true positions), so a second rotation is wrong.
    let ownRotation (positions: PositionInputs) =
        match settings.Attention with
        | AttentionKind.SelectMerge o when o.RenumberPositions -> positions.Rotation
        | _ -> None

    let splitHeads (x: torch.Tensor) =
        // [b, n, e] → [b, h, n, d]
        x.view(x.shape.[0], x.shape.[1], h, d).transpose(1L, 2L)

    // [b, n, kvHeads·d] → [b, h, n, d]: each key/value head repeated for the query heads that share it
    // keys or values [b, n, kvHeads·d] → [b, kvHeads, n, d]: the form the KV cache stores
    let splitCompact (x: torch.Tensor) =
        x.view(x.shape.[0], x.shape.[1], kvHeads, d).transpose(1L, 2L)

    // [b, kvHeads, n, d] → [b, h, n, d]: key/value head i serves query heads i·g … i·g + g − 1
    let expandHeads (x: torch.Tensor) =
        if kvHeads = h then
            x
        else
            x.repeat_interleave (h / kvHeads, 1L)

    let splitKeyValueHeads (x: torch.Tensor) = expandHeads (splitCompact x)

    let finish (attended: torch.Tensor) =
        // [b, h, n, d] → [b, n, e] → sub-LN → out projection → dropout
        let b, n = attended.shape.[0], attended.shape.[2]
        let merged = attended.transpose(1L, 2L).reshape(b, n, e)

        let merged =
            match subLayerNorm with
            | Some m -> m.forward merged
            | None -> merged

        dropout.forward (project OutputProjection output merged)

    /// The settings this layer was built with.
    member _.Settings = settings

    /// The width of one head, e / h.
    member _.HeadDim = int d

    /// The query, key, value and output projections (for initialisation), in that order.
    member _.Projections: Linear list = [ query; key; value; output ]

    /// The weight of a projection with its adapter folded in, W + (α / r)·B·A (detached; W itself when
    /// the projection has no adapter).
    member _.MergedWeight(target: LoraTarget) : torch.Tensor =
        use _ = torch.no_grad ()

        let linear =
            match target with
            | QueryProjection -> query
            | KeyProjection -> key
            | ValueProjection -> value
            | OutputProjection -> output

        if adapted |> List.exists (fun (t, _) -> t = target) then
            let a = this.get_parameter (Lora.parameterName target 'a')
            let b = this.get_parameter (Lora.parameterName target 'b')
            use scope = torch.NewDisposeScope()
            (linear.weight + b.matmul a * loraScaling).detach().MoveToOuterDisposeScope()
        else
            linear.weight.detach ()

    /// Whether the layer can decode incrementally against a `LayerCache` (dilated or dense, causal).
    member _.SupportsCache =
        causal
        && (match settings.Attention with
            | AttentionKind.SelectMerge _ -> false
            | _ -> true)

    /// Self-attention over `[b, n, e]` with precomputed `positions` (see `Rope.tables`). When `cache` is
    /// given (dilated or dense only) it is reset to hold the keys and values that later decoding steps
    /// (positions ≥ n) need.
    member m.Forward(x: torch.Tensor, positions: PositionInputs, cache: LayerCache option) : torch.Tensor =
        checkInput "x" x
        use scope = torch.NewDisposeScope()
        let n = x.shape.[1]

        let rawKeys = project KeyProjection key x

        let q, compactKeys =
            Rope.apply
                (rotates positions)
                (splitHeads (project QueryProjection query x))
                (splitCompact (smear None rawKeys))

        let compactValues = splitCompact (project ValueProjection value x)

        match cache with
        | Some _ when not m.SupportsCache ->
            invalidOp "select-and-merge attention has no KV cache; decode by recomputing the full forward."
        | Some c ->
            // the cache holds the kvHeads heads, not their copies per query head
            let first = KvCache.firstNeeded dilated n
            c.Reset(first, compactKeys.narrow (2L, first, n - first), compactValues.narrow (2L, first, n - first))

            if settings.SmearedKeys then
                c.SetPreviousKey(rawKeys.narrow (1L, n - 1L, 1L))
        | None -> ()

        let attended =
            attend (ownRotation positions) q (expandHeads compactKeys) (expandHeads compactValues)

        (finish attended).MoveToOuterDisposeScope()

    /// Self-attention of this rank's slice `[b, slice.Length, e]` of a sequence split over the ranks of
    /// `slice` (positions `slice.Start …`, whose position `tables` are given) → `[b, slice.Length, e]`:
    /// the projections run locally, the dilated attention with the other ranks (`SequenceSlice.Attend`).
    /// Collective: every rank calls it, and its backward, in the same order.
    member _.ForwardSlice(x: torch.Tensor, tables: Rope.Tables option, slice: SequenceSlice) : torch.Tensor =
        checkInput "x" x

        if settings.SmearedKeys then
            invalidOp
                "smeared keys need the key before each slice's first position; sequence-parallel attention does not exchange it (train in one process)."

        use scope = torch.NewDisposeScope()

        let q, k =
            Rope.apply
                tables
                (splitHeads (project QueryProjection query x))
                (splitKeyValueHeads (project KeyProjection key x))

        let v = splitKeyValueHeads (project ValueProjection value x)
        let attended = slice.Attend(dilated, q, k, v)
        (finish attended).MoveToOuterDisposeScope()

    /// Drop-in multi-head attention: `query`, `key`, `value` `[b, n, e]` (one length n) at positions
    /// 0 … n−1 → `[b, n, e]` (plain, unscaled position encoding).
    member m.Forward(queryInput: torch.Tensor, keyInput: torch.Tensor, valueInput: torch.Tensor) : torch.Tensor =
        checkInput "query" queryInput

        for name, t in [ "key", keyInput; "value", valueInput ] do
            checkInput name t

            if t.shape <> queryInput.shape then
                raise (
                    ArgumentException(
                        $"{name} must have the query's shape {shapeText queryInput}; got {shapeText t}.",
                        name
                    )
                )

        use scope = torch.NewDisposeScope()
        let n = queryInput.shape.[1]
        let positions = m.PlainPositions(int n, queryInput)

        let q, k =
            Rope.apply
                (rotates positions)
                (splitHeads (project QueryProjection query queryInput))
                (splitKeyValueHeads (smear None (project KeyProjection key keyInput)))

        let v = splitKeyValueHeads (project ValueProjection value valueInput)
        let attended = attend (ownRotation positions) q k v
        (finish attended).MoveToOuterDisposeScope()

    /// The unscaled position inputs of positions 0 … n−1 in the dtype and device of `like`.
    member _.PlainPositions(n: int, like: torch.Tensor) : PositionInputs =
        {
            Tables = Rope.tables settings.Position (int d) (Array.init n int64) like.dtype like.device
            Rotation =
                match settings.Position with
                | Rope r -> Some(Casm.SelectMerge.ropeRotation r (int d))
                | _ -> None
        }

    /// One decoding step: `x` `[b, 1, e]` is the token at position `cache.Next` (whose position `tables`
    /// are given); appends its key and value to `cache`, attends over it exactly as the full forward
    /// would, drops keys no later query needs, and returns `[b, 1, e]`. Causal dilated or dense layers only.
    member m.Step(x: torch.Tensor, tables: Rope.Tables option, cache: LayerCache) : torch.Tensor =
        if not causal then
            invalidOp "incremental decoding needs causal attention; this layer is non-causal (an encoder)."

        if not m.SupportsCache then
            invalidOp "select-and-merge attention has no KV cache; decode by recomputing the full forward."

        checkInput "x" x

        if x.shape.[1] <> 1L then
            raise (ArgumentException($"x must hold one position [batch, 1, embed]; got {x.shape.[1]}.", "x"))

        use scope = torch.NewDisposeScope()
        let p = cache.Next

        let rawKey = project KeyProjection key x

        let smeared =
            match cache.PreviousKey with
            | Some previous -> smear (Some previous) rawKey
            | None -> smear None rawKey

        let q, k =
            Rope.apply tables (splitHeads (project QueryProjection query x)) (splitCompact smeared)

        let v = splitCompact (project ValueProjection value x)

        if settings.SmearedKeys then
            cache.SetPreviousKey rawKey

        cache.Append(k, v)
        let attended, _ = KvCache.attendStep dilated p cache q
        cache.DropBefore(KvCache.firstNeeded dilated (p + 1L))
        (finish attended).MoveToOuterDisposeScope()

    /// Self-attention over `[b, n, e]` at positions 0 … n−1 (plain, unscaled position encoding).
    override m.forward(x: torch.Tensor) : torch.Tensor =
        checkInput "x" x
        use scope = torch.NewDisposeScope()
        m.Forward(x, m.PlainPositions(int x.shape.[1], x), None).MoveToOuterDisposeScope()
