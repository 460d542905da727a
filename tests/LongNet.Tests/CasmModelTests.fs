/// CASM in the model: the attention switch and the position scaling in the model configuration (JSON
/// round trip, old files, validation naming the field), causality of a select-merge model, generation
/// equal to the greedy argmax of the full forward for every attention kind, CRD NTK in the trainer
/// (seeded, reproducible, different from plain), passkey training samples, and the CLI: train flags,
/// passkey on trained checkpoints, the bench row and a miniature of the passkey study.
/// Serial: models seed libtorch's global generator and hold Scalars across native calls.
[<Xunit.Collection("serial")>]
module LongNet.Tests.CasmModelTests

open System
open System.IO
open System.Text.Json.Nodes
open Xunit
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

let private selectMerge =
    AttentionKind.SelectMerge
        {
            BlockSize = 3
            TopK = 1
            MergeFactor = 1
            Sink = true
            RenumberPositions = true
            LocalBlocks = 0
            Selection = Casm.BlockSelection.Correlation
        }

let private attentions =
    [
        AttentionKind.Dilated
        AttentionKind.Dense
        selectMerge
        AttentionKind.SelectMerge
            {
                BlockSize = 4
                TopK = 2
                MergeFactor = 2
                Sink = false
                RenumberPositions = false
                LocalBlocks = 0
                Selection = Casm.BlockSelection.Correlation
            }
        AttentionKind.SelectMerge
            {
                BlockSize = 2
                TopK = 3
                MergeFactor = 1
                Sink = true
                RenumberPositions = true
                LocalBlocks = 1
                Selection = Casm.BlockSelection.Trainable
            }
    ]

let private crdSchedule =
    {
        MinScale = 1.0
        MaxScale = 4.0
        CycleSteps = 3
        TrainedLength = 24
        MinLength = 8
    }

let private scalings =
    [
        PlainRope
        Interpolation 2.0
        NtkAware 3.0
        DynamicNtk 16
        Yarn
            {
                Scale = 4.0
                TrainedLength = 32
                Alpha = 1.0
                Beta = 32.0
            }
        CrdNtk crdSchedule
    ]

/// A tiny byte-level decoder with the given attention and scaling.
let private tiny (attention: AttentionKind) (scaling: ScalingMethod) : ModelConfig =
    { ModelConfig.defaults with
        EmbedDim = 16
        Layers = 2
        Heads = 2
        FeedForwardDim = 24
        Groups = Groups.ofPairsOrRaise [ 4, 1; 8, 2 ]
        Attention = attention
        PositionScaling = scaling
    }

[<Fact>]
let ``the attention kind and the position scaling survive the JSON round trip`` () =
    for attention in attentions do
        for scaling in scalings do
            let config = tiny attention scaling
            let text = (ModelConfig.toJson config).ToJsonString()

            match ModelConfig.ofJson "model" ModelConfig.defaults (JsonNode.Parse text) with
            | Ok back -> Assert.Equal(config, back)
            | Error e -> failwith $"{e.Parameter}: {e.Message}"

[<Fact>]
let ``a configuration written before the switch loads with dilated attention and plain RoPE`` () =
    let old = ModelConfig.toJson (tiny AttentionKind.Dense (NtkAware 2.0))
    old.Remove "attention" |> ignore
    old.Remove "selectMerge" |> ignore
    old.Remove "positionScaling" |> ignore

    match ModelConfig.ofJson "model" ModelConfig.defaults old with
    | Ok c ->
        Assert.Equal(AttentionKind.Dilated, c.Attention)
        Assert.Equal(PlainRope, c.PositionScaling)
    | Error e -> failwith e.Message

[<Theory>]
[<InlineData("""{"attention": "sparse"}""", "model.attention")>]
[<InlineData("""{"attention": "select-merge", "selectMerge": {"blockSize": 0}}""", "model.selectMerge.blockSize")>]
[<InlineData("""{"attention": "select-merge", "selectMerge": {"topK": -1}}""", "model.selectMerge.topK")>]
[<InlineData("""{"attention": "select-merge", "selectMerge": {"mergeFactor": 0}}""", "model.selectMerge.mergeFactor")>]
[<InlineData("""{"attention": "select-merge", "selectMerge": {"localBlocks": -1}}""", "model.selectMerge.localBlocks")>]
[<InlineData("""{"attention": "select-merge", "selectMerge": {"selection": "learned"}}""", "model.selectMerge.selection")>]
[<InlineData("""{"attention": "select-merge", "selectMerge": {"topK": 1, "selection": "trainable"}}""",
             "model.selectMerge.topK")>]
