/// Hugging Face Llama and Mistral checkpoints (`LlamaForCausalLM`, `MistralForCausalLM`: `config.json`
/// plus `model.safetensors` or index + shards) in and out of the project's own model type: RMSNorm,
/// grouped-query attention, RoPE with `rope_theta`, SwiGLU, tied or untied head. Hugging Face stores
/// each head's query and key rows as two halves that rotate together ("rotate half"); LongNet rotates
/// interleaved pairs, so the rows are permuted on the way in (and back on the way out) — the same
/// attention scores, so the same logits. Notation: h heads, d head width, e embedding width.
module LongNet.Interop.HuggingFace

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training

/// The architectures this module reads and writes.
let supportedArchitectures = [ "LlamaForCausalLM"; "MistralForCausalLM" ]

/// A Hugging Face model read into the project's configuration.
type PretrainedConfig =
    {
        /// `architectures[0]` of config.json.
        Architecture: string
        /// The equivalent LongNet configuration (dense attention, RMSNorm, RoPE).
        Model: ModelConfig
        /// What LongNet does differently from the Hugging Face model (e.g. Mistral's sliding window).
        Notes: string list
    }

let private fail (path: string) (message: string) : 'T =
    raise (InvalidDataException $"'{path}': {message}")

/// Reads `config.json` of a Llama or Mistral folder into a LongNet configuration (dense attention, so
/// the imported model computes what the original does; switch to dilated or select-merge afterwards).
/// Raises FileNotFoundException or InvalidDataException naming the file and the field.
let readConfig (folder: string) : PretrainedConfig =
    let path = Path.Combine(Path.GetFullPath folder, "config.json")

    if not (File.Exists path) then
        raise (FileNotFoundException($"Cannot import '{folder}': it has no config.json.", path))

    let root =
        try
            match JsonNode.Parse(File.ReadAllText path) with
            | :? JsonObject as o -> o
            | _ -> fail path "config.json must hold a JSON object"
        with :? JsonException as e ->
            fail path $"config.json is not valid JSON ({e.Message})"

    let node (name: string) : JsonNode option =
        let mutable value: JsonNode = null

        if root.TryGetPropertyValue(name, &value) && not (isNull value) then
            Some value
        else
            None

    let integer (name: string) (fallback: int option) =
        match node name, fallback with
        | Some n, _ ->
            try
                n.GetValue<int>()
            with _ ->
                fail path $"'{name}' must be an integer, got {n.ToJsonString()}"
        | None, Some f -> f
        | None, None -> fail path $"'{name}' is missing"

    let number (name: string) (fallback: float) =
        match node name with
        | Some n ->
            try
                n.GetValue<float>()
            with _ ->
                fail path $"'{name}' must be a number, got {n.ToJsonString()}"
        | None -> fallback

    let flag (name: string) (fallback: bool) =
        match node name with
        | Some n ->
            try
                n.GetValue<bool>()
            with _ ->
                fail path $"'{name}' must be true or false, got {n.ToJsonString()}"
        | None -> fallback

    let text (name: string) =
        node name
        |> Option.map (fun n ->
            try
                n.GetValue<string>()
            with _ ->
                fail path $"'{name}' must be a string, got {n.ToJsonString()}")

    let architecture =
        match node "architectures" with
        | Some(:? JsonArray as a) when a.Count > 0 ->
            try
                a.[0].GetValue<string>()
            with _ ->
                fail path $"'architectures' must hold strings, got {a.ToJsonString()}"
        | _ ->
            match text "model_type" with
            | Some "llama" -> "LlamaForCausalLM"
            | Some "mistral" -> "MistralForCausalLM"
            | _ -> fail path "'architectures' is missing (and 'model_type' is neither \"llama\" nor \"mistral\")"

    if not (List.contains architecture supportedArchitectures) then
        let supported = String.Join(", ", supportedArchitectures)
        fail path $"architecture '{architecture}' is not supported; supported: {supported}"

    let hidden = integer "hidden_size" None
    let heads = integer "num_attention_heads" None
    let kvHeads = integer "num_key_value_heads" (Some heads)

    if heads < 1 || hidden % heads <> 0 then
        fail path $"'hidden_size' ({hidden}) must be a multiple of 'num_attention_heads' ({heads})"

    match node "head_dim" with
    | Some n when
        n.GetValueKind() <> JsonValueKind.Null
        && integer "head_dim" None <> hidden / heads
        ->
        let headDim = integer "head_dim" None

        fail
            path
            $"'head_dim' {headDim} differs from hidden_size / num_attention_heads = {hidden / heads}; LongNet needs them equal"
    | _ -> ()

    match text "hidden_act" with
    | Some "silu"
    | None -> ()
    | Some other -> fail path $"'hidden_act' must be \"silu\" (SwiGLU), got \"{other}\""

    for name in [ "attention_bias"; "mlp_bias" ] do
        if flag name false then
            fail path $"'{name}' is true; LongNet's Llama layers have no biases"

    // rope_scaling: only the types whose definition equals one of LongNet's scalings exactly
    let scaling =
        match node "rope_scaling" with
        | Some n when n.GetValueKind() = JsonValueKind.Object ->
            let o = n.AsObject()

            let kind =
                [ "rope_type"; "type" ]
                |> List.tryPick (fun key ->
                    match o.[key] with
                    | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> Some(v.GetValue<string>())
                    | _ -> None)

            match kind with
            | Some "default" -> PlainRope
            | Some "linear" ->
                match o.["factor"] with
                | :? JsonValue as v when v.GetValueKind() = JsonValueKind.Number && v.GetValue<float>() >= 1.0 ->
                    Interpolation(v.GetValue<float>())
                | _ -> fail path $"'rope_scaling' linear needs a 'factor' ≥ 1, got {n.ToJsonString()}"
            | _ ->
                fail
                    path
                    $"'rope_scaling' ({n.ToJsonString()}) is not supported on import: only \"linear\" (position interpolation) equals a LongNet scaling exactly (LongNet's dynamic NTK and YaRN follow their papers, not Hugging Face's variants); import the unscaled model and choose a position scaling in LongNet"
        | Some n when n.GetValueKind() <> JsonValueKind.Null ->
            fail path $"'rope_scaling' must be an object or null, got {n.ToJsonString()}"
        | _ -> PlainRope

    let notes =
        match architecture, node "sliding_window" with
        | "MistralForCausalLM", Some w when w.GetValueKind() = JsonValueKind.Number ->
            let window = integer "sliding_window" None

            [
                $"Mistral's sliding window ({window} tokens) is not applied: LongNet's dense attention sees every earlier token, so logits differ from the original only beyond {window} tokens."
            ]
        | _ -> []

    let model =
        { ModelConfig.defaults with
            VocabSize = integer "vocab_size" None
            EmbedDim = hidden
            Layers = integer "num_hidden_layers" None
            Heads = heads
            KvHeads = (if kvHeads = heads then None else Some kvHeads)
            FeedForwardDim = integer "intermediate_size" None
            FeedForward = SwiGlu
            Position =
                Rope
                    {
                        Base = number "rope_theta" 10000.0
                        Scaling = Unscaled
                    }
            Attention = AttentionKind.Dense
            PositionScaling = scaling
            SubLayerNorm = false
            Dropout = 0.0
            Bias = false
            TiedEmbeddings = flag "tie_word_embeddings" false
            LayerNormEpsilon = number "rms_norm_eps" 1e-6
            MaxPositions = integer "max_position_embeddings" (Some 4096)
            SmearedKeys = false
            Norm = RmsNormalization
        }

    match ModelConfig.validate model with
    | Error e -> fail path $"the model it describes is not valid: {e.Message}"
    | Ok model ->
        {
            Architecture = architecture
            Model = model
            Notes = notes
        }

