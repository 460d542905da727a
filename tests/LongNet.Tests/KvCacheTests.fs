/// KV-cache decoding is exact: for random small models (groups, heads, widths, layers, position
/// encodings, offsets) and lengths up to several times the largest segment, decoding one token at a
/// time after a random-length prefill gives the full forward's logits at every position (float64,
/// within 1e-9), and the cache never holds more than the largest segment.
[<Xunit.Collection("serial")>]
module LongNet.Tests.KvCacheTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open FsCheck.Xunit
open TorchSharp
open LongNet
open LongNet.Modules

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

/// A random decoder and a token sequence to decode.
[<StructuredFormatDisplay("{Display}")>]
type CacheCase =
    {
        Groups: (int * int) list
        Heads: int
        HeadDim: int
        Layers: int
        FeedForward: FeedForwardKind
        Position: PositionEncoding
        Offsets: HeadOffsets
        SubLayerNorm: bool
        SmearedKeys: bool
        /// Key/value heads (a divisor of Heads: grouped-query attention when fewer).
        KvHeads: int
        /// LayerNorm or RMSNorm in the blocks.
        Norm: NormKind
        Batch: int
        Length: int
        Prefill: int
        Seed: int
    }

    member c.Display =
        let groups = c.Groups |> List.map (fun (w, r) -> $"({w},{r})") |> String.concat " "

        $"groups=[{groups}] h={c.Heads} d={c.HeadDim} layers={c.Layers} {c.FeedForward} {c.Position} {c.Offsets} "
        + $"subLN={c.SubLayerNorm} smear={c.SmearedKeys} kv={c.KvHeads} {c.Norm} b={c.Batch} n={c.Length} prefill={c.Prefill} seed={c.Seed}"

    override c.ToString() = c.Display

/// The model configuration of a case.
let configOf (c: CacheCase) : ModelConfig =
    { ModelConfig.defaults with
        VocabSize = 13
        EmbedDim = c.Heads * c.HeadDim
        Layers = c.Layers
        Heads = c.Heads
        FeedForwardDim = 7
        FeedForward = c.FeedForward
        Groups = Groups.ofPairsOrRaise c.Groups
        Offsets = c.Offsets
        Position = c.Position
        SubLayerNorm = c.SubLayerNorm
        SmearedKeys = c.SmearedKeys
        KvHeads = Some c.KvHeads
        Norm = c.Norm
        MaxPositions = 2000
    }

let private groupGen =
    gen {
        let! w = Gen.choose (1, 9)
        let! r = Gen.choose (1, w)
        return w, r
    }

let private caseGen =
    gen {
        let! count = Gen.choose (1, 3)
        let! groups = Gen.listOfLength count groupGen |> Gen.map List.distinct
        let largest = groups |> List.map fst |> List.max
        let! heads = Gen.choose (1, 4)
        let! halfDim = Gen.choose (1, 3)
        let! layers = Gen.choose (1, 2)
        let! feedForward = Gen.elements [ SwiGlu; Gelu ]

        let! position =
            Gen.elements
                [
                    NoPosition
                    Rope Rope.defaultRope
                    XPos { Base = 10000.0; ScaleBase = 64.0 }
                    DistanceBiased Rope.defaultDistanceBias
                    DistanceBiased
                        {
                            Form = LinearBias
                            MaxSlope = 0.5
                            MinSlope = 0.01
                        }
                ]

        let! offsets = Gen.elements [ Paper; Blocks ]
        let! subLn = Gen.elements [ false; true ]
        let! smear = Gen.elements [ false; true ]
        let! kvHeads = Gen.elements ([ 1..heads ] |> List.filter (fun k -> heads % k = 0))
        let! norm = Gen.elements [ LayerNormalization; RmsNormalization ]
        let! batch = Gen.choose (1, 2)
        let! length = Gen.choose (1, 4 * largest + 5)
        let! prefill = Gen.choose (1, length)
        let! seed = Gen.choose (0, 1_000_000)

        return
            {
                Groups = groups
                Heads = heads
                HeadDim = 2 * halfDim
                Layers = layers
                FeedForward = feedForward
                Position = position
                Offsets = offsets
                SubLayerNorm = subLn
                SmearedKeys = smear
                KvHeads = kvHeads
                Norm = norm
                Batch = batch
                Length = length
                Prefill = prefill
                Seed = seed
            }
    }

/// Arbitraries of this file.
type Arbitraries =
    static member CacheCase() = Arb.fromGen caseGen