[<InlineData("""{"selectMerge": {"blocks": 4}}""", "model.selectMerge.blocks")>]
[<InlineData("""{"attention": "select-merge", "position": "xpos"}""", "model.selectMerge.renumberPositions")>]
[<InlineData("""{"positionScaling": {"method": "rope2"}}""", "model.positionScaling.method")>]
[<InlineData("""{"attention": "select-merge", "position": "distance-bias"}""", "model.position")>]
[<InlineData("""{"position": "distance-bias", "biasForm": "cubic"}""", "model.biasForm")>]
[<InlineData("""{"position": "distance-bias", "biasMaxSlope": 0}""", "model.biasMaxSlope")>]
[<InlineData("""{"position": "distance-bias", "biasMaxSlope": 1, "biasMinSlope": 2}""", "model.biasMinSlope")>]
[<InlineData("""{"positionScaling": {"method": "ntk"}, "position": "distance-bias"}""", "model.positionScaling.method")>]
[<InlineData("""{"positionScaling": {"method": "pi", "scale": 0.5}}""", "model.positionScaling.scale")>]
[<InlineData("""{"positionScaling": {"method": "ntk"}, "position": "xpos"}""", "model.positionScaling.method")>]
[<InlineData("""{"positionScaling": {"method": "dynamic-ntk", "trainedLength": 0}}""",
             "model.positionScaling.trainedLength")>]
[<InlineData("""{"positionScaling": {"method": "yarn", "scale": 2, "yarnAlpha": 40}}""",
             "model.positionScaling.yarnBeta")>]
[<InlineData("""{"positionScaling": {"method": "crd-ntk", "crdMinScale": 0.5}}""", "model.positionScaling.crdMinScale")>]
[<InlineData("""{"positionScaling": {"method": "crd-ntk", "crdMaxScale": 0.9}}""", "model.positionScaling.crdMaxScale")>]
[<InlineData("""{"positionScaling": {"method": "crd-ntk", "crdCycleSteps": 0}}""", "model.positionScaling.crdCycleSteps")>]
[<InlineData("""{"positionScaling": {"method": "crd-ntk", "trainedLength": 64, "crdMinLength": 65}}""",
             "model.positionScaling.crdMinLength")>]
let ``invalid attention and scaling fields are rejected naming the field`` (json: string, field: string) =
    match ModelConfig.ofJson "model" ModelConfig.defaults (JsonNode.Parse json) with
    | Ok _ -> failwith $"accepted {json}"
    | Error e ->
        Assert.Equal(field, e.Parameter)
        Assert.Contains(field.Substring("model.".Length), e.Message)

[<Fact>]
let ``CRD NTK evaluates as dynamic NTK over its trained length`` () =
    let at (method: ScalingMethod) length =
        ScaledRope.inverseFrequencies { Base = 10000.0; Method = method } 16 length

    for length in [ 5; 24; 100 ] do
        Assert.Equal<float[]>(at (DynamicNtk 24) length, at (CrdNtk crdSchedule) length)

    Assert.NotEqual<float[]>(at PlainRope 100, at (CrdNtk crdSchedule) 100)

[<Fact>]
let ``a select-merge model is causal: later tokens never change earlier logits`` () =
    init.Force()

    for scaling in [ PlainRope; CrdNtk crdSchedule ] do
        for attention in attentions |> List.filter (fun a -> a <> AttentionKind.Dilated) do
            torch.manual_seed 3L |> ignore
            use model = new LongNetModel(tiny attention scaling)
            model.eval ()
            use _ = torch.no_grad ()
            use scope = torch.NewDisposeScope()
            let tokens = torch.randint (0L, 259L, [| 1L; 29L |])
            let changed = tokens.clone ()
            changed.narrow(1L, 17L, 12L).random_(0.0, 259.0) |> ignore
            let a = (model.forward tokens).narrow(1L, 0L, 17L)
            let b = (model.forward changed).narrow(1L, 0L, 17L)
            let diff = (a - b).abs().max().item<float32>()
            // dynamic scaling depends on the length; here both inputs have the same length
            Assert.True(diff < 1e-5f, $"{attention} {scaling}: {diff}")

