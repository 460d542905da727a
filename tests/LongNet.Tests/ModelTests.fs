/// The LongNet modules: shapes, causality of the decoder and not of the encoder, the drop-in
/// multi-head interface, relative positions of RoPE and xPos, gradients, and configuration errors that
/// name the field.
[<Xunit.Collection("serial")>]
module LongNet.Tests.ModelTests

open System
open Xunit
open TorchSharp
open LongNet
open LongNet.Modules

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

let private small (architecture: Architecture) =
    { ModelConfig.defaults with
        VocabSize = 17
        EmbedDim = 12
        Layers = 2
        Heads = 3
        FeedForwardDim = 10
        Groups = Groups.ofPairsOrRaise [ 4, 1; 8, 2 ]
        Architecture = architecture
    }

let private dilated causal =
    DilatedConfig.createOrRaise [ 4; 8 ] [ 1; 2 ] Paper causal None

let private attentionSettings position causal =
    {
        Embed = 12
        Heads = 3
        Dilated = dilated causal
        Attention = AttentionKind.Dilated
        Position = position
        SubLayerNorm = true
        Dropout = 0.0
        Bias = true
        LayerNormEpsilon = 1e-5
        SmearedKeys = false
        KvHeads = 3
        Lora = None
    }

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) =
    (a - b).abs().max().to_type(torch.float64).item<float>()

[<Fact>]
let ``multi-head dilated attention maps [batch, seq, embed] to the same shape`` () =
    init.Force()
    use scope = torch.NewDisposeScope()

    for position in
        [
            NoPosition
            Rope Rope.defaultRope
            XPos Rope.defaultXPos
            DistanceBiased Rope.defaultDistanceBias
        ] do
        use attention =
            new MultiheadDilatedAttention("attn", attentionSettings position true)

        let x = torch.randn (2L, 37L, 12L)
        Assert.Equal<int64[]>([| 2L; 37L; 12L |], attention.forward(x).shape)

[<Fact>]
let ``the three-input forward with one input equals self-attention`` () =
    init.Force()
    use scope = torch.NewDisposeScope()

    use attention =
        new MultiheadDilatedAttention("attn", attentionSettings (Rope Rope.defaultRope) false)

    attention.``to`` (torch.float64) |> ignore
    let x = torch.randn (2L, 19L, 12L, dtype = torch.float64)
    Assert.True(maxDiff (attention.forward x) (attention.Forward(x, x, x)) < 1e-12)

[<Fact>]
let ``feed-forward networks keep the shape`` () =
    init.Force()
    use scope = torch.NewDisposeScope()

    for kind in [ SwiGlu; Gelu ] do
        for subLn in [ false; true ] do
            use ffn = new FeedForward("ffn", 12, 20, kind, subLn, true, 1e-5)
            Assert.Equal<int64[]>([| 3L; 5L; 12L |], ffn.forward(torch.randn (3L, 5L, 12L)).shape)

[<Fact>]
let ``the decoder gives logits [batch, seq, vocab] and the encoder hidden states [batch, seq, embed]`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    use decoder = new LongNetModel(small Decoder)
    use encoder = new LongNetModel(small Encoder)
    let tokens = torch.randint (17L, [| 2L; 23L |])
    Assert.Equal<int64[]>([| 2L; 23L; 17L |], decoder.forward(tokens).shape)
    Assert.Equal<int64[]>([| 2L; 23L; 12L |], encoder.Hidden(tokens, None).shape)
    Assert.Equal<int64[]>([| 2L; 23L; 17L |], encoder.forward(tokens).shape)

[<Fact>]
let ``the decoder is causal: changing later tokens leaves earlier logits unchanged`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    torch.manual_seed 3L |> ignore
    use model = new LongNetModel(small Decoder)
    model.``to`` (torch.float64) |> ignore
    let tokens = torch.randint (17L, [| 1L; 29L |])
    let changed = tokens.clone ()
    changed.narrow(1L, 20L, 9L).fill_(5L.ToScalar()) |> ignore
    let a, b = model.forward tokens, model.forward changed
    Assert.True(maxDiff (a.narrow (1L, 0L, 20L)) (b.narrow (1L, 0L, 20L)) < 1e-12)
    Assert.True(maxDiff a b > 1e-6)

