/// Llama and Mistral checkpoints in and out: tiny random Hugging Face folders (written here in the
/// published layout: config.json, safetensors single file or index + shards, float32/16 and bfloat16)
/// imported and run, their logits compared with a Llama forward written in this file from the Hugging
/// Face definition (RMSNorm, rotate-half RoPE, repeat_kv, SwiGLU) — not from the code under test —
/// and exports read back by a header parser written here.
module LongNet.Tests.Interop.HuggingFaceTests

open System
open System.Buffers.Binary
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Xunit
open TorchSharp
open LongNet
open LongNet.Interop
open LongNet.Modules
open LongNet.Tests.TestSupport

type private Tensor = torch.Tensor

/// The shape of a tiny checkpoint.
type private Tiny =
    {
        Vocab: int
        Hidden: int
        Heads: int
        KvHeads: int
        Layers: int
        Intermediate: int
        Theta: float
        Eps: float
        Tied: bool
        /// rope_scaling "linear" factor (1: no rope_scaling).
        LinearScaling: float
    }

let private tiny heads kvHeads tied =
    {
        Vocab = 37
        Hidden = 32
        Heads = heads
        KvHeads = kvHeads
        Layers = 2
        Intermediate = 48
        Theta = 500.0
        Eps = 1e-5
        Tied = tied
        LinearScaling = 1.0
    }

/// Random weights with Hugging Face names (float32, scaled to keep activations moderate).
let private randomWeights (t: Tiny) (seed: int64) : (string * Tensor) list =
    let generator = new torch.Generator(uint64 seed)
    let d = t.Hidden / t.Heads

    let r (shape: int64[]) (scale: float) =
        torch.randn (shape, generator = generator) * scale

    [
        "model.embed_tokens.weight", r [| int64 t.Vocab; int64 t.Hidden |] 1.0
        for i in 0 .. t.Layers - 1 do
            let p = $"model.layers.{i}"
            $"{p}.input_layernorm.weight", 1.0 + r [| int64 t.Hidden |] 0.1
            $"{p}.self_attn.q_proj.weight", r [| int64 t.Hidden; int64 t.Hidden |] 0.3
            $"{p}.self_attn.k_proj.weight", r [| int64 (t.KvHeads * d); int64 t.Hidden |] 0.3
            $"{p}.self_attn.v_proj.weight", r [| int64 (t.KvHeads * d); int64 t.Hidden |] 0.2
            $"{p}.self_attn.o_proj.weight", r [| int64 t.Hidden; int64 t.Hidden |] 0.2
            $"{p}.post_attention_layernorm.weight", 1.0 + r [| int64 t.Hidden |] 0.1
            $"{p}.mlp.gate_proj.weight", r [| int64 t.Intermediate; int64 t.Hidden |] 0.2
            $"{p}.mlp.up_proj.weight", r [| int64 t.Intermediate; int64 t.Hidden |] 0.2
            $"{p}.mlp.down_proj.weight", r [| int64 t.Hidden; int64 t.Intermediate |] 0.2
        "model.norm.weight", 1.0 + r [| int64 t.Hidden |] 0.1
        if not t.Tied then
            "lm_head.weight", r [| int64 t.Vocab; int64 t.Hidden |] 0.3
    ]

let private configText (t: Tiny) (architecture: string) (extra: (string * JsonNode) list) =
    let o = JsonObject()
    o.["architectures"] <- JsonArray(JsonValue.Create architecture)
    o.["vocab_size"] <- JsonValue.Create t.Vocab
    o.["hidden_size"] <- JsonValue.Create t.Hidden
    o.["intermediate_size"] <- JsonValue.Create t.Intermediate
    o.["num_hidden_layers"] <- JsonValue.Create t.Layers
    o.["num_attention_heads"] <- JsonValue.Create t.Heads
    o.["num_key_value_heads"] <- JsonValue.Create t.KvHeads
    o.["hidden_act"] <- JsonValue.Create "silu"
    o.["max_position_embeddings"] <- JsonValue.Create 256
    o.["rms_norm_eps"] <- JsonValue.Create t.Eps
    o.["rope_theta"] <- JsonValue.Create t.Theta
    o.["tie_word_embeddings"] <- JsonValue.Create t.Tied

    if t.LinearScaling > 1.0 then
        o.["rope_scaling"] <- JsonNode.Parse $"""{{"type": "linear", "factor": {t.LinearScaling}}}"""

    for name, value in extra do
        o.[name] <- value

    o.ToJsonString()