/// Row order that turns a projection's Hugging Face "rotate half" rows into interleaved pairs:
/// within each of `heads` heads of width d, LongNet row 2i + j is Hugging Face row i + j·d/2.
let private toInterleaved (heads: int) (d: int) : int64[] =
    Array.init (heads * d) (fun r ->
        let head, within = r / d, r % d
        int64 (head * d + within / 2 + (within % 2) * (d / 2)))

/// The inverse of `toInterleaved`: Hugging Face row i + j·d/2 is LongNet row 2i + j.
let private toHalves (heads: int) (d: int) : int64[] =
    Array.init (heads * d) (fun r ->
        let head, within = r / d, r % d
        let i, j = within % (d / 2), within / (d / 2)
        int64 (head * d + 2 * i + j))

/// For each LongNet parameter of `config`, its Hugging Face name and, for query and key projections,
/// the number of heads whose rows are permuted.
let private nameMap (config: ModelConfig) : (string * string * int option) list =
    let kvHeads = config.KvHeads |> Option.defaultValue config.Heads

    [
        yield "embed_tokens.weight", "model.embed_tokens.weight", None

        for i in 0 .. config.Layers - 1 do
            let ours, theirs = $"layers.{i}", $"model.layers.{i}"
            yield $"{ours}.self_attn_layer_norm.weight", $"{theirs}.input_layernorm.weight", None
            yield $"{ours}.self_attn.q_proj.weight", $"{theirs}.self_attn.q_proj.weight", Some config.Heads
            yield $"{ours}.self_attn.k_proj.weight", $"{theirs}.self_attn.k_proj.weight", Some kvHeads
            yield $"{ours}.self_attn.v_proj.weight", $"{theirs}.self_attn.v_proj.weight", None
            yield $"{ours}.self_attn.out_proj.weight", $"{theirs}.self_attn.o_proj.weight", None
            yield $"{ours}.final_layer_norm.weight", $"{theirs}.post_attention_layernorm.weight", None
            yield $"{ours}.ffn.gate.weight", $"{theirs}.mlp.gate_proj.weight", None
            yield $"{ours}.ffn.input.weight", $"{theirs}.mlp.up_proj.weight", None
            yield $"{ours}.ffn.output.weight", $"{theirs}.mlp.down_proj.weight", None

        yield "layer_norm.weight", "model.norm.weight", None

        if not config.TiedEmbeddings then
            yield "output_projection.weight", "lm_head.weight", None
    ]

