/// Low-rank adapters: an adapted model starts as exactly the model it adapts, fine-tuning changes only
/// the adapters and the norms (the optimizer holds no state for the rest), merged weights compute the
/// adapted model's logits without adapters, settings round-trip through JSON and bad ones are refused
/// naming the field, and `train --init … --lora-rank` fine-tunes a checkpoint that had none.
[<Xunit.Collection("serial")>]
module LongNet.Tests.LoraTests

open System
open System.IO
open Xunit
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Training
open LongNet.Tests.TestSupport

let private lora =
    {
        Rank = 4
        Alpha = 8.0
        Targets = [ QueryProjection; KeyProjection; ValueProjection; OutputProjection ]
    }

let private config =
    { RunConfig.tiny.Model with
        Lora = Some lora
        KvHeads = Some 1
    }

let private tokens () =
    let generator = new torch.Generator(3UL)
    torch.randint (int64 config.VocabSize, [| 2L; 40L |], generator = generator, dtype = torch.int64)

/// The base model's weights copied into a model built from `adapted` (adapters keep their start).
let private adaptedCopy (base_: LongNetModel) (adapted: ModelConfig) : LongNetModel =
    let model = new LongNetModel(adapted)
    let weights = Map.ofList (Checkpoint.weights base_)
    Checkpoint.loadWeights model weights |> Result.defaultWith failwith
    model

[<Fact>]
let ``an adapted model starts as the model it adapts`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    torch.manual_seed 5L |> ignore
    use plain = new LongNetModel({ config with Lora = None })
    use adapted = adaptedCopy plain config
    let ids = tokens ()
    use _ = torch.no_grad ()
    let diff = (adapted.forward ids - plain.forward ids).abs().max().item<float32>()
    Assert.Equal(0.0f, diff)
    // the adapters are there: A random, B zero, on each of the four projections of every layer
    let names = [ for struct (n, _) in adapted.named_parameters () -> n ]
    Assert.Equal(config.Layers * 4 * 2, names |> List.filter Lora.isAdapterParameter |> List.length)

[<Fact>]
let ``merged weights compute the adapted model's logits without adapters`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    torch.manual_seed 6L |> ignore
    use adapted = new LongNetModel(config)

    // give every B a value, so the adapters change the model
    do
        use _ = torch.no_grad ()

        for struct (name, p) in adapted.named_parameters () do
            if name.EndsWith "_lora_b" then
                p.copy_ (torch.randn (p.shape) * 0.05f) |> ignore

    use merged = new LongNetModel({ config with Lora = None })

    Checkpoint.loadWeights
        merged
        (adapted.MergedWeights()
         |> List.map (fun (n, w) -> $"model.{n}", w)
         |> Map.ofList)
    |> Result.defaultWith failwith

    let ids = tokens ()
    use _ = torch.no_grad ()
    let adaptedLogits = adapted.forward ids
    let diff = (adaptedLogits - merged.forward ids).abs().max().item<float32>()
    Assert.True(diff < 1e-4f, $"merged logits differ by {diff}")
    // and the adapters did change the model: the unmerged base weights give other logits
    use unadapted = new LongNetModel({ config with Lora = None })

    Checkpoint.loadWeights
        unadapted
        (Checkpoint.weights adapted
         |> List.filter (fun (n, _) -> not (Lora.isAdapterParameter n))
         |> Map.ofList)
    |> Result.defaultWith failwith

    let change = (adaptedLogits - unadapted.forward ids).abs().max().item<float32>()
    Assert.True(change > 1e-3f, $"the adapters changed the logits by only {change}")