/// Writes a folder: config.json and the weights in `dtype`, as one file or as two shards with an index.
let private writeFolder
    (folder: string)
    (t: Tiny)
    (architecture: string)
    (weights: (string * Tensor) list)
    dtype
    sharded
    =
    File.WriteAllText(Path.Combine(folder, "config.json"), configText t architecture [])
    let stored = weights |> List.map (fun (n, w) -> n, w.to_type dtype)

    if not sharded then
        SafeTensors.write (Path.Combine(folder, "model.safetensors")) stored Map.empty
    else
        let first, second = List.splitAt (stored.Length / 2) stored

        let shardNames =
            [ "model-00001-of-00002.safetensors"; "model-00002-of-00002.safetensors" ]

        for part, file in List.zip [ first; second ] shardNames do
            SafeTensors.write (Path.Combine(folder, file)) part Map.empty

        let map = JsonObject()

        for part, file in List.zip [ first; second ] shardNames do
            for name, _ in part do
                map.[name] <- JsonValue.Create file

        let index = JsonObject()
        index.["metadata"] <- JsonObject()
        index.["weight_map"] <- map
        File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), index.ToJsonString())

    // what the reference sees: the stored values, widened to float64
    stored |> List.map (fun (n, w) -> n, w.to_type torch.float64) |> Map.ofList

// ---------------------------------------------------------------------------------------------
// The reference: Llama's forward from the Hugging Face definition, in float64.

let private rmsNorm (eps: float) (weight: Tensor) (x: Tensor) =
    x * (x.pow(2.0.ToScalar()).mean([| -1L |], true) + eps).rsqrt() * weight

let private rotateHalf (x: Tensor) =
    let half = x.shape.[x.shape.Length - 1] / 2L
    torch.cat ([| -(x.narrow (-1L, half, half)); x.narrow (-1L, 0L, half) |], -1L)

let private referenceLogits (t: Tiny) (w: Map<string, Tensor>) (ids: Tensor) : Tensor =
    let b, n = ids.shape.[0], ids.shape.[1]
    let d = int64 (t.Hidden / t.Heads)
    let linear (x: Tensor) (name: string) = x.matmul (w.[name].t())

    let mutable x =
        w.["model.embed_tokens.weight"].index_select(0L, ids.flatten ()).view(b, n, -1L)

    // LlamaLinearScalingRotaryEmbedding: inv_freq / factor
    let inverse =
        1.0
        / torch.pow (t.Theta, torch.arange (0L, d, 2L, dtype = torch.float64) / float d)
        / t.LinearScaling

    let freqs = torch.outer (torch.arange (n, dtype = torch.float64), inverse)
    let angles = torch.cat ([| freqs; freqs |], -1L)
    let cos, sin = angles.cos (), angles.sin ()

    let heads (x: Tensor) (count: int) =
        x.view(b, n, int64 count, d).transpose(1L, 2L)

    let causal = torch.ones(n, n, dtype = torch.ScalarType.Bool).triu 1L

    for i in 0 .. t.Layers - 1 do
        let p = $"model.layers.{i}"
        let h = rmsNorm t.Eps w.[$"{p}.input_layernorm.weight"] x
        let q = heads (linear h $"{p}.self_attn.q_proj.weight") t.Heads
        let k = heads (linear h $"{p}.self_attn.k_proj.weight") t.KvHeads
        let v = heads (linear h $"{p}.self_attn.v_proj.weight") t.KvHeads
        let q = q * cos + rotateHalf q * sin
        let k = k * cos + rotateHalf k * sin
        let repeat = int64 (t.Heads / t.KvHeads)
        let k, v = k.repeat_interleave (repeat, 1L), v.repeat_interleave (repeat, 1L)

        let scores =
            (q.matmul (k.transpose (-2L, -1L)) / sqrt (float d)).masked_fill(causal, Double.NegativeInfinity)

        let attended =
            scores.softmax(-1L).matmul(v).transpose(1L, 2L).reshape(b, n, int64 t.Hidden)

        x <- x + linear attended $"{p}.self_attn.o_proj.weight"
        let h = rmsNorm t.Eps w.[$"{p}.post_attention_layernorm.weight"] x

        let mlp =
            torch.nn.functional.silu (linear h $"{p}.mlp.gate_proj.weight")
            * linear h $"{p}.mlp.up_proj.weight"

        x <- x + linear mlp $"{p}.mlp.down_proj.weight"

    let x = rmsNorm t.Eps w.["model.norm.weight"] x

    let head =
        if t.Tied then
            "model.embed_tokens.weight"
        else
            "lm_head.weight"

    linear x head