/// Checks that a model has the Llama layout this module maps (RMSNorm, SwiGLU, RoPE, no biases, no
/// sub-LN, no smeared keys); the error names the field.
let private checkLayout (config: ModelConfig) : Result<unit, string> =
    if config.Norm <> RmsNormalization then
        Error "model.norm: only RMSNorm models map to Llama checkpoints."
    elif config.FeedForward <> SwiGlu then
        Error "model.feedForward: only SwiGLU models map to Llama checkpoints."
    elif config.Bias then
        Error "model.bias: Llama checkpoints have no biases."
    elif config.SubLayerNorm then
        Error "model.subLayerNorm: Llama checkpoints have no sub-LN."
    elif config.SmearedKeys then
        Error "model.smearedKeys: Llama checkpoints have no smeared keys."
    elif config.Architecture <> Decoder then
        Error "model.architecture: Llama checkpoints are causal decoders."
    elif
        (match config.PositionScaling with
         | PlainRope
         | Interpolation _ -> false
         | _ -> true)
    then
        Error
            "model.positionScaling: only plain RoPE and position interpolation (rope_scaling \"linear\") map to Llama checkpoints; export the unscaled model."
    else
        match config.Position with
        | Rope _ -> Ok()
        | _ -> Error "model.position: Llama checkpoints use RoPE."

/// Builds a LongNet model (float32) from a Llama or Mistral folder: configuration from config.json,
/// weights from its safetensors (single file or shards; float32, float16 or bfloat16), mapped from disk
/// and copied once into the model. `adapt` may change the configuration first (e.g. the attention kind);
/// it must keep the Llama layout. Returns the model and the import's notes.
let load (folder: string) (adapt: ModelConfig -> ModelConfig) : Result<LongNetModel * PretrainedConfig, string> =
    Native.ensureLoaded () |> ignore

    try
        let pretrained = readConfig folder
        let config = adapt pretrained.Model

        match
            checkLayout config
            |> Result.bind (fun () -> ModelConfig.validate config |> Result.mapError _.Message)
        with
        | Error e -> Error $"'{folder}': {e}"
        | Ok config ->
            let names = nameMap config
            let d = config.EmbedDim / config.Heads
            let model = new LongNetModel(config)

            try
                use scope = torch.NewDisposeScope()

                let parameters =
                    dict [ for struct (name, p) in model.named_parameters () -> name, p ]

                let missing =
                    names |> List.filter (fun (ours, _, _) -> not (parameters.ContainsKey ours))

                match missing with
                | (ours, _, _) :: _ -> failwith $"internal: the model has no parameter '{ours}'"
                | [] -> ()

                let tensors =
                    SafeTensorsFolder.load folder (names |> List.map (fun (_, theirs, _) -> theirs))
                    |> dict

                use _ = torch.no_grad ()

                for ours, theirs, permuted in names do
                    let source = tensors.[theirs]
                    let target = parameters.[ours]

                    if source.shape <> target.shape then
                        let stored, expected =
                            String.Join(", ", source.shape), String.Join(", ", target.shape)

                        failwith $"'{theirs}' has shape [{stored}], the configuration gives [{expected}]"

                    let source =
                        match permuted with
                        | Some heads -> source.index_select (0L, torch.tensor (toInterleaved heads d))
                        | None -> source

                    target.copy_ source |> ignore

                for KeyValue(_, t) in tensors do
                    t.Dispose()

                model.eval ()
                Ok(model, { pretrained with Model = config })
            with _ ->
                model.Dispose()
                reraise ()
    with
    | :? OutOfMemoryException -> reraise ()
    | :? IOException
    | :? InvalidDataException
    | :? UnauthorizedAccessException
    | :? Collections.Generic.KeyNotFoundException
    | :? ArgumentException as e -> Error e.Message
    | e -> Error $"'{folder}': {e.Message}"