[<Fact>]
let ``with smeared keys the decoder stays causal`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    torch.manual_seed 3L |> ignore

    use model =
        new LongNetModel(
            { small Decoder with
                SmearedKeys = true
            }
        )

    model.``to`` (torch.float64) |> ignore
    let tokens = torch.randint (17L, [| 1L; 29L |])
    let changed = tokens.clone ()
    changed.narrow(1L, 20L, 9L).fill_(5L.ToScalar()) |> ignore
    let a, b = model.forward tokens, model.forward changed
    Assert.True(maxDiff (a.narrow (1L, 0L, 20L)) (b.narrow (1L, 0L, 20L)) < 1e-12)
    Assert.True(maxDiff a b > 1e-6)

[<Fact>]
let ``smeared keys whose gates are fully open equal plain keys, and a closed gate reads the previous key`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    torch.manual_seed 5L |> ignore
    use plain = new LongNetModel(small Decoder)
    torch.manual_seed 5L |> ignore

    use smeared =
        new LongNetModel(
            { small Decoder with
                SmearedKeys = true
            }
        )

    for m in [ plain; smeared ] do
        m.``to`` (torch.float64) |> ignore

    let gates =
        [
            for struct (name, p) in smeared.named_parameters () do
                if name.EndsWith "k_smear" then
                    p
        ]

    Assert.Equal(2, gates.Length) // one per layer

    use _ = torch.no_grad ()
    let tokens = torch.randint (17L, [| 2L; 21L |])

    for g in gates do
        g.fill_ (60.0.ToScalar()) |> ignore // sigmoid(60) = 1 in float64

    Assert.True(maxDiff (plain.forward tokens) (smeared.forward tokens) < 1e-12)

    for g in gates do
        g.fill_ (0.0.ToScalar()) |> ignore

    Assert.True(maxDiff (plain.forward tokens) (smeared.forward tokens) > 1e-6)

[<Fact>]
let ``a smeared key is the gate's mix of this position's key and the previous one's`` () =
    init.Force()
    use scope = torch.NewDisposeScope()

    // without biases the key projection is linear, so smearing the raw keys equals smearing the inputs
    let settings smeared =
        { attentionSettings (Rope Rope.defaultRope) true with
            Bias = false
            SmearedKeys = smeared
        }

    torch.manual_seed 9L |> ignore
    use plain = new MultiheadDilatedAttention("attn", settings false)
    torch.manual_seed 9L |> ignore
    use smeared = new MultiheadDilatedAttention("attn", settings true)

    for m in [ plain; smeared ] do
        m.``to`` (torch.float64) |> ignore

    use _ = torch.no_grad ()
    let q = torch.randn (2L, 19L, 12L, dtype = torch.float64)
    let k = torch.randn (2L, 19L, 12L, dtype = torch.float64)
    let v = torch.randn (2L, 19L, 12L, dtype = torch.float64)
    // the previous position's input; zeros before the first
    let previous =
        torch.cat ([| torch.zeros (2L, 1L, 12L, dtype = torch.float64); k.narrow (1L, 0L, 18L) |], 1L)

    let gate = smeared.get_parameter "k_smear"

    gate.fill_ ((-60.0).ToScalar()) |> ignore // sigmoid(−60) ≈ 9e-27: the previous key alone
    Assert.True(maxDiff (plain.Forward(q, previous, v)) (smeared.Forward(q, k, v)) < 1e-12)

    gate.fill_ (0.0.ToScalar()) |> ignore // g = ½: the mean of the two
    Assert.True(maxDiff (plain.Forward(q, (k + previous) / 2.0, v)) (smeared.Forward(q, k, v)) < 1e-12)

[<Fact>]
let ``a model with smeared keys built inside a dispose scope outlives the scope`` () =
    init.Force()

    let model =
        use _ = torch.NewDisposeScope()

        new LongNetModel(
            { small Decoder with
                SmearedKeys = true
            }
        )

    use model = model
    use scope = torch.NewDisposeScope()
    let logits = model.forward (torch.randint (17L, [| 1L; 9L |]))
    Assert.Equal<int64[]>([| 1L; 9L; 17L |], logits.shape)

/// What `TrainSession.Create` says on each of two simulated ranks for the tiny run with `model`.
let private splitOutcome (model: ModelConfig) =
    init.Force()

    let config =
        { LongNet.Training.RunConfig.tiny with
            Model = model
        }

    LongNet.Distributed.Simulated.run 2 (fun comm ->
        match LongNet.Training.TrainSession.Create(config, LongNet.Text.Tokenizer.byteLevel (), comm) with
        | Ok s ->
            (s :> IDisposable).Dispose()
            "accepted"
        | Error e -> e)

[<Fact>]
let ``a model with smeared keys is refused for training split over ranks, naming the field`` () =
    let outcome =
        splitOutcome
            { LongNet.Training.RunConfig.tiny.Model with
                SmearedKeys = true
            }

    Assert.All(outcome, (fun e -> Assert.StartsWith("model.smearedKeys", e)))

[<Fact>]
let ``a distance-biased model is refused for training split over ranks, naming the field`` () =
    let outcome =
        splitOutcome
            { LongNet.Training.RunConfig.tiny.Model with
                Position = DistanceBiased Rope.defaultDistanceBias
            }

    Assert.All(outcome, (fun e -> Assert.StartsWith("model.position", e)))