let private ids (t: Tiny) =
    let generator = new torch.Generator(77UL)
    torch.randint (int64 t.Vocab, [| 2L; 23L |], generator = generator, dtype = torch.int64)

let private importOrFail (folder: string) =
    match HuggingFace.load folder id with
    | Ok(model, pretrained) -> model, pretrained
    | Error e -> failwith e

[<Theory>]
[<InlineData(4, 4, false, false, "float32", "LlamaForCausalLM")>]
[<InlineData(4, 2, true, false, "float32", "LlamaForCausalLM")>]
[<InlineData(4, 1, false, true, "float16", "MistralForCausalLM")>]
[<InlineData(4, 2, true, true, "bfloat16", "LlamaForCausalLM")>]
let ``an imported checkpoint gives the Hugging Face definition's logits``
    (heads: int, kvHeads: int, tied: bool, sharded: bool, dtype: string, architecture: string)
    =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use dir = new TempDir "hf-import"
    let t = tiny heads kvHeads tied

    let scalar =
        match dtype with
        | "float16" -> torch.ScalarType.Float16
        | "bfloat16" -> torch.ScalarType.BFloat16
        | _ -> torch.ScalarType.Float32

    let stored = writeFolder dir.Path t architecture (randomWeights t 5L) scalar sharded
    let model, pretrained = importOrFail dir.Path
    use model = model
    Assert.Equal(architecture, pretrained.Architecture)
    Assert.Equal(RmsNormalization, pretrained.Model.Norm)
    Assert.Equal((if kvHeads = heads then None else Some kvHeads), pretrained.Model.KvHeads)
    let tokens = ids t
    let expected = referenceLogits t stored tokens
    use _ = torch.no_grad ()
    let actual = model.forward(tokens).to_type torch.float64
    let diff = (actual - expected).abs().max().item<float>()
    Assert.True(diff <= 1e-4, $"logits differ by {diff:E2} (max |logit| {expected.abs().max().item<float>():F2})")