[<Fact>]
let ``generation equals the greedy argmax of the full forward for every attention kind`` () =
    init.Force()

    for attention in attentions do
        for scaling in
            [
                PlainRope
                DynamicNtk 8
                Yarn
                    {
                        Scale = 2.0
                        TrainedLength = 8
                        Alpha = 1.0
                        Beta = 32.0
                    }
            ] do
            torch.manual_seed 5L |> ignore
            use model = new LongNetModel(tiny attention scaling)
            let prompt = [| 72; 101; 108; 108; 111; 32; 119; 111; 114; 108; 100 |]

            let settings =
                {
                    MaxNewTokens = 9
                    Sampling = Sampling.greedy
                    StopAtEndOfText = false
                }

            let generated =
                match Generate.tokens model prompt settings None (Rng.Create 1L) ignore with
                | Ok ids -> ids
                | Error e -> failwith e

            // the oracle: the full forward over the whole sequence so far, argmax at its last position
            model.eval ()
            use _ = torch.no_grad ()
            let sequence = ResizeArray<int>(prompt)

            for _ in 1..9 do
                use scope = torch.NewDisposeScope()
                let input = torch.tensor(sequence.ToArray() |> Array.map int64).view(1L, -1L)

                let last =
                    (model.forward input).select(0L, 0L).select(0L, int64 sequence.Count - 1L)

                sequence.Add(int (last.argmax().item<int64>()))

            Assert.Equal<int[]>(sequence.ToArray().[prompt.Length ..], generated)
            Assert.Equal(ModelConfig.supportsKvCache model.Config, model.SupportsKvCache)
            // the same choices from one chunked forward over the prompt and the continuation
            use all =
                torch.tensor(sequence.ToArray().[.. sequence.Count - 2] |> Array.map int64).view(1L, -1L)

            use tail = model.GreedyTail(all, 9, 4)
            Assert.Equal<int[]>(generated, tail.data<int64>().ToArray() |> Array.map int)

[<Fact>]
let ``dense attention decodes with an exact KV cache; select-merge refuses one`` () =
    init.Force()
    torch.manual_seed 2L |> ignore
    use dense = new LongNetModel(tiny AttentionKind.Dense PlainRope)
    let tokens = Array.init 23 (fun i -> (i * 37) % 259)
    Assert.True(Generate.cacheDeviation dense tokens 5 < 1e-4)

    use sparse = new LongNetModel(tiny selectMerge PlainRope)
    Assert.False sparse.SupportsKvCache
    use cache = sparse.NewCache()

    Assert.Throws<InvalidOperationException>(fun () ->
        sparse.Prefill(torch.tensor([| 1L; 2L |]).view(1L, -1L), cache) |> ignore)
    |> ignore

/// A passkey run configuration of a tiny select-merge model with CRD NTK at 128 tokens.
let private passkeyRun (scaling: ScalingMethod) (seed: int64) : RunConfig =
    {
        Model =
            { tiny selectMerge scaling with
                Attention =
                    AttentionKind.SelectMerge
                        {
                            BlockSize = 16
                            TopK = 2
                            MergeFactor = 1
                            Sink = true
                            RenumberPositions = false
                            LocalBlocks = 0
                            Selection = Casm.BlockSelection.Correlation
                        }
            }
        Train =
            { RunConfig.tiny.Train with
                Task = PasskeySamples
                Steps = 3
                BatchSize = 2
                SeqLen = 128
                Accumulation = 2
                Seed = seed
            }
        Tokenizer = ByteTokens
    }

let private crdForPasskey =
    {
        MinScale = 1.0
        MaxScale = 8.0
        CycleSteps = 2
        TrainedLength = 128
        MinLength = 110
    }

/// (losses, draws) of a short run.
let private trainRun (config: RunConfig) =
    init.Force()

    use session =
        TrainSession.Create(config, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    [
        for _ in 1 .. config.Train.Steps ->
            match session.TrainStep [||] with
            | Ok r -> r.Loss, r.Draws
            | Error e -> failwith e
    ]

[<Fact>]
let ``training with CRD NTK draws per micro-batch, reproducibly from the seed`` () =
    let a = trainRun (passkeyRun (CrdNtk crdForPasskey) 4L)
    let b = trainRun (passkeyRun (CrdNtk crdForPasskey) 4L)
    Assert.Equal<(float * CrdDraw list) list>(a, b)

    for step, (_, draws) in List.indexed a do
        Assert.Equal(2, draws.Length)

        for i, d in List.indexed draws do
            Assert.Equal(ScaledRope.crdDraw crdForPasskey 4 step i, d)

    let plain = trainRun (passkeyRun PlainRope 4L)
    Assert.True(plain |> List.forall (fun (_, d) -> d.IsEmpty))
    Assert.NotEqual<float list>(List.map fst a, List.map fst plain)
    let other = trainRun (passkeyRun (CrdNtk crdForPasskey) 5L)
    Assert.NotEqual<float list>(List.map fst a, List.map fst other)

[<Fact>]
let ``passkey training samples have the asked length and end with the answer`` () =
    let tokenizer = Tokenizer.byteLevel ()
    let rng = Random 3

    for length in [ Passkey.minimumSampleLength tokenizer; 200; 513 ] do
        let sample = Passkey.trainingSample tokenizer length rng
        Assert.Equal(length, sample.Length)
        let text = tokenizer.Decode sample
        let key = text.Substring(text.Length - 6, 5)
        Assert.EndsWith($"{Passkey.question} {key}.", text)
        Assert.Contains($"The pass key is {key}.", text)

    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () ->
            Passkey.trainingSample tokenizer (Passkey.minimumSampleLength tokenizer - 1) rng
            |> ignore)

    Assert.Equal("length", e.ParamName)

