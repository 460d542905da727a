/// The configuration of a LongNet language model (Ding et al. 2023, arXiv 2307.02486, §4): a Transformer whose attention is
/// dilated attention. A record with defaults, a validating check that names the offending field, and a
/// JSON form (camelCase field names, every field optional).
namespace LongNet.Modules

open System
open System.Text.Json.Nodes
open LongNet

/// Whether the model is a causal decoder (language model) or a non-causal encoder.
type Architecture =
    /// Causal attention; supports KV-cache decoding.
    | Decoder
    /// Non-causal attention: every position sees its whole segment.
    | Encoder

/// A LongNet model's hyper-parameters.
type ModelConfig =
    {
        /// Vocabulary size V (token ids are 0 … V−1).
        VocabSize: int
        /// Embedding width e.
        EmbedDim: int
        /// Number of Transformer blocks.
        Layers: int
        /// Attention heads per block (a divisor of `EmbedDim`).
        Heads: int
        /// Hidden width f of the feed-forward network.
        FeedForwardDim: int
        /// SwiGLU or GELU feed-forward network.
        FeedForward: FeedForwardKind
        /// The (segment length w, dilation rate r) groups of dilated attention.
        Groups: Group list
        /// Which offset each head uses in a dilated segment.
        Offsets: HeadOffsets
        /// Decoder (causal) or encoder (non-causal).
        Architecture: Architecture
        /// Relative positions: none, RoPE or xPos.
        Position: PositionEncoding
        /// Which attention every block computes: dilated (default), dense or select-and-merge.
        Attention: AttentionKind
        /// How RoPE positions are rescaled (plain RoPE, PI, NTK-aware, dynamic NTK, YaRN, CRD NTK); RoPE only.
        PositionScaling: ScalingMethod
        /// Magneto's sub-LN in attention and feed-forward (with its initialisation gain).
        SubLayerNorm: bool
        /// Dropout probability (embeddings, attention output, feed-forward output).
        Dropout: float
        /// Whether linear layers have biases.
        Bias: bool
        /// Whether the output head shares the token embedding's weights.
        TiedEmbeddings: bool
        /// ε of every LayerNorm.
        LayerNormEpsilon: float
        /// The longest sequence the model accepts (forward, evaluation and generation).
        MaxPositions: int
        /// Smeared keys (each key mixed with the previous position's by a learnt gate per head), so one
        /// attention layer can copy what followed an earlier occurrence of the current token.
        SmearedKeys: bool
        /// LayerNorm (default) or RMSNorm before attention, before the feed-forward network and at the end.
        Norm: NormKind
        /// Key/value heads for grouped-query attention (each shared by heads / kvHeads query heads);
        /// `None`: one per query head.
        KvHeads: int option
        /// Low-rank adapters on the attention projections (`None`: none); with them, training updates
        /// only the adapters and the norms.
        Lora: LoraSettings option
    }