[<Fact>]
let ``an exported model re-imports bit for bit and its file holds the Hugging Face tensors`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use source = new TempDir "hf-export-in"
    use target = new TempDir "hf-export-out"
    let t = tiny 4 2 false
    let weights = randomWeights t 9L

    writeFolder source.Path t "LlamaForCausalLM" weights torch.ScalarType.Float32 false
    |> ignore

    let model, _ = importOrFail source.Path
    use model = model

    match HuggingFace.save model target.Path torch.ScalarType.Float32 with
    | Error e -> failwith e
    | Ok() -> ()

    // an independent parse of the exported file: u64 header length, JSON header, raw little-endian data
    let bytes = File.ReadAllBytes(Path.Combine(target.Path, "model.safetensors"))

    let headerLength =
        int (BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8)))

    use header = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, headerLength))
    let dataStart = 8 + headerLength
    Assert.Equal("pt", header.RootElement.GetProperty("__metadata__").GetProperty("format").GetString())

    for name, original in weights do
        let entry = header.RootElement.GetProperty name
        Assert.Equal("F32", entry.GetProperty("dtype").GetString())

        let shape =
            [| for s in entry.GetProperty("shape").EnumerateArray() -> s.GetInt64() |]

        Assert.Equal<int64[]>(original.shape, shape)

        let offsets =
            [|
                for o in entry.GetProperty("data_offsets").EnumerateArray() -> o.GetInt32()
            |]

        let values =
            Array.init ((offsets.[1] - offsets.[0]) / 4) (fun i ->
                BinaryPrimitives.ReadSingleLittleEndian(ReadOnlySpan(bytes, dataStart + offsets.[0] + 4 * i, 4)))

        let expected = original.contiguous().data<float32>().ToArray()
        Assert.True((values = expected), $"{name} differs from the original Hugging Face tensor")

    let config =
        JsonNode.Parse(File.ReadAllText(Path.Combine(target.Path, "config.json")))

    Assert.Equal(2, config.["num_key_value_heads"].GetValue<int>())
    Assert.Equal(500.0, config.["rope_theta"].GetValue<float>())

    let again, _ = importOrFail target.Path
    use again = again

    for struct (name, p) in model.named_parameters () do
        let q = again.get_parameter name
        Assert.True(p.eq(q).all().item<bool>(), $"{name} changed in the round trip")

[<Fact>]
let ``unsupported checkpoints are refused naming the file and the field`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "hf-refuse"
    let t = tiny 4 4 true
    let config = Path.Combine(dir.Path, "config.json")

    let refusal (text: string) =
        File.WriteAllText(config, text)

        match HuggingFace.load dir.Path id with
        | Ok(m, _) ->
            m.Dispose()
            "accepted"
        | Error e -> e

    Assert.Contains("GPT2LMHeadModel", refusal (configText t "GPT2LMHeadModel" []))

    Assert.Contains(
        "rope_scaling",
        refusal (
            configText
                t
                "LlamaForCausalLM"
                [ "rope_scaling", JsonNode.Parse """{"rope_type": "llama3", "factor": 8}""" ]
        )
    )

    Assert.Contains("hidden_act", refusal (configText t "LlamaForCausalLM" [ "hidden_act", JsonValue.Create "gelu" ]))

    Assert.Contains(
        "attention_bias",
        refusal (configText t "LlamaForCausalLM" [ "attention_bias", JsonValue.Create true ])
    )
    // a configuration without weights: the missing file is named
    Assert.Contains("model.safetensors", refusal (configText t "LlamaForCausalLM" []))
    // weights missing one tensor: the tensor is named
    let weights =
        randomWeights t 3L |> List.filter (fun (n, _) -> n <> "model.norm.weight")

    writeFolder dir.Path t "LlamaForCausalLM" weights torch.ScalarType.Float32 false
    |> ignore

    Assert.Contains("model.norm.weight", refusal (configText t "LlamaForCausalLM" []))