/// Logits `[1, n, V]` (float64) of a model of `config` with the weights of `source`, at `positions`.
let private logitsAt (config: ModelConfig) (source: LongNetModel) (tokens: torch.Tensor) (positions: int64[]) =
    use model = new LongNetModel(config)
    model.``to`` (torch.ScalarType.Float64) |> ignore

    Checkpoint.loadWeights model (Checkpoint.weights source |> Map.ofList)
    |> Result.defaultWith failwith

    model.eval ()
    model.ForwardAt(tokens, positions, None)

[<Fact>]
let ``select-merge over every block at original positions equals dense attention, rotated once`` () =
    init.Force()

    let everyBlock =
        AttentionKind.SelectMerge
            {
                BlockSize = 4
                TopK = 8
                MergeFactor = 1
                Sink = true
                RenumberPositions = false
                LocalBlocks = 0
                Selection = Casm.BlockSelection.Correlation
            }

    for scaling in [ PlainRope; NtkAware 3.0 ] do
        torch.manual_seed 7L |> ignore
        use dense = new LongNetModel(tiny AttentionKind.Dense scaling)
        dense.``to`` (torch.ScalarType.Float64) |> ignore
        use tokens = torch.randint (0L, int64 dense.Config.VocabSize, [| 1L; 13L |])

        // contiguous positions (the plain forward) and the gapped ones of a CRD draw
        for positions in
            [
                Array.init 13 int64
                Array.init 13 (fun i -> int64 (if i < 5 then 2 + i else 9 + i))
            ] do
            use expected = logitsAt (tiny AttentionKind.Dense scaling) dense tokens positions
            use actual = logitsAt (tiny everyBlock scaling) dense tokens positions
            use gap = (actual - expected).abs().max()
            Assert.True(gap.item<float>() < 1e-9, $"{scaling} at {positions}: max |Δ| = {gap.item<float>()}")

[<Fact>]
let ``CRD with a trained length above seqLen is refused naming trainedLength`` () =
    init.Force()

    let config =
        passkeyRun
            (CrdNtk
                { crdForPasskey with
                    TrainedLength = 256
                })
            4L

    match TrainSession.Create(config, Tokenizer.byteLevel ()) with
    | Ok s ->
        (s :> IDisposable).Dispose()
        failwith "a CRD trained length of 256 with seqLen 128 was accepted"
    | Error e -> Assert.StartsWith("model.positionScaling.trainedLength", e)

[<Theory>]
[<InlineData("-1,0,1,2")>]
[<InlineData("0,2,2,3")>]
[<InlineData("0,3,2,4")>]
let ``HiddenAt rejects negative or non-ascending positions naming positions`` (text: string) =
    init.Force()
    use model = new LongNetModel(tiny AttentionKind.Dense PlainRope)
    use tokens = torch.zeros ([| 1L; 4L |], dtype = torch.int64)
    let positions = text.Split ',' |> Array.map int64

    let e =
        Assert.ThrowsAny<ArgumentException>(fun () -> model.HiddenAt(tokens, positions, None, None).Dispose())

    Assert.Equal("positions", e.ParamName)

[<Fact>]
let ``HiddenAt with a KV cache needs positions 0 … n−1`` () =
    init.Force()
    use model = new LongNetModel(tiny AttentionKind.Dense PlainRope)
    use tokens = torch.zeros ([| 1L; 4L |], dtype = torch.int64)
    use cache = model.NewCache()

    let e =
        Assert.ThrowsAny<ArgumentException>(fun () ->
            model.HiddenAt(tokens, [| 1L; 2L; 3L; 4L |], None, Some cache).Dispose())

    Assert.Equal("positions", e.ParamName)
    // the same tokens at 0 … n−1 fill the cache
    use hidden = model.HiddenAt(tokens, [| 0L; 1L; 2L; 3L |], None, Some cache)
    Assert.Equal(4L, cache.Position)