/// Decodes a case both ways: (max |Δ logit|, the most rows any layer cache held).
let decodeBothWays (c: CacheCase) : float * int64 =
    init.Force()
    use scope = torch.NewDisposeScope()
    torch.manual_seed (int64 c.Seed) |> ignore
    use model = new LongNetModel(configOf c)
    model.``to`` (torch.float64) |> ignore
    model.eval ()
    use _ = torch.no_grad ()

    // smearing gates away from their initial ½, different per head and layer
    for struct (name, p) in model.named_parameters () do
        if name.EndsWith "k_smear" then
            p.copy_ (torch.randn (p.shape, dtype = p.dtype)) |> ignore

    let tokens = torch.randint (13L, [| int64 c.Batch; int64 c.Length |])
    let full = model.forward tokens
    use cache = model.NewCache()
    let prefilled = model.Prefill(tokens.narrow (1L, 0L, int64 c.Prefill), cache)

    let mutable worst =
        (prefilled - full.narrow (1L, 0L, int64 c.Prefill)).abs().max().item<float>()

    let mutable rows = cache.MaxRows

    for p in c.Prefill .. c.Length - 1 do
        let logits = model.Step(tokens.select (1L, int64 p), cache)
        worst <- max worst ((logits - full.select (1L, int64 p)).abs().max().item<float>())
        rows <- max rows cache.MaxRows

    worst, rows

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 60)>]
let ``KV-cache decoding gives the full forward's logits at every position, far beyond the largest segment``
    (c: CacheCase)
    =
    let worst, _ = decodeBothWays c
    worst <= 1e-9 |> Prop.label $"max |Δ logit| = {worst:E3}"

[<Property(Arbitrary = [| typeof<Arbitraries> |], MaxTest = 25)>]
let ``the KV cache never holds more rows than the largest segment`` (c: CacheCase) =
    let _, rows = decodeBothWays c
    let largest = c.Groups |> List.map fst |> List.max
    rows <= int64 largest |> Prop.label $"{rows} rows > largest segment {largest}"

[<Fact>]
let ``decoding 1000 positions with segments up to 64 stays exact and bounded`` () =
    let c =
        {
            Groups = [ 16, 1; 32, 2; 64, 4 ]
            Heads = 4
            HeadDim = 4
            Layers = 2
            FeedForward = SwiGlu
            Position = Rope Rope.defaultRope
            Offsets = Paper
            SubLayerNorm = false
            SmearedKeys = true
            KvHeads = 2
            Norm = RmsNormalization
            Batch = 1
            Length = 1000
            Prefill = 3
            Seed = 7
        }

    let worst, rows = decodeBothWays c
    Assert.True(worst <= 1e-9, $"max |Δ logit| = {worst:E3}")
    Assert.True(rows <= 64L, $"{rows} rows")

[<Fact>]
let ``the step attention covers exactly the dilated positions of the head's segment`` () =
    let config = DilatedConfig.createOrRaise [ 8 ] [ 4 ] Paper true None
    let g = config.Groups.Head
    // p = 13: segment [8, 16), u = 5; head 1 (offset 1) sees 9 and 13; head 0 (offset 0) does not cover 13
    Assert.Equal<int64[]>([| 9L; 13L |], KvCache.keyPositions config 4 g 1 13L)
    Assert.Empty(KvCache.keyPositions config 4 g 0 13L)
    Assert.Equal(8L, KvCache.firstNeeded config 13L)

[<Fact>]
let ``stepping an encoder is refused with a clear error`` () =
    init.Force()

    let c =
        { ModelConfig.defaults with
            VocabSize = 11
            EmbedDim = 8
            Heads = 2
            Layers = 1
            FeedForwardDim = 8
            Groups = Groups.ofPairsOrRaise [ 4, 1 ]
            Architecture = Encoder
        }

    use model = new LongNetModel(c)
    use cache = model.NewCache()

    let e =
        Assert.Throws<InvalidOperationException>(fun () -> model.Step(torch.tensor [| 1L |], cache) |> ignore)

    Assert.Contains("decoder", e.Message)

[<Fact>]
let ``a grouped-query model's cache holds its key/value heads, not a copy per query head`` () =
    init.Force()

    let c =
        { ModelConfig.defaults with
            VocabSize = 11
            EmbedDim = 16
            Heads = 4
            KvHeads = Some 1
            Layers = 2
            FeedForwardDim = 8
            Groups = Groups.ofPairsOrRaise [ 8, 1; 16, 2 ]
        }

    use model = new LongNetModel(c)
    use cache = model.NewCache()
    use _ = torch.no_grad ()
    let prompt = torch.tensor([| 1L; 2L; 3L; 4L; 5L |]).unsqueeze 0L
    model.Prefill(prompt, cache) |> ignore
    model.Step(torch.tensor [| 6L |], cache) |> ignore

    for i in 0 .. cache.Layers - 1 do
        let layer = cache.Layer i
        Assert.Equal<int64[]>([| 1L; 1L; 6L; 4L |], layer.Keys.Value.shape)
        Assert.Equal<int64[]>([| 1L; 1L; 6L; 4L |], layer.Values.Value.shape)