[<Fact>]
let ``the encoder is not causal: a later token changes earlier outputs in its segment`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    torch.manual_seed 3L |> ignore
    use model = new LongNetModel(small Encoder)
    model.``to`` (torch.float64) |> ignore
    let tokens = torch.randint (17L, [| 1L; 16L |])
    let changed = tokens.clone ()

    changed.narrow(1L, 7L, 1L).fill_(((tokens.[0L, 7L].item<int64>() + 1L) % 17L).ToScalar())
    |> ignore

    let a, b = model.forward tokens, model.forward changed
    Assert.True(maxDiff (a.narrow (1L, 0L, 7L)) (b.narrow (1L, 0L, 7L)) > 1e-9)

[<Fact>]
let ``every parameter gets a gradient`` () =
    init.Force()
    use scope = torch.NewDisposeScope()

    use model =
        new LongNetModel(
            { small Decoder with
                SubLayerNorm = true
                TiedEmbeddings = false
                Bias = true
            }
        )

    let tokens = torch.randint (17L, [| 2L; 11L |])
    let logits = model.forward tokens
    logits.square().mean().backward()

    for struct (name, p) in model.named_parameters () do
        Assert.True(not (isNull p.grad) && p.grad.abs().sum().item<float32>() > 0.0f, $"no gradient for {name}")

[<Fact>]
let ``tied embeddings share one weight and untied ones add a head`` () =
    init.Force()
    use tied = new LongNetModel(small Decoder)

    use untied =
        new LongNetModel(
            { small Decoder with
                TiedEmbeddings = false
            }
        )

    Assert.Equal(tied.ParameterCount + 17L * 12L, untied.ParameterCount)

let private relativeScoreError (encoding: PositionEncoding) =
    // q at position p and k at position m, then both shifted by 37: the score must not change.
    use scope = torch.NewDisposeScope()
    let q = torch.randn (1L, 1L, 1L, 8L, dtype = torch.float64)
    let k = torch.randn (1L, 1L, 1L, 8L, dtype = torch.float64)

    let score (p: int64) (m: int64) =
        let tq = Rope.tables encoding 8 [| p |] torch.float64 torch.CPU
        let tk = Rope.tables encoding 8 [| m |] torch.float64 torch.CPU
        let q', _ = Rope.apply tq q q
        let _, k' = Rope.apply tk k k
        (q' * k').sum().item<float>()

    [ 5L, 2L; 40L, 3L; 100L, 100L ]
    |> List.map (fun (p, m) -> abs (score p m - score (p + 37L) (m + 37L)))
    |> List.max

[<Fact>]
let ``RoPE scores depend only on the distance between positions`` () =
    init.Force()
    Assert.True(relativeScoreError (Rope Rope.defaultRope) < 1e-10)

[<Fact>]
let ``xPos scores depend only on the distance between positions`` () =
    init.Force()
    Assert.True(relativeScoreError (XPos Rope.defaultXPos) < 1e-10)

[<Fact>]
let ``RoPE rotates interleaved pairs by p·θ^(−2i/d)`` () =
    init.Force()
    use scope = torch.NewDisposeScope()

    let x =
        torch.tensor([| 1.0; 0.0; 1.0; 0.0 |], dtype = torch.float64).view(1L, 1L, 1L, 4L)

    let t = Rope.tables (Rope Rope.defaultRope) 4 [| 3L |] torch.float64 torch.CPU
    let y, _ = Rope.apply t x x
    let a0, a1 = 3.0, 3.0 * Math.Pow(10000.0, -0.5)
    let expected = [| cos a0; sin a0; cos a1; sin a1 |]
    let actual = y.reshape(-1L).data<float>().ToArray()
    Assert.True(Array.forall2 (fun e a -> abs (e - a) < 1e-12) expected actual)

let private expectError (field: string) (c: ModelConfig) =
    match ModelConfig.validate c with
    | Ok _ -> failwith $"expected an error naming {field}"
    | Error e -> Assert.Equal(field, e.Parameter)

[<Fact>]
let ``configuration errors name the field`` () =
    expectError
        "heads"
        { ModelConfig.defaults with
            EmbedDim = 32
            Heads = 3
        }

    expectError
        "position"
        { ModelConfig.defaults with
            EmbedDim = 24
            Heads = 8
        }

    expectError
        "groups"
        { ModelConfig.defaults with
            Groups = []
        }

    expectError
        "groups"
        { ModelConfig.defaults with
            Groups = Groups.ofPairsOrRaise [ 4, 1; 4, 1 ]
        }

    expectError "layers" { ModelConfig.defaults with Layers = 0 }

    expectError
        "dropout"
        { ModelConfig.defaults with
            Dropout = 1.5
        }

    expectError
        "vocabSize"
        { ModelConfig.defaults with
            VocabSize = 1
        }

[<Fact>]
let ``constructing a model from an invalid configuration raises an ArgumentException naming the field`` () =
    init.Force()

    let e =
        Assert.Throws<ArgumentException>(fun () -> new LongNetModel({ ModelConfig.defaults with Heads = 7 }) |> ignore)

    Assert.Equal("heads", e.ParamName)

[<Fact>]
let ``model configurations round-trip through JSON`` () =
    let c =
        { small Decoder with
            Position = XPos { Base = 5000.0; ScaleBase = 256.0 }
            FeedForward = Gelu
            Offsets = Blocks
            SubLayerNorm = true
            MaxPositions = 9000
        }

    match ModelConfig.ofJson "model" ModelConfig.defaults (ModelConfig.toJson c) with
    | Ok back -> Assert.Equal(c, back)
    | Error e -> failwith e.Message

[<Fact>]
let ``a distance-biased, RMSNorm, grouped-query configuration round-trips through JSON`` () =
    let c =
        { small Decoder with
            Norm = RmsNormalization
            KvHeads = Some 1
            Position =
                DistanceBiased
                    {
                        Form = LinearBias
                        MaxSlope = 0.5
                        MinSlope = 0.01
                    }
        }

    match ModelConfig.ofJson "model" ModelConfig.defaults (ModelConfig.toJson c) with
    | Ok back -> Assert.Equal(c, back)
    | Error e -> failwith e.Message

[<Fact>]
let ``groups are written as a list of groups and read in that form or the older parallel lists`` () =
    let read (text: string) =
        ModelConfig.ofJson "model" ModelConfig.defaults (Text.Json.Nodes.JsonNode.Parse text)

    let expected = Groups.ofPairsOrRaise [ 16, 1; 32, 2 ]

    let written =
        (ModelConfig.toJson
            { ModelConfig.defaults with
                Groups = expected
            })
            .ToJsonString()

    Assert.Contains(
        "\"groups\":[{\"segmentLength\":16,\"dilationRate\":1},{\"segmentLength\":32,\"dilationRate\":2}]",
        written
    )

    Assert.DoesNotContain("segmentLengths", written)

    for text in
        [
            """{ "groups": [ { "segmentLength": 16, "dilationRate": 1 }, { "segmentLength": 32, "dilationRate": 2 } ] }"""
            """{ "segmentLengths": [ 16, 32 ], "dilationRates": [ 1, 2 ] }"""
        ] do
        match read text with
        | Ok c -> Assert.Equal<Group list>(expected, c.Groups)
        | Error e -> failwith e.Message

    let refused (text: string) (parameter: string) =
        match read text with
        | Error e -> Assert.Equal(parameter, e.Parameter)
        | Ok c -> failwith $"accepted {text} as {c.Groups}"

    refused """{ "groups": [ { "segmentLength": 4, "dilationRate": 8 } ] }""" "model.groups[0]"
    refused """{ "groups": [ { "segmentLength": 4 } ] }""" "model.groups[0].dilationRate"
    refused """{ "groups": [ { "segmentLength": 4, "dilationRate": 1, "rate": 2 } ] }""" "model.groups[0].rate"
    refused """{ "groups": [ 4 ] }""" "model.groups[0]"
    refused """{ "groups": [] }""" "model.groups"
    refused """{ "groups": [ { "segmentLength": 4, "dilationRate": 1 } ], "dilationRates": [ 1 ] }""" "model.groups"
    refused """{ "segmentLengths": [ 16, 32 ], "dilationRates": [ 1 ] }""" "model.dilationRates"

[<Fact>]
let ``JSON errors name the field, unknown fields included`` () =
    let read (text: string) =
        ModelConfig.ofJson "model" ModelConfig.defaults (Text.Json.Nodes.JsonNode.Parse text)

    match read """{ "head": 4 }""" with
    | Error e -> Assert.Contains("model.head", e.Message)
    | Ok _ -> failwith "unknown field accepted"

    match read """{ "heads": "four" }""" with
    | Error e -> Assert.Equal("model.heads", e.Parameter)
    | Ok _ -> failwith "a string accepted for heads"

    match read """{ "heads": 5 }""" with
    | Error e -> Assert.Equal("model.heads", e.Parameter)
    | Ok _ -> failwith "5 heads accepted for embed 256"

[<Fact>]
let ``a sequence longer than maxPositions is refused`` () =
    init.Force()
    use model = new LongNetModel({ small Decoder with MaxPositions = 10 })

    let e =
        Assert.Throws<ArgumentException>(fun () -> model.forward (torch.zeros (1L, 11L, dtype = torch.int64)) |> ignore)

    Assert.Contains("maxPositions", e.Message)
