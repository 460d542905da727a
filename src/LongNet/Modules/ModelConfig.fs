/// The configuration of a LongNet language model (seed 000 §4): a Transformer whose attention is
/// dilated attention. A record with defaults, a validating check that names the offending field, and a
/// JSON form (camelCase field names, every field optional).
namespace LongNet.Modules

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
        /// Segment lengths w of the dilated-attention groups.
        SegmentLengths: int list
        /// Dilation rates r of the groups (one per segment length).
        DilationRates: int list
        /// Which offset each head uses in a dilated segment.
        Offsets: HeadOffsets
        /// Decoder (causal) or encoder (non-causal).
        Architecture: Architecture
        /// Relative positions: none, RoPE or xPos.
        Position: PositionEncoding
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
            SegmentLengths = [ 64; 128; 256 ]
            DilationRates = [ 1; 2; 4 ]
            Offsets = Paper
            Architecture = Decoder
            Position = Rope Rope.defaultRope
            SubLayerNorm = false
            Dropout = 0.0
            Bias = false
            TiedEmbeddings = true
            LayerNormEpsilon = 1e-5
            MaxPositions = 1 <<< 20
        }

    /// The dilated-attention configuration of every block.
    let dilated (c: ModelConfig) : Result<DilatedConfig, ConfigError> =
        DilatedConfig.create c.SegmentLengths c.DilationRates c.Offsets (c.Architecture = Decoder) None

    /// The attention settings of every block.
    let attention (c: ModelConfig) (d: DilatedConfig) : AttentionSettings =
        {
            Embed = c.EmbedDim
            Heads = c.Heads
            Dilated = d
            Position = c.Position
            SubLayerNorm = c.SubLayerNorm
            Dropout = c.Dropout
            Bias = c.Bias
            LayerNormEpsilon = c.LayerNormEpsilon
        }

    /// Checks every field; the error names the first offending one (as in the JSON file).
    let validate (c: ModelConfig) : Result<ModelConfig, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

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
            | Error e ->
                let field =
                    match e.Parameter with
                    | "dilationRate"
                    | "dilationRates" -> "dilationRates"
                    | _ -> "segmentLengths"

                error field e.Message
            | Ok d ->
                match AttentionSettings.validate (attention c d) with
                | Error e -> Error e
                | Ok _ ->
                    match c.Position with
                    | XPos x when int64 c.MaxPositions > Rope.xposMaxPosition (c.EmbedDim / c.Heads) x.ScaleBase ->
                        let limit = Rope.xposMaxPosition (c.EmbedDim / c.Heads) x.ScaleBase

                        error
                            "maxPositions"
                            $"with xPos (xposScaleBase {x.ScaleBase}) positions beyond {limit} overflow float32; set maxPositions ≤ {limit} or raise xposScaleBase."
                    | _ -> Ok c

    let private positionName (p: PositionEncoding) =
        match p with
        | NoPosition -> "none"
        | Rope _ -> "rope"
        | XPos _ -> "xpos"

    /// The JSON form of a configuration (every field written).
    let toJson (c: ModelConfig) : JsonObject =
        let ropeBase, scaleBase =
            match c.Position with
            | Rope r -> r.Base, Rope.defaultXPos.ScaleBase
            | XPos x -> x.Base, x.ScaleBase
            | NoPosition -> Rope.defaultRope.Base, Rope.defaultXPos.ScaleBase

        let o = JsonObject()
        let set (name: string) (value: JsonNode) = o.[name] <- value
        let int (x: int) = JsonValue.Create x :> JsonNode
        let float (x: float) = JsonValue.Create x :> JsonNode
        let bool (x: bool) = JsonValue.Create x :> JsonNode
        let text (x: string) = JsonValue.Create x :> JsonNode

        let ints (xs: int list) =
            JsonArray(xs |> List.map int |> Array.ofList) :> JsonNode

        set "vocabSize" (int c.VocabSize)
        set "embedDim" (int c.EmbedDim)
        set "layers" (int c.Layers)
        set "heads" (int c.Heads)
        set "feedForwardDim" (int c.FeedForwardDim)
        set "feedForward" (text (FeedForwardKind.name c.FeedForward))
        set "segmentLengths" (ints c.SegmentLengths)
        set "dilationRates" (ints c.DilationRates)

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
        set "ropeBase" (float ropeBase)
        set "xposScaleBase" (float scaleBase)
        set "subLayerNorm" (bool c.SubLayerNorm)
        set "dropout" (float c.Dropout)
        set "bias" (bool c.Bias)
        set "tiedEmbeddings" (bool c.TiedEmbeddings)
        set "layerNormEpsilon" (float c.LayerNormEpsilon)
        set "maxPositions" (int c.MaxPositions)
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
            "segmentLengths"
            "dilationRates"
            "offsets"
            "architecture"
            "position"
            "ropeBase"
            "xposScaleBase"
            "subLayerNorm"
            "dropout"
            "bias"
            "tiedEmbeddings"
            "layerNormEpsilon"
            "maxPositions"
        ]

    /// Reads a configuration from a JSON object (`section` names it in errors), starting from
    /// `fallback` for missing fields; then validates it.
    let ofJson (section: string) (fallback: ModelConfig) (node: JsonNode) : Result<ModelConfig, ConfigError> =
        JsonFields.catch (fun () ->
            let r = JsonFields.Reader(node, section)
            r.RejectUnknown fieldNames
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
                | NoPosition -> Rope.defaultRope.Base, Rope.defaultXPos.ScaleBase

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
                | other ->
                    JsonFields.fail
                        qualifiedPosition
                        $"{qualifiedPosition} must be \"none\", \"rope\" or \"xpos\", got \"{other}\"."

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
                SegmentLengths = r.IntList("segmentLengths", fallback.SegmentLengths, 1, big)
                DilationRates = r.IntList("dilationRates", fallback.DilationRates, 1, big)
                Offsets = offsets
                Architecture = architecture
                Position = position
                SubLayerNorm = r.Bool("subLayerNorm", fallback.SubLayerNorm)
                Dropout = r.Float("dropout", fallback.Dropout, (fun x -> x >= 0.0 && x < 1.0), "in [0, 1)")
                Bias = r.Bool("bias", fallback.Bias)
                TiedEmbeddings = r.Bool("tiedEmbeddings", fallback.TiedEmbeddings)
                LayerNormEpsilon =
                    r.Float("layerNormEpsilon", fallback.LayerNormEpsilon, (fun x -> x > 0.0 && x < 1.0), "in (0, 1)")
                MaxPositions = r.Int("maxPositions", fallback.MaxPositions, 1, big)
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

        [
            for name in fieldNames do
                let x, y = ja.[name].ToJsonString(), jb.[name].ToJsonString()

                if x <> y then
                    $"{name}: {x} vs {y}"
        ]