/// The Hugging Face config.json of a LongNet model with the Llama layout.
let configJson (config: ModelConfig) (dtype: string) : JsonObject =
    let kvHeads = config.KvHeads |> Option.defaultValue config.Heads

    let theta =
        match config.Position with
        | Rope r -> r.Base
        | _ -> Rope.defaultRope.Base

    let o = JsonObject()
    o.["architectures"] <- JsonArray(JsonValue.Create "LlamaForCausalLM")
    o.["model_type"] <- JsonValue.Create "llama"
    o.["vocab_size"] <- JsonValue.Create config.VocabSize
    o.["hidden_size"] <- JsonValue.Create config.EmbedDim
    o.["intermediate_size"] <- JsonValue.Create config.FeedForwardDim
    o.["num_hidden_layers"] <- JsonValue.Create config.Layers
    o.["num_attention_heads"] <- JsonValue.Create config.Heads
    o.["num_key_value_heads"] <- JsonValue.Create kvHeads
    o.["head_dim"] <- JsonValue.Create(config.EmbedDim / config.Heads)
    o.["hidden_act"] <- JsonValue.Create "silu"
    o.["max_position_embeddings"] <- JsonValue.Create config.MaxPositions
    o.["rms_norm_eps"] <- JsonValue.Create config.LayerNormEpsilon
    o.["rope_theta"] <- JsonValue.Create theta

    o.["rope_scaling"] <-
        match config.PositionScaling with
        | Interpolation factor ->
            // both spellings: transformers reads "rope_type" since 4.43, "type" before
            JsonObject(
                dict
                    [
                        "rope_type", JsonValue.Create "linear" :> JsonNode
                        "type", JsonValue.Create "linear" :> JsonNode
                        "factor", JsonValue.Create factor
                    ]
            )
        | _ -> null

    o.["tie_word_embeddings"] <- JsonValue.Create config.TiedEmbeddings
    o.["attention_bias"] <- JsonValue.Create false
    o.["mlp_bias"] <- JsonValue.Create false
    o.["torch_dtype"] <- JsonValue.Create dtype
    o

/// Writes a LongNet model with the Llama layout as a Hugging Face folder: config.json and
/// model.safetensors with Hugging Face names, rows of q and k back in "rotate half" order, low-rank
/// adapters merged into their projections, tensors in `dtype` (float32, float16 or bfloat16). Each file is written atomically; the folder is created.
let save (model: LongNetModel) (folder: string) (dtype: torch.ScalarType) : Result<unit, string> =
    let config = model.Config

    let dtypeName =
        match dtype with
        | torch.ScalarType.Float32 -> Ok "float32"
        | torch.ScalarType.Float16 -> Ok "float16"
        | torch.ScalarType.BFloat16 -> Ok "bfloat16"
        | other -> Error $"dtype must be float32, float16 or bfloat16, got {other}."

    dtypeName
    |> Result.bind (fun name -> checkLayout config |> Result.map (fun () -> name))
    |> Result.bind (fun name ->
        try
            use scope = torch.NewDisposeScope()
            use _ = torch.no_grad ()
            let d = config.EmbedDim / config.Heads

            // adapters folded into their projections: the Hugging Face model has none
            let parameters = dict (model.MergedWeights())

            let tensors =
                [
                    for ours, theirs, permuted in nameMap config do
                        let t = parameters.[ours].detach()

                        let t =
                            match permuted with
                            | Some heads -> t.index_select (0L, torch.tensor (toHalves heads d))
                            | None -> t

                        theirs, t.to_type(dtype).contiguous()
                ]

            let full = Path.GetFullPath folder
            Directory.CreateDirectory full |> ignore
            SafeTensors.write (Path.Combine(full, SafeTensorsFolder.SingleFileName)) tensors (Map [ "format", "pt" ])

            let json =
                (configJson config name).ToJsonString(JsonSerializerOptions(WriteIndented = true))

            AtomicFile.writeText (Path.Combine(full, "config.json")) json
            Ok()
        with
        | :? IOException
        | :? UnauthorizedAccessException
        | :? ArgumentException as e -> Error e.Message)