[<Fact>]
let ``fine-tuning with adapters changes only the adapters and the norms`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "lora-train"

    let corpus =
        writeCorpus dir "the quick brown fox jumps over the lazy dog, again and again."

    let tokenizer = LongNet.Text.Tokenizer.byteLevel ()

    let run =
        { RunConfig.tiny with
            Model =
                { config with
                    VocabSize = tokenizer.VocabSize
                }
            Train =
                { RunConfig.tiny.Train with
                    Steps = 3
                    SeqLen = 32
                    WarmupSteps = 1
                }
        }

    use session = TrainSession.Create(run, tokenizer) |> Result.defaultWith failwith

    let before =
        [
            for struct (n, p) in session.Model.named_parameters () -> n, p.detach().clone()
        ]

    let text =
        LongNet.Text.Corpus.ofSource tokenizer (LongNet.Text.Corpus.readSource corpus |> Result.defaultWith failwith)
        |> Result.defaultWith failwith

    for _ in 1..3 do
        session.TrainStep text.Train |> Result.defaultWith failwith |> ignore

    let after = dict [ for struct (n, p) in session.Model.named_parameters () -> n, p ]

    for name, old in before do
        let same = (old - after.[name]).abs().max().item<float32>() = 0.0f

        if LongNetModel.TrainedWithAdapters name then
            // B moves from zero on its first step; norms and A follow once B is non-zero
            if name.EndsWith "_lora_b" then
                Assert.False(same, $"{name} did not train")
        else
            Assert.True(same, $"{name} changed although frozen")

    // the checkpoint's optimizer state covers the trained parameters only, and the run resumes
    let path = dir.File "lora.ckpt"
    session.Save path
    let loaded = Checkpoint.load path |> Result.defaultWith failwith

    let optimized =
        loaded.Tensors
        |> Map.toList
        |> List.choose (fun (n, _) ->
            if n.StartsWith "optim.first." then
                Some(n.Substring 12)
            else
                None)

    Assert.NotEmpty optimized
    Assert.All(optimized, fun n -> Assert.True(LongNetModel.TrainedWithAdapters n, n))
    use resumed = TrainSession.Resume(loaded, Some 4) |> Result.defaultWith failwith
    Assert.Equal(3, resumed.Step)
    resumed.TrainStep text.Train |> Result.defaultWith failwith |> ignore

    for KeyValue(_, t) in loaded.Tensors do
        t.Dispose()

[<Fact>]
let ``adapter settings round-trip through JSON and bad ones are refused naming the field`` () =
    let json = ModelConfig.toJson config

    let back =
        ModelConfig.ofJson "model" ModelConfig.defaults json
        |> Result.defaultWith (fun e -> failwith e.Message)

    Assert.Equal(Some lora, back.Lora)
    // a model without adapters writes no "lora" field
    Assert.False((ModelConfig.toJson { config with Lora = None }).ContainsKey "lora")

    let refused (l: LoraSettings) (field: string) =
        match ModelConfig.validate { config with Lora = Some l } with
        | Error e -> Assert.Equal(field, e.Parameter)
        | Ok _ -> failwith $"accepted {l}"

    refused { lora with Rank = 0 } "lora.rank"
    refused { lora with Rank = config.EmbedDim + 1 } "lora.rank"
    refused { lora with Alpha = 0.0 } "lora.alpha"
    refused { lora with Alpha = nan } "lora.alpha"
    refused { lora with Targets = [] } "lora.targets"

    refused
        { lora with
            Targets = [ QueryProjection; QueryProjection ]
        }
        "lora.targets"

    let node =
        Text.Json.Nodes.JsonNode.Parse """{ "lora": { "rank": 2, "targets": ["q", "x"] } }"""

    match ModelConfig.ofJson "model" ModelConfig.defaults node with
    | Error e -> Assert.Equal("model.lora.targets", e.Parameter)
    | Ok _ -> failwith "accepted target x"

[<Fact>]
let ``train --init with --lora-rank fine-tunes a checkpoint that had no adapters`` () =
    Native.ensureLoaded () |> ignore
    use dir = new TempDir "lora-cli"

    let corpus, checkpoint =
        trainTiny dir "adapters learn what the frozen model does not." 2

    let out = dir.File "tuned"

    let code, stdout, stderr =
        capture
            LongNet.Cli.Train.run
            [
                "--corpus"
                corpus
                "--init"
                checkpoint
                "--out"
                out
                "--steps"
                "2"
                "--lora-rank"
                "4"
                "--lora-targets"
                "q,v"
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("LoRA: rank 4, alpha 8 on q,v", stdout)

    let header =
        Checkpoint.readHeader (Path.Combine(out, "checkpoint.ckpt"))
        |> Result.defaultWith failwith

    Assert.Equal(
        Some
            {
                Rank = 4
                Alpha = 8.0
                Targets = [ QueryProjection; ValueProjection ]
            },
        header.Model.Lora
    )

    // bad input: exit 2 naming the option
    for args, option in
        [
            [ "--lora-rank"; "0" ], "--lora-rank"
            [ "--lora-rank"; "2"; "--lora-targets"; "q,z" ], "--lora-targets"
            [ "--lora-alpha"; "4" ], "--lora-alpha"
        ] do
        let code, _, stderr =
            capture LongNet.Cli.Train.run ([ "--corpus"; corpus; "--init"; checkpoint; "--out"; dir.File "bad" ] @ args)

        Assert.Equal(2, code)
        Assert.Contains(option, stderr)

[<Fact>]
let ``a Hugging Face export merges the adapters, and the folder computes the adapted logits`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use dir = new TempDir "lora-export"
    torch.manual_seed 8L |> ignore

    let llama =
        { config with
            Norm = RmsNormalization
            FeedForward = SwiGlu
            Attention = AttentionKind.Dense
        }

    use adapted = new LongNetModel(llama)

    do
        use _ = torch.no_grad ()

        for struct (name, p) in adapted.named_parameters () do
            if name.EndsWith "_lora_b" then
                p.copy_ (torch.randn (p.shape) * 0.05f) |> ignore

    LongNet.Interop.HuggingFace.save adapted dir.Path torch.ScalarType.Float32
    |> Result.defaultWith failwith

    let imported, _ =
        LongNet.Interop.HuggingFace.load dir.Path id |> Result.defaultWith failwith

    use imported = imported
    Assert.True(imported.Config.Lora.IsNone)
    let ids = tokens ()
    use _ = torch.no_grad ()
    let diff = (imported.forward ids - adapted.forward ids).abs().max().item<float32>()
    Assert.True(diff < 1e-4f, $"the exported folder's logits differ by {diff}")