/// Defaults, validation and JSON of `ModelConfig`.
module ModelConfig =
    /// A small byte-level decoder: e = 256, 4 layers, 8 heads, SwiGLU 688, groups (64,1) (128,2) (256,4), RoPE.
    let defaults: ModelConfig =
        {
            VocabSize = 259
            EmbedDim = 256
            Layers = 4
            Heads = 8
            FeedForwardDim = 688
            FeedForward = SwiGlu
            Groups = Groups.ofPairsOrRaise [ 64, 1; 128, 2; 256, 4 ]
            Offsets = Paper
            Architecture = Decoder
            Position = Rope Rope.defaultRope
            Attention = AttentionKind.Dilated
            PositionScaling = PlainRope
            SubLayerNorm = false
            Dropout = 0.0
            Bias = false
            TiedEmbeddings = true
            LayerNormEpsilon = 1e-5
            MaxPositions = 1 <<< 20
            SmearedKeys = false
            Norm = LayerNormalization
            KvHeads = None
            Lora = None
        }

    /// The select-and-merge options written for a model that does not use them (and read when absent).
    let defaultSelectMerge: SelectMergeOptions =
        {
            BlockSize = 64
            TopK = 4
            MergeFactor = 1
            Sink = true
            RenumberPositions = true
            LocalBlocks = 0
            Selection = Casm.BlockSelection.Correlation
        }

    /// The CRD NTK schedule written for a model that does not use one (and read when fields are absent).
    let defaultCrd: CrdSchedule =
        {
            MinScale = 1.0
            MaxScale = 16.0
            CycleSteps = 200
            TrainedLength = 256
            MinLength = 64
        }

    /// The dilated-attention configuration of every block (dense attention: one group (maxPositions, 1)
    /// that covers every position, used by the KV cache).
    let dilated (c: ModelConfig) : Result<DilatedConfig, ConfigError> =
        match c.Attention with
        | AttentionKind.Dense -> DilatedConfig.create [ c.MaxPositions ] [ 1 ] c.Offsets (c.Architecture = Decoder) None
        | _ -> DilatedConfig.ofGroups c.Groups c.Offsets (c.Architecture = Decoder) None

    /// Whether the position encoding depends on the sequence length (dynamic NTK, CRD NTK at inference):
    /// then cached keys would go stale, and decoding recomputes.
    let lengthDependentPositions (c: ModelConfig) : bool =
        match c.Position, c.PositionScaling with
        | Rope _, DynamicNtk _
        | Rope _, CrdNtk _ -> true
        | _ -> false

    /// Whether the model decodes incrementally with an exact KV cache: a decoder with dilated or dense
    /// attention and a length-independent position encoding.
    let supportsKvCache (c: ModelConfig) : bool =
        c.Architecture = Decoder
        && not (lengthDependentPositions c)
        && (match c.Attention with
            | AttentionKind.SelectMerge _ -> false
            | _ -> true)

    /// Checks a position scaling (and that it goes with RoPE); the error names the field.
    let validateScaling (c: ModelConfig) : Result<unit, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

        let scale (x: float) =
            if x >= 1.0 && Double.IsFinite x then
                Ok()
            else
                error "positionScaling.scale" $"positionScaling.scale must be finite and ≥ 1, got {x}."

        let trained (t: int) =
            if t >= 1 then
                Ok()
            else
                error "positionScaling.trainedLength" $"positionScaling.trainedLength must be ≥ 1, got {t}."

        match c.PositionScaling, c.Position with
        | PlainRope, _ -> Ok()
        | _, NoPosition
        | _, XPos _
        | _, DistanceBiased _ ->
            error
                "positionScaling.method"
                "positionScaling.method must be \"none\" unless position is \"rope\" (the scalings rescale RoPE's frequencies)."
        | Interpolation s, _
        | NtkAware s, _ -> scale s
        | DynamicNtk t, _ -> trained t
        | Yarn y, _ ->
            if not (y.Alpha >= 0.0 && y.Alpha < y.Beta && Double.IsFinite y.Beta) then
                error
                    "positionScaling.yarnBeta"
                    $"positionScaling.yarnAlpha must be ≥ 0 and below positionScaling.yarnBeta, got alpha = {y.Alpha}, beta = {y.Beta}."
            else
                scale y.Scale |> Result.bind (fun () -> trained y.TrainedLength)
        | CrdNtk k, _ ->
            if not (k.MinScale >= 1.0 && Double.IsFinite k.MinScale) then
                error
                    "positionScaling.crdMinScale"
                    $"positionScaling.crdMinScale must be finite and ≥ 1, got {k.MinScale}."
            elif not (k.MaxScale >= k.MinScale && Double.IsFinite k.MaxScale) then
                error
                    "positionScaling.crdMaxScale"
                    $"positionScaling.crdMaxScale must be finite and ≥ crdMinScale ({k.MinScale}), got {k.MaxScale}."
            elif k.CycleSteps < 1 then
                error "positionScaling.crdCycleSteps" $"positionScaling.crdCycleSteps must be ≥ 1, got {k.CycleSteps}."
            elif k.TrainedLength < 1 then
                trained k.TrainedLength
            elif k.MinLength < 1 || k.MinLength > k.TrainedLength then
                error
                    "positionScaling.crdMinLength"
                    $"positionScaling.crdMinLength must be in [1, trainedLength = {k.TrainedLength}], got {k.MinLength}."
            else
                Ok()

    /// The attention settings of every block.
    let attention (c: ModelConfig) (d: DilatedConfig) : AttentionSettings =
        {
            Embed = c.EmbedDim
            Heads = c.Heads
            Dilated = d
            Attention = c.Attention
            Position = c.Position
            SubLayerNorm = c.SubLayerNorm
            Dropout = c.Dropout
            Bias = c.Bias
            LayerNormEpsilon = c.LayerNormEpsilon
            SmearedKeys = c.SmearedKeys
            KvHeads = c.KvHeads |> Option.defaultValue c.Heads
            Lora = c.Lora
        }

    /// Checks every field; the error names the first offending one (as in the JSON file).
    let validate (c: ModelConfig) : Result<ModelConfig, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }
        // one key/value head per query head is the same as none given (the form JSON reads back)
        let c =
            if c.KvHeads = Some c.Heads then
                { c with KvHeads = None }
            else
                c

        if c.VocabSize < 2 then
            error "vocabSize" $"vocabSize must be ≥ 2, got {c.VocabSize}."
        elif c.Layers < 1 then
            error "layers" $"layers must be ≥ 1, got {c.Layers}."
        elif c.FeedForwardDim < 1 then
            error "feedForwardDim" $"feedForwardDim must be ≥ 1, got {c.FeedForwardDim}."
        elif not (c.LayerNormEpsilon > 0.0 && c.LayerNormEpsilon < 1.0) then
            error "layerNormEpsilon" $"layerNormEpsilon must be in (0, 1), got {c.LayerNormEpsilon}."
        elif c.MaxPositions < 1 then
            error "maxPositions" $"maxPositions must be ≥ 1, got {c.MaxPositions}."
        else
            match dilated c with
            | Error e -> error "groups" e.Message
            | Ok d ->
                match
                    AttentionSettings.validate (attention c d)
                    |> Result.bind (fun _ -> validateScaling c)
                with
                | Error e -> Error e
                | Ok _ ->
                    match c.Position with
                    | XPos x when int64 c.MaxPositions > Rope.xposMaxPosition (c.EmbedDim / c.Heads) x.ScaleBase ->
                        let limit = Rope.xposMaxPosition (c.EmbedDim / c.Heads) x.ScaleBase

                        error
                            "maxPositions"
                            $"with xPos (xposScaleBase {x.ScaleBase}) positions beyond {limit} overflow float32; set maxPositions ≤ {limit} or raise xposScaleBase."
                    | _ -> Ok c

    /// The JSON name of a position encoding: "none", "rope", "xpos" or "distance-bias".
    let positionName (p: PositionEncoding) =
        match p with
        | NoPosition -> "none"
        | Rope _ -> "rope"
        | XPos _ -> "xpos"
        | DistanceBiased _ -> "distance-bias"

    /// The distance-bias settings of a position encoding (the defaults unless it is `DistanceBiased`).
    let private biasSettings (p: PositionEncoding) =
        match p with
        | DistanceBiased b -> b
        | _ -> Rope.defaultDistanceBias

    /// The JSON name of an attention kind: "dilated", "dense" or "select-merge".
    let attentionName (kind: AttentionKind) : string =
        match kind with
        | AttentionKind.Dilated -> "dilated"
        | AttentionKind.Dense -> "dense"
        | AttentionKind.SelectMerge _ -> "select-merge"

    /// The JSON name of a scaling method: "none", "pi", "ntk", "dynamic-ntk", "yarn" or "crd-ntk".
    let scalingName (method: ScalingMethod) : string =
        match method with
        | PlainRope -> "none"
        | Interpolation _ -> "pi"
        | NtkAware _ -> "ntk"
        | DynamicNtk _ -> "dynamic-ntk"
        | Yarn _ -> "yarn"
        | CrdNtk _ -> "crd-ntk"

    /// The names of the `positionScaling` object's fields.
    let scalingFieldNames =
        [
            "method"
            "scale"
            "trainedLength"
            "yarnAlpha"
            "yarnBeta"
            "crdMinScale"
            "crdMaxScale"
            "crdCycleSteps"
            "crdMinLength"
        ]

    /// The names of the `selectMerge` object's fields.
    let selectMergeFieldNames =
        [
            "blockSize"
            "topK"
            "mergeFactor"
            "sink"
            "renumberPositions"
            "localBlocks"
            "selection"
        ]

    /// The JSON name of a block selection rule.
    let selectionName (selection: Casm.BlockSelection) : string =
        match selection with
        | Casm.BlockSelection.Correlation -> "correlation"
        | Casm.BlockSelection.Trainable -> "trainable"

    /// The block selection rule named `name` ("correlation" or "trainable", any case), if it is one.
    let tryParseSelection (name: string) : Casm.BlockSelection option =
        match name.ToLowerInvariant() with
        | "correlation" -> Some Casm.BlockSelection.Correlation
        | "trainable" -> Some Casm.BlockSelection.Trainable
        | _ -> None

    let private scalingJson (method: ScalingMethod) : JsonObject =
        let scale, trained, alpha, beta, crd =
            match method with
            | PlainRope -> 1.0, defaultCrd.TrainedLength, 1.0, 32.0, defaultCrd
            | Interpolation s
            | NtkAware s -> s, defaultCrd.TrainedLength, 1.0, 32.0, defaultCrd
            | DynamicNtk t -> 1.0, t, 1.0, 32.0, defaultCrd
            | Yarn y -> y.Scale, y.TrainedLength, y.Alpha, y.Beta, defaultCrd
            | CrdNtk k -> 1.0, k.TrainedLength, 1.0, 32.0, k

        let o = JsonObject()
        o.["method"] <- JsonValue.Create(scalingName method)
        o.["scale"] <- JsonValue.Create scale
        o.["trainedLength"] <- JsonValue.Create trained
        o.["yarnAlpha"] <- JsonValue.Create alpha
        o.["yarnBeta"] <- JsonValue.Create beta
        o.["crdMinScale"] <- JsonValue.Create crd.MinScale
        o.["crdMaxScale"] <- JsonValue.Create crd.MaxScale
        o.["crdCycleSteps"] <- JsonValue.Create crd.CycleSteps
        o.["crdMinLength"] <- JsonValue.Create crd.MinLength
        o

    let private selectMergeJson (kind: AttentionKind) : JsonObject =
        let s =
            match kind with
            | AttentionKind.SelectMerge s -> s
            | _ -> defaultSelectMerge

        let o = JsonObject()
        o.["blockSize"] <- JsonValue.Create s.BlockSize
        o.["topK"] <- JsonValue.Create s.TopK
        o.["mergeFactor"] <- JsonValue.Create s.MergeFactor
        o.["sink"] <- JsonValue.Create s.Sink
        o.["renumberPositions"] <- JsonValue.Create s.RenumberPositions
        o.["localBlocks"] <- JsonValue.Create s.LocalBlocks
        o.["selection"] <- JsonValue.Create(selectionName s.Selection)
        o

    /// Reads the `positionScaling` object (`section` names it in errors); absent fields from `fallback`.
    let scalingOfJson (section: string) (fallback: ScalingMethod) (node: JsonNode) : ScalingMethod =
        let r = JsonFields.Reader(node, section)
        r.RejectUnknown scalingFieldNames
        let basis = scalingJson fallback
        let big = Int32.MaxValue
        let number (name: string) = basis.[name].GetValue<float>()
        let integer (name: string) = basis.[name].GetValue<int>()
        let any (_: float) = true
        let scale = r.Float("scale", number "scale", any, "a number")
        let trained = r.Int("trainedLength", integer "trainedLength", -big, big)

        match r.String("method", scalingName fallback).ToLowerInvariant() with
        | "none" -> PlainRope
        | "pi" -> Interpolation scale
        | "ntk" -> NtkAware scale
        | "dynamic-ntk" -> DynamicNtk trained
        | "yarn" ->
            Yarn
                {
                    Scale = scale
                    TrainedLength = trained
                    Alpha = r.Float("yarnAlpha", number "yarnAlpha", any, "a number")
                    Beta = r.Float("yarnBeta", number "yarnBeta", any, "a number")
                }
        | "crd-ntk" ->
            CrdNtk
                {
                    MinScale = r.Float("crdMinScale", number "crdMinScale", any, "a number")
                    MaxScale = r.Float("crdMaxScale", number "crdMaxScale", any, "a number")
                    CycleSteps = r.Int("crdCycleSteps", integer "crdCycleSteps", -big, big)
                    TrainedLength = trained
                    MinLength = r.Int("crdMinLength", integer "crdMinLength", -big, big)
                }
        | other ->
            let field = $"{section}.method"

            JsonFields.fail
                field
                $"{field} must be \"none\", \"pi\", \"ntk\", \"dynamic-ntk\", \"yarn\" or \"crd-ntk\", got \"{other}\"."

    /// Reads the attention kind from its name and the `selectMerge` object (`section` names it in errors).
    let attentionOfJson (section: string) (name: string) (fallback: AttentionKind) (node: JsonNode) : AttentionKind =
        let qualified (field: string) =
            if section = "" then field else $"{section}.{field}"

        let r = JsonFields.Reader(node, qualified "selectMerge")
        r.RejectUnknown selectMergeFieldNames

        let basis =
            match fallback with
            | AttentionKind.SelectMerge s -> s
            | _ -> defaultSelectMerge

        let big = Int32.MaxValue

        let options =
            {
                BlockSize = r.Int("blockSize", basis.BlockSize, -big, big)
                TopK = r.Int("topK", basis.TopK, -big, big)
                MergeFactor = r.Int("mergeFactor", basis.MergeFactor, -big, big)
                Sink = r.Bool("sink", basis.Sink)
                RenumberPositions = r.Bool("renumberPositions", basis.RenumberPositions)
                LocalBlocks = r.Int("localBlocks", basis.LocalBlocks, -big, big)
                Selection =
                    let text = r.String("selection", selectionName basis.Selection)

                    match tryParseSelection text with
                    | Some selection -> selection
                    | None ->
                        let field = qualified "selectMerge.selection"
                        JsonFields.fail field $"{field} must be \"correlation\" or \"trainable\", got \"{text}\"."
            }

        match name.ToLowerInvariant() with
        | "dilated" -> AttentionKind.Dilated
        | "dense" -> AttentionKind.Dense
        | "select-merge" -> AttentionKind.SelectMerge options
        | other ->
            let field = qualified "attention"

            JsonFields.fail field $"{field} must be \"dilated\", \"dense\" or \"select-merge\", got \"{other}\"."

    /// The JSON form of a configuration (every field written; `kvHeads` only for grouped-query attention).
    let toJson (c: ModelConfig) : JsonObject =
        let ropeBase, scaleBase =
            match c.Position with
            | Rope r -> r.Base, Rope.defaultXPos.ScaleBase
            | XPos x -> x.Base, x.ScaleBase
            | NoPosition
            | DistanceBiased _ -> Rope.defaultRope.Base, Rope.defaultXPos.ScaleBase

        let distance = biasSettings c.Position
        let o = JsonObject()
        let set (name: string) (value: JsonNode) = o.[name] <- value
        let int (x: int) = JsonValue.Create x :> JsonNode
        let float (x: float) = JsonValue.Create x :> JsonNode
        let bool (x: bool) = JsonValue.Create x :> JsonNode
        let text (x: string) = JsonValue.Create x :> JsonNode

        set "vocabSize" (int c.VocabSize)
        set "embedDim" (int c.EmbedDim)
        set "layers" (int c.Layers)
        set "heads" (int c.Heads)
        set "feedForwardDim" (int c.FeedForwardDim)
        set "feedForward" (text (FeedForwardKind.name c.FeedForward))

        set
            "groups"
            (JsonArray(
                c.Groups
                |> List.map (fun g ->
                    JsonObject(dict [ "segmentLength", int g.SegmentLength; "dilationRate", int g.DilationRate ])
                    :> JsonNode)
                |> Array.ofList
            ))

        set
            "offsets"
            (text (
                match c.Offsets with
                | Paper -> "paper"
                | Blocks -> "blocks"
            ))

        set
            "architecture"
            (text (
                match c.Architecture with
                | Decoder -> "decoder"
                | Encoder -> "encoder"
            ))

        set "position" (text (positionName c.Position))
        set "attention" (text (attentionName c.Attention))
        set "selectMerge" (selectMergeJson c.Attention)
        set "positionScaling" (scalingJson c.PositionScaling)
        set "ropeBase" (float ropeBase)
        set "xposScaleBase" (float scaleBase)
        set "biasForm" (text (DistanceBias.formName distance.Form))
        set "biasMaxSlope" (float distance.MaxSlope)
        set "biasMinSlope" (float distance.MinSlope)
        set "subLayerNorm" (bool c.SubLayerNorm)
        set "dropout" (float c.Dropout)
        set "bias" (bool c.Bias)
        set "tiedEmbeddings" (bool c.TiedEmbeddings)
        set "layerNormEpsilon" (float c.LayerNormEpsilon)
        set "maxPositions" (int c.MaxPositions)
        set "smearedKeys" (bool c.SmearedKeys)
        set "norm" (text (NormKind.name c.Norm))
        // written only for grouped-query attention, so that a change of heads alone is one difference
        c.KvHeads |> Option.iter (fun k -> set "kvHeads" (int k))
        // written only for an adapted model, like kvHeads
        c.Lora
        |> Option.iter (fun l ->
            set
                "lora"
                (JsonObject(
                    dict
                        [
                            "rank", int l.Rank
                            "alpha", float l.Alpha
                            "targets",
                            JsonArray(l.Targets |> List.map (fun t -> text (Lora.targetName t)) |> Array.ofList)
                            :> JsonNode
                        ]
                )))

        o

    /// The names of the JSON fields.
    let fieldNames =
        [
            "vocabSize"
            "embedDim"
            "layers"
            "heads"
            "feedForwardDim"
            "feedForward"
            "groups"
            "offsets"
            "architecture"
            "position"
            "attention"
            "selectMerge"
            "positionScaling"
            "ropeBase"
            "xposScaleBase"
            "biasForm"
            "biasMaxSlope"
            "biasMinSlope"
            "subLayerNorm"
            "dropout"
            "bias"
            "tiedEmbeddings"
            "layerNormEpsilon"
            "maxPositions"
            "smearedKeys"
            "norm"
            "kvHeads"
            "lora"
        ]

    /// The adapters of a model's JSON `lora` object ({ "rank", "alpha", "targets": ["q", "v"] }; absent:
    /// `fallback`); ranges are checked with the model (`Lora.validate`).
    let private loraOfJson (parent: JsonFields.Reader) (field: string) (fallback: LoraSettings option) =
        if not (parent.Has "lora") then
            fallback
        else
            let r = JsonFields.Reader(parent.Object "lora", field)
            r.RejectUnknown [ "rank"; "alpha"; "targets" ]
            let basis = fallback |> Option.defaultValue Lora.defaults

            let targets =
                match r.StringList "targets" with
                | None -> basis.Targets
                | Some names ->
                    names
                    |> List.map (fun n ->
                        match Lora.tryParseTarget n with
                        | Some t -> t
                        | None ->
                            JsonFields.fail
                                $"{field}.targets"
                                $"{field}.targets must hold \"q\", \"k\", \"v\" or \"o\", got \"{n}\".")

            let rank = r.Int("rank", basis.Rank, 1, Int32.MaxValue)
            // α defaults to 2·rank when the rank is given without it (as on the command line)
            let alphaFallback = if r.Has "rank" then 2.0 * float rank else basis.Alpha

            Some
                {
                    Rank = rank
                    Alpha =
                        r.Float("alpha", alphaFallback, (fun x -> Double.IsFinite x && x > 0.0), "a finite number > 0")
                    Targets = targets
                }

    /// The older JSON form of the groups: parallel lists of segment lengths and dilation rates.
    let private legacyGroupFields = [ "segmentLengths"; "dilationRates" ]

    /// The groups of a model's JSON: `groups` ([{ "segmentLength", "dilationRate" }, …]) or, as older
    /// checkpoints and configurations write them, the parallel lists `segmentLengths` and `dilationRates`.
    let private groupsOfJson (r: JsonFields.Reader) (section: string) (fallback: Group list) : Group list =
        let qualified name =
            if section = "" then name else $"{section}.{name}"

        let checkGroup (where: string) (w: int) (rate: int) =
            match Group.Create(w, rate) with
            | Ok g -> g
            | Error e -> JsonFields.fail where $"{where}: {e.Message}"

        let groupsField = qualified "groups"
        let ratesField = qualified "dilationRates"

        match r.ObjectList "groups" with
        | Some items ->
            if legacyGroupFields |> List.exists r.Has then
                JsonFields.fail
                    groupsField
                    $"{groupsField} replaces segmentLengths and dilationRates; give one form, not both."

            items
            |> List.mapi (fun i item ->
                let where = $"{groupsField}[{i}]"
                let g = JsonFields.Reader(item, where)
                g.RejectUnknown [ "segmentLength"; "dilationRate" ]

                for field in [ "segmentLength"; "dilationRate" ] do
                    if not (g.Has field) then
                        JsonFields.fail $"{where}.{field}" $"{where}.{field} is required."

                checkGroup
                    where
                    (g.Int("segmentLength", 1, 1, Int32.MaxValue))
                    (g.Int("dilationRate", 1, 1, Int32.MaxValue)))
        | None when legacyGroupFields |> List.exists r.Has ->
            let ws =
                r.IntList("segmentLengths", List.map fst (Groups.pairs fallback), 1, Int32.MaxValue)

            let rs =
                r.IntList("dilationRates", List.map snd (Groups.pairs fallback), 1, Int32.MaxValue)

            if ws.Length <> rs.Length then
                JsonFields.fail
                    ratesField
                    $"{ratesField} must have one entry per segment length ({ws.Length}), got {rs.Length}."

            List.map2 (checkGroup groupsField) ws rs
        | None -> fallback

    /// Reads a configuration from a JSON object (`section` names it in errors), starting from
    /// `fallback` for missing fields; then validates it.
    let ofJson (section: string) (fallback: ModelConfig) (node: JsonNode) : Result<ModelConfig, ConfigError> =
        JsonFields.catch (fun () ->
            let r = JsonFields.Reader(node, section)
            r.RejectUnknown(fieldNames @ legacyGroupFields)
            let big = System.Int32.MaxValue

            let qualified name =
                if section = "" then name else $"{section}.{name}"

            let qualifiedPosition = qualified "position"
            let qualifiedFeedForward = qualified "feedForward"
            let qualifiedArchitecture = qualified "architecture"
            let qualifiedOffsets = qualified "offsets"

            let ropeBase0, scaleBase0 =
                match fallback.Position with
                | Rope x -> x.Base, Rope.defaultXPos.ScaleBase
                | XPos x -> x.Base, x.ScaleBase
                | NoPosition
                | DistanceBiased _ -> Rope.defaultRope.Base, Rope.defaultXPos.ScaleBase

            let distance0 = biasSettings fallback.Position

            let biasForm =
                let text = r.String("biasForm", DistanceBias.formName distance0.Form)

                match DistanceBias.parseForm text with
                | Ok f -> f
                | Error _ ->
                    let field = qualified "biasForm"
                    JsonFields.fail field $"{field} must be \"linear\" or \"log\", got \"{text}\"."

            let biasMaxSlope =
                r.Float("biasMaxSlope", distance0.MaxSlope, (fun x -> x > 0.0), "a number > 0")

            let biasMinSlope =
                r.Float("biasMinSlope", distance0.MinSlope, (fun x -> x > 0.0), "a number > 0")

            let ropeBase = r.Float("ropeBase", ropeBase0, (fun x -> x > 1.0), "a number > 1")

            let scaleBase =
                r.Float("xposScaleBase", scaleBase0, (fun x -> x > 0.0), "a number > 0")

            let position =
                match r.String("position", positionName fallback.Position).ToLowerInvariant() with
                | "none" -> NoPosition
                | "rope" ->
                    Rope
                        {
                            Base = ropeBase
                            Scaling =
                                match fallback.Position with
                                | Rope x -> x.Scaling
                                | _ -> Unscaled
                        }
                | "xpos" ->
                    XPos
                        {
                            Base = ropeBase
                            ScaleBase = scaleBase
                        }
                | "distance-bias" ->
                    DistanceBiased
                        {
                            Form = biasForm
                            MaxSlope = biasMaxSlope
                            MinSlope = biasMinSlope
                        }
                | other ->
                    JsonFields.fail
                        qualifiedPosition
                        $"{qualifiedPosition} must be \"none\", \"rope\", \"xpos\" or \"distance-bias\", got \"{other}\"."

            let norm =
                let text = r.String("norm", NormKind.name fallback.Norm)

                match NormKind.tryParse text with
                | Some kind -> kind
                | None ->
                    let field = qualified "norm"
                    JsonFields.fail field $"{field} must be \"layernorm\" or \"rmsnorm\", got \"{text}\"."

            // one key/value head per query head is written as `heads` and read back as "none given"
            let kvHeads =
                let heads = r.Int("heads", fallback.Heads, 1, 4096)
                let fallbackKv = fallback.KvHeads |> Option.defaultValue heads
                let k = r.Int("kvHeads", fallbackKv, 1, 4096)
                if k = heads then None else Some k

            let feedForward =
                let text = r.String("feedForward", FeedForwardKind.name fallback.FeedForward)

                match FeedForwardKind.tryParse text with
                | Some k -> k
                | None ->
                    JsonFields.fail
                        qualifiedFeedForward
                        $"{qualifiedFeedForward} must be \"swiglu\" or \"gelu\", got \"{text}\"."

            let offsets =
                let text =
                    r.String(
                        "offsets",
                        match fallback.Offsets with
                        | Paper -> "paper"
                        | Blocks -> "blocks"
                    )

                match HeadOffsets.parse text with
                | Ok o -> o
                | Error e -> JsonFields.fail qualifiedOffsets e.Message

            let architecture =
                match
                    r
                        .String(
                            "architecture",
                            match fallback.Architecture with
                            | Decoder -> "decoder"
                            | Encoder -> "encoder"
                        )
                        .ToLowerInvariant()
                with
                | "decoder" -> Decoder
                | "encoder" -> Encoder
                | other ->
                    JsonFields.fail
                        qualifiedArchitecture
                        $"{qualifiedArchitecture} must be \"decoder\" or \"encoder\", got \"{other}\"."

            {
                VocabSize = r.Int("vocabSize", fallback.VocabSize, 2, big)
                EmbedDim = r.Int("embedDim", fallback.EmbedDim, 1, big)
                Layers = r.Int("layers", fallback.Layers, 1, 1024)
                Heads = r.Int("heads", fallback.Heads, 1, 4096)
                FeedForwardDim = r.Int("feedForwardDim", fallback.FeedForwardDim, 1, big)
                FeedForward = feedForward
                Groups = groupsOfJson r section fallback.Groups
                Offsets = offsets
                Architecture = architecture
                Position = position
                Attention =
                    attentionOfJson
                        section
                        (r.String("attention", attentionName fallback.Attention))
                        fallback.Attention
                        (r.Object "selectMerge")
                PositionScaling =
                    scalingOfJson (qualified "positionScaling") fallback.PositionScaling (r.Object "positionScaling")
                SubLayerNorm = r.Bool("subLayerNorm", fallback.SubLayerNorm)
                Dropout = r.Float("dropout", fallback.Dropout, (fun x -> x >= 0.0 && x < 1.0), "in [0, 1)")
                Bias = r.Bool("bias", fallback.Bias)
                TiedEmbeddings = r.Bool("tiedEmbeddings", fallback.TiedEmbeddings)
                LayerNormEpsilon =
                    r.Float("layerNormEpsilon", fallback.LayerNormEpsilon, (fun x -> x > 0.0 && x < 1.0), "in (0, 1)")
                MaxPositions = r.Int("maxPositions", fallback.MaxPositions, 1, big)
                SmearedKeys = r.Bool("smearedKeys", fallback.SmearedKeys)
                Norm = norm
                KvHeads = kvHeads
                Lora = loraOfJson r (qualified "lora") fallback.Lora
            })
        |> Result.bind (fun c ->
            validate c
            |> Result.mapError (fun e ->
                { e with
                    Parameter =
                        (if section = "" then
                             e.Parameter
                         else
                             $"{section}.{e.Parameter}")
                }))

    /// The fields whose values differ between two configurations, as "field: a vs b" lines.
    let differences (a: ModelConfig) (b: ModelConfig) : string list =
        let ja, jb = toJson a, toJson b
        // a field written only when set (kvHeads) reads as "none" where absent
        let text (node: JsonNode) =
            if isNull node then "none" else node.ToJsonString()

        [
            for name in fieldNames do
                let x, y = text ja.[name], text jb.[name]

                if x <> y then
                    $"{name}: {x} vs {y}"
        ]