/// The name of a SentencePiece tokenizer file in a Hugging Face folder.
let tokenizerModelName = "tokenizer.model"

/// The tokenizer of a Hugging Face folder for a model of `vocabSize` ids: its `tokenizer.model`
/// (SentencePiece BPE, as Llama 1/2 and Mistral ship it), or — when it has none — ids only, with a note.
let readTokenizer (folder: string) (vocabSize: int) : Result<TokenizerSpec * string list, string> =
    let path = Path.Combine(Path.GetFullPath folder, tokenizerModelName)

    if File.Exists path then
        let bytes =
            try
                Ok(File.ReadAllBytes path)
            with
            | :? IOException
            | :? UnauthorizedAccessException as e -> Error $"'{path}' cannot be read: {e.Message}"

        bytes
        |> Result.bind (fun bytes ->
            match Tokenizer.ofSpec (SentencePiece bytes) with
            | Error e -> Error $"'{path}': {e}"
            | Ok t when t.VocabSize > vocabSize ->
                Error $"'{path}' has {t.VocabSize} ids, more than the model's vocab_size {vocabSize}."
            | Ok _ -> Ok(SentencePiece bytes, []))
    else
        Ok(
            IdsOnly vocabSize,
            [
                $"the folder has no {tokenizerModelName} (a tokenizer.json alone is not read): the model takes token ids only"
            ]
        )

/// Writes the tokenizer file a Hugging Face folder carries for `spec` (tokenizer.model for SentencePiece)
/// atomically; false when the spec has no Hugging Face file form (a tokenizer.model already in the
/// folder is then removed, so it is never paired with other weights).
let saveTokenizer (spec: TokenizerSpec) (folder: string) : bool =
    let path = Path.Combine(Path.GetFullPath folder, tokenizerModelName)

    match spec with
    | SentencePiece model ->
        AtomicFile.ensureFolderOf path
        AtomicFile.write path (fun target -> target.Write(model, 0, model.Length))
        true
    | _ ->
        // a tokenizer.model left from an earlier export would be read with these weights
        if File.Exists path then
            File.Delete path

        false

/// Imports a Llama or Mistral folder as a LongNet checkpoint at `path`, written atomically: its model
/// (dense attention, computing what the original computes), weights stored in `dtype` (float32, float16
/// or bfloat16), and its tokenizer (`readTokenizer`). Returns the import's notes.
let importCheckpoint (folder: string) (path: string) (dtype: torch.ScalarType) : Result<string list, string> =
    match dtype with
    | torch.ScalarType.Float32
    | torch.ScalarType.Float16
    | torch.ScalarType.BFloat16 ->
        load folder id
        |> Result.bind (fun (model, pretrained) ->
            use model = model

            readTokenizer folder model.Config.VocabSize
            |> Result.bind (fun (tokenizer, notes) ->
                try
                    use scope = torch.NewDisposeScope()

                    let header: CheckpointHeader =
                        {
                            Model = model.Config
                            Train = TrainConfig.defaults
                            Tokenizer = tokenizer
                            Step = 0
                            RngState = (Rng.Create TrainConfig.defaults.Seed).State
                            TokensSeen = 0L
                            ElapsedSeconds = 0.0
                        }

                    let weights =
                        Checkpoint.weights model
                        |> List.map (fun (name, t) -> name, t.detach().to_type dtype)

                    AtomicFile.ensureFolderOf path
                    Checkpoint.save path header weights
                    Ok(pretrained.Notes @ notes)
                with
                | :? IOException
                | :? UnauthorizedAccessException as e -> Error $"'{path}': {e.Message}"))
    | other -> Error $"dtype must be float32, float16 or bfloat16, got {other}."