[<Fact>]
let ``decoding an adapted model with the KV cache gives its full-forward logits`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    torch.manual_seed 9L |> ignore
    use model = new LongNetModel(config)

    do
        use _ = torch.no_grad ()

        for struct (name, p) in model.named_parameters () do
            if name.EndsWith "_lora_b" then
                p.copy_ (torch.randn (p.shape) * 0.05f) |> ignore

    let ids = tokens ()
    use _ = torch.no_grad ()
    let full = model.forward ids
    use cache = model.NewCache()
    let prefill = model.Prefill(ids.narrow (1L, 0L, 30L), cache)

    let mutable worst =
        (prefill - full.narrow (1L, 0L, 30L)).abs().max().item<float32>()

    for p in 30L .. 39L do
        let step = model.Step(ids.select (1L, p), cache)
        worst <- max worst ((step - full.select (1L, p)).abs().max().item<float32>())

    Assert.True(worst < 1e-4f, $"cached decoding differs by {worst}")

[<Fact>]
let ``a checkpoint's adapters are never dropped silently, and alpha defaults to twice the rank`` () =
    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    use adapted = new LongNetModel(config)
    use plain = new LongNetModel({ config with Lora = None })

    match Checkpoint.loadWeights plain (Map.ofList (Checkpoint.weights adapted)) with
    | Ok() -> failwith "adapters were dropped without a word"
    | Error e -> Assert.Contains("low-rank adapter", e)

    let node = Text.Json.Nodes.JsonNode.Parse """{ "lora": { "rank": 4 } }"""

    let read =
        ModelConfig.ofJson "model" ModelConfig.defaults node
        |> Result.defaultWith (fun e -> failwith e.Message)

    Assert.Equal(Some 8.0, read.Lora |> Option.map _.Alpha)