[<Fact>]
let ``longnet logits runs a Hugging Face folder on .npy ids and longnet export writes a folder it reads back`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use dir = new TempDir "hf-cli"
    let source = Path.Combine(dir.Path, "source")
    Directory.CreateDirectory source |> ignore
    let t = tiny 4 2 false

    let stored =
        writeFolder source t "LlamaForCausalLM" (randomWeights t 11L) torch.ScalarType.Float32 false

    let tokens = ids t
    let idsPath, logitsPath = dir.File "ids.npy", dir.File "logits.npy"
    Npy.writeTensor idsPath tokens

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runLogits [ "--model"; source; "--tokens"; idsPath; "--out"; logitsPath ]

    Assert.True((code = 0), stderr)
    let logits = Npy.readTensor logitsPath
    Assert.Equal(torch.ScalarType.Float32, logits.dtype)
    let expected = referenceLogits t stored tokens
    let diff = (logits.to_type torch.float64 - expected).abs().max().item<float>()
    Assert.True(diff <= 1e-4, $"logits differ by {diff:E2}")

    // the same model with dilated attention: runs, and differs (its groups are smaller than the sequence)
    let dilatedPath = dir.File "dilated.npy"

    let code, _, stderr =
        capture
            LongNet.Cli.Pretrained.runLogits
            [
                "--model"
                source
                "--tokens"
                idsPath
                "--out"
                dilatedPath
                "--attention"
                "dilated"
            ]

    Assert.True((code = 0), stderr)
    // the default groups (64,1) (128,2) (256,4) see earlier keys more than once: not the dense logits
    let dilatedDiff = (Npy.readTensor dilatedPath - logits).abs().max().item<float32>()
    Assert.True(dilatedDiff > 1e-3f, $"dilated attention gave the dense logits (difference {dilatedDiff})")

    let exported = Path.Combine(dir.Path, "exported")

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runExport [ "--model"; source; "--out"; exported; "--dtype"; "bfloat16" ]

    Assert.True((code = 0), stderr)
    let again = dir.File "again.npy"

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runLogits [ "--model"; exported; "--tokens"; idsPath; "--out"; again ]

    Assert.True((code = 0), stderr)
    let bf16 = (Npy.readTensor again - logits).abs().max().item<float32>()
    Assert.True(bf16 < 0.5f, $"bfloat16 export changed logits by {bf16}")

    // bad input: exit 2 naming the option
    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runLogits [ "--model"; dir.File "nothing"; "--tokens"; idsPath; "--out"; again ]

    Assert.Equal(2, code)
    Assert.Contains("--model", stderr)
    Npy.writeTensor idsPath (torch.zeros (2L, 3L))

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runLogits [ "--model"; source; "--tokens"; idsPath; "--out"; again ]

    Assert.Equal(2, code)
    Assert.Contains("--tokens", stderr)

[<Fact>]
let ``longnet import writes a checkpoint with the folder's weights and tokenizer, that train --init fine-tunes and export gives back``
    ()
    =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use dir = new TempDir "hf-import-cli"
    let source = Path.Combine(dir.Path, "source")
    Directory.CreateDirectory source |> ignore

    let t =
        { tiny 4 2 false with
            Vocab = LongNet.Tests.TokenizerTests.pieces.Length
        }

    let stored =
        writeFolder source t "LlamaForCausalLM" (randomWeights t 13L) torch.ScalarType.Float32 false

    File.WriteAllBytes(Path.Combine(source, "tokenizer.model"), LongNet.Tests.TokenizerTests.sentencePieceModel ())
    let checkpoint = dir.File "imported.ckpt"

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runImport [ "--from"; source; "--out"; checkpoint ]

    Assert.True((code = 0), stderr)

    // the checkpoint's model computes the Hugging Face definition's logits, and carries the tokenizer
    let loaded =
        LongNet.Training.Checkpoint.load checkpoint |> Result.defaultWith failwith

    use model = new LongNetModel(loaded.Header.Model)

    LongNet.Training.Checkpoint.loadWeights model loaded.Tensors
    |> Result.defaultWith failwith

    for KeyValue(_, w) in loaded.Tensors do
        w.Dispose()

    model.eval ()
    let tokens = ids t

    let diff =
        use _ = torch.no_grad ()

        (model.forward(tokens).to_type torch.float64 - referenceLogits t stored tokens).abs().max().item<float>()

    Assert.True(diff <= 1e-4, $"logits differ by {diff:E2}")

    // longnet logits --checkpoint runs the imported checkpoint to the same logits
    let idsPath, logitsPath = dir.File "ids.npy", dir.File "logits.npy"
    Npy.writeTensor idsPath tokens

    let code, _, stderr =
        capture
            LongNet.Cli.Pretrained.runLogits
            [ "--checkpoint"; checkpoint; "--tokens"; idsPath; "--out"; logitsPath ]

    Assert.True((code = 0), stderr)

    let viaCli =
        (Npy.readTensor logitsPath).to_type torch.float64
        - referenceLogits t stored tokens

    Assert.True(viaCli.abs().max().item<float>() <= 1e-4)

    match loaded.Header.Tokenizer with
    | LongNet.Text.SentencePiece bytes ->
        Assert.Equal<byte[]>(LongNet.Tests.TokenizerTests.sentencePieceModel (), bytes)
    | other -> failwith $"the checkpoint's tokenizer is {other}"

    // fine-tuning it as it is: its model and tokenizer, a text corpus, select-merge attention
    let corpus = writeCorpus dir (String.replicate 200 "hello world held ")
    let run = Path.Combine(dir.Path, "run")

    let code, _, stderr =
        capture
            LongNet.Cli.Train.run
            [
                "--corpus"
                corpus
                "--init"
                checkpoint
                "--out"
                run
                "--steps"
                "2"
                "--seq-len"
                "32"
                "--attention"
                "select-merge"
                "--block-size"
                "8"
            ]

    Assert.True((code = 0), stderr)

    let tuned =
        LongNet.Training.Checkpoint.readHeader (Path.Combine(run, "checkpoint.ckpt"))
        |> Result.defaultWith failwith

    Assert.Equal(2, tuned.Step)

    match tuned.Model.Attention with
    | AttentionKind.SelectMerge _ -> ()
    | other -> failwith $"the fine-tuned model has {other} attention"

    // generate and eval take the imported checkpoint (text through its SentencePiece tokenizer)
    // (the random model may end at once with </s>: only the run is checked)
    let code, _, stderr =
        longnet
            [
                "generate"
                "--checkpoint"
                checkpoint
                "--prompt"
                "hello"
                "--max-new-tokens"
                "3"
                "--greedy"
            ]

    Assert.True((code = 0), stderr)

    let code, _, stderr =
        longnet
            [
                "eval"
                "--checkpoint"
                checkpoint
                "--corpus"
                corpus
                "--lengths"
                "16,32"
                "--split"
                "all"
            ]

    Assert.True((code = 0), stderr)

    // or straight from the folder, with low-rank adapters
    let fromFolder = Path.Combine(dir.Path, "from-folder")

    let code, _, stderr =
        capture
            LongNet.Cli.Train.run
            [
                "--corpus"
                corpus
                "--init-hf"
                source
                "--out"
                fromFolder
                "--steps"
                "1"
                "--seq-len"
                "32"
                "--lora-rank"
                "2"
            ]

    Assert.True((code = 0), stderr)

    let adapted =
        LongNet.Training.Checkpoint.readHeader (Path.Combine(fromFolder, "checkpoint.ckpt"))
        |> Result.defaultWith failwith

    Assert.Equal(Some 2, adapted.Model.Lora |> Option.map _.Rank)
    Assert.True(adapted.Model.KvHeads = Some t.KvHeads)

    match adapted.Tokenizer with
    | LongNet.Text.SentencePiece _ -> ()
    | other -> failwith $"the run's tokenizer is {other}"

    // exported again: the folder has the tokenizer file, byte for byte
    let exported = Path.Combine(dir.Path, "exported")

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runExport [ "--model"; checkpoint; "--out"; exported ]

    Assert.True((code = 0), stderr)

    Assert.Equal<byte[]>(
        LongNet.Tests.TokenizerTests.sentencePieceModel (),
        File.ReadAllBytes(Path.Combine(exported, "tokenizer.model"))
    )

    // a folder without tokenizer.model imports for token ids only, and says so
    File.Delete(Path.Combine(source, "tokenizer.model"))
    let idsOnly = dir.File "ids-only.ckpt"

    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runImport [ "--from"; source; "--out"; idsOnly ]

    Assert.True((code = 0), stderr)
    Assert.Contains("token ids only", stderr)

    Assert.Equal(
        LongNet.Text.IdsOnly t.Vocab,
        (LongNet.Training.Checkpoint.readHeader idsOnly |> Result.defaultWith failwith).Tokenizer
    )

    // bad input: exit 2 naming the option
    let code, _, stderr =
        capture LongNet.Cli.Pretrained.runImport [ "--from"; dir.File "nowhere"; "--out"; idsOnly ]

    Assert.Equal(2, code)
    Assert.Contains("--from", stderr)

[<Fact>]
let ``a linear rope_scaling imports as position interpolation with the definition's logits, and exports back`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use source = new TempDir "hf-linear-in"
    use target = new TempDir "hf-linear-out"

    let t =
        { tiny 4 2 false with
            LinearScaling = 4.0
        }

    let stored =
        writeFolder source.Path t "LlamaForCausalLM" (randomWeights t 21L) torch.ScalarType.Float32 false

    let model, pretrained = importOrFail source.Path
    use model = model
    Assert.Equal(Interpolation 4.0, pretrained.Model.PositionScaling)
    let tokens = ids t

    let logits =
        use _ = torch.no_grad ()
        model.forward(tokens).to_type torch.float64

    let diff = (logits - referenceLogits t stored tokens).abs().max().item<float>()
    Assert.True(diff <= 1e-4, $"logits differ by {diff:E2}")
    // the unscaled reference differs: the factor matters at these positions
    let plain = referenceLogits { t with LinearScaling = 1.0 } stored tokens
    Assert.True((logits - plain).abs().max().item<float>() > 1e-3)

    HuggingFace.save model target.Path torch.ScalarType.Float32
    |> Result.defaultWith failwith

    let config =
        JsonNode.Parse(File.ReadAllText(Path.Combine(target.Path, "config.json")))

    Assert.Equal("linear", config.["rope_scaling"].["rope_type"].GetValue<string>())
    Assert.Equal(4.0, config.["rope_scaling"].["factor"].GetValue<float>())
    let again, _ = importOrFail target.Path
    use again = again
    Assert.Equal(Interpolation 4.0, again.Config.PositionScaling)

    // other types are refused, naming the field and the type
    for text in [ """{"rope_type": "dynamic", "factor": 2}"""; """{"type": "linear"}"""; "3" ] do
        File.WriteAllText(
            Path.Combine(source.Path, "config.json"),
            configText { t with LinearScaling = 1.0 } "LlamaForCausalLM" [ "rope_scaling", JsonNode.Parse text ]
        )

        match HuggingFace.load source.Path id with
        | Ok(m, _) ->
            m.Dispose()
            failwith $"accepted rope_scaling {text}"
        | Error e -> Assert.Contains("rope_scaling", e)

[<Fact>]
let ``with every block selected and no renumbering, an imported model under select-merge gives its dense logits`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use dir = new TempDir "hf-select-merge"
    let t = tiny 4 2 false

    writeFolder dir.Path t "LlamaForCausalLM" (randomWeights t 31L) torch.ScalarType.Float32 false
    |> ignore

    let dense, _ = importOrFail dir.Path
    use dense = dense

    let everyBlock =
        AttentionKind.SelectMerge
            {
                BlockSize = 8
                TopK = 8
                MergeFactor = 1
                Sink = true
                RenumberPositions = false
                LocalBlocks = 0
                Selection = Casm.BlockSelection.Correlation
            }

    let selectMerge, _ =
        match HuggingFace.load dir.Path (fun c -> { c with Attention = everyBlock }) with
        | Ok loaded -> loaded
        | Error e -> failwith e

    use selectMerge = selectMerge
    let tokens = ids t // 23 positions: 3 blocks of 8, all within top-k
    use _ = torch.no_grad ()

    let diff =
        (selectMerge.forward tokens - dense.forward tokens).abs().max().item<float32>()

    Assert.True(diff < 1e-4f, $"select-merge over every block differs from dense by {diff}")
