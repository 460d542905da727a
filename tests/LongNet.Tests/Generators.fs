/// Domain generators for the property suite: valid dilated-attention cases (config, shapes, seed) that
/// shrink towards small counterexamples, and invalid configs / inputs paired with the parameter the
/// error must name. Every generator produces only values of its kind — nothing is filtered with `==>`.
module LongNet.Tests.Generators

open System
open FsCheck
open FsCheck.FSharp
open TorchSharp
open LongNet

let private loaded =
    lazy
        (Native.ensureLoaded () |> ignore
         // The tensors here are tiny: one intra-op thread avoids OpenMP oversubscription when xunit runs
         // test classes in parallel (or other processes share the two cores).
         torch.set_num_threads 1)

/// Loads libtorch once (and uses one intra-op thread); call before the first `torch` use of a test.
let init () = loaded.Force()

/// Builds a config from (w, r) pairs that are known to be valid.
let configOf (groups: (int * int) list) (offsets: HeadOffsets) (causal: bool) (scale: float option) =
    DilatedConfig.createOrRaise (List.map fst groups) (List.map snd groups) offsets causal scale

/// The (w, r) pairs of a config.
let pairsOf (config: DilatedConfig) =
    config.Groups |> List.map (fun g -> g.SegmentLength, g.DilationRate)

/// One valid dilated-attention case: a config and the shape `[Batch, Heads, N, HeadDim]` of q, k, v,
/// whose values come from `Seed`.
[<StructuredFormatDisplay("{Display}")>]
type Case =
    {
        Config: DilatedConfig
        Batch: int
        Heads: int
        N: int
        HeadDim: int
        Seed: int
    }

    /// A one-line description for counterexamples.
    member c.Display =
        let groups =
            pairsOf c.Config |> List.map (fun (w, r) -> $"({w},{r})") |> String.concat "; "

        let scale =
            match c.Config.Scale with
            | Some s -> $"{s:R}"
            | None -> "default"

        $"Case(groups=[{groups}], offsets={c.Config.Offsets}, causal={c.Config.Causal}, scale={scale}, "
        + $"b={c.Batch}, h={c.Heads}, n={c.N}, d={c.HeadDim}, seed={c.Seed})"

    override c.ToString() = c.Display

/// Upper bounds for the generated shapes.
type Limits =
    {
        MaxBatch: int
        MaxHeads: int
        MaxN: int
        MaxHeadDim: int
        MaxSegment: int
    }

/// The sizes the brief asks for: b ≤ 2, h ≤ 5, n ≤ 70, d ≤ 6, w ≤ 80 (so w > n happens).
let standardLimits =
    {
        MaxBatch = 2
        MaxHeads = 5
        MaxN = 70
        MaxHeadDim = 6
        MaxSegment = 80
    }

/// Small sizes for finite differences.
let smallLimits =
    {
        MaxBatch = 1
        MaxHeads = 3
        MaxN = 12
        MaxHeadDim = 3
        MaxSegment = 16
    }

/// One (w, r) with 1 ≤ r ≤ w ≤ maxW, biased towards short segments and small rates.
let genGroup (maxW: int) : Gen<int * int> =
    gen {
        let! w = Gen.frequency [ 3, Gen.choose (1, min 16 maxW); 1, Gen.choose (1, maxW) ]
        let! r = Gen.frequency [ 2, Gen.choose (1, min 4 w); 1, Gen.choose (1, w) ]
        return w, r
    }

/// One to three distinct groups.
let genGroups (maxW: int) : Gen<(int * int) list> =
    gen {
        let! count = Gen.choose (1, 3)
        let! groups = Gen.listOfLength count (genGroup maxW)
        return List.distinct groups
    }

/// A scale: usually the default 1/sqrt(d), sometimes an explicit one.
let genScale: Gen<float option> =
    Gen.frequency
        [
            3, Gen.constant None
            1, Gen.elements [ 0.25; 0.5; 1.0; 1.7 ] |> Gen.map Some
        ]

/// A valid config with random groups, offsets mode and causality.
let genConfig (maxW: int) : Gen<DilatedConfig> =
    gen {
        let! groups = genGroups maxW
        let! offsets = Gen.elements [ Paper; Blocks ]
        let! causal = Gen.elements [ false; true ]
        let! scale = genScale
        return configOf groups offsets causal scale
    }

/// A valid case within the limits.
let genCase (limits: Limits) : Gen<Case> =
    gen {
        let! config = genConfig limits.MaxSegment
        let! batch = Gen.choose (1, limits.MaxBatch)
        let! heads = Gen.choose (1, limits.MaxHeads)
        // short sequences often, so that w > N and r > N (heads whose offset is padding) come up
        let! n =
            Gen.frequency [ 1, Gen.choose (1, min 8 limits.MaxN); 2, Gen.choose (1, limits.MaxN) ]

        let! d = Gen.choose (1, limits.MaxHeadDim)
        let! seed = Gen.choose (0, Int32.MaxValue)

        return
            {
                Config = config
                Batch = batch
                Heads = heads
                N = n
                HeadDim = d
                Seed = seed
            }
    }

let private smallerInts (lowest: int) (x: int) =
    [ lowest; x / 2; x - 1 ]
    |> List.distinct
    |> List.filter (fun y -> y >= lowest && y < x)

/// Shrinks a case towards short sequences, few simple groups, one head, one batch item, d = 1,
/// paper offsets and the default scale. Every candidate is valid.
let shrinkCase (c: Case) : seq<Case> =
    let withGroups groups =
        match
            DilatedConfig.create
                (List.map fst groups)
                (List.map snd groups)
                c.Config.Offsets
                c.Config.Causal
                c.Config.Scale
        with
        | Ok config -> Some { c with Config = config }
        | Error _ -> None

    let pairs = pairsOf c.Config

    seq {
        for n in smallerInts 1 c.N do
            yield { c with N = n }

        if pairs.Length > 1 then
            for i in 0 .. pairs.Length - 1 do
                yield! Option.toList (withGroups (List.removeAt i pairs))

        for i, (w, r) in List.indexed pairs do
            for w' in smallerInts 1 w do
                yield! Option.toList (withGroups (List.updateAt i (w', min r w') pairs))

            for r' in smallerInts 1 r do
                yield! Option.toList (withGroups (List.updateAt i (w, r') pairs))

        for h in smallerInts 1 c.Heads do
            yield { c with Heads = h }

        for b in smallerInts 1 c.Batch do
            yield { c with Batch = b }

        for d in smallerInts 1 c.HeadDim do
            yield { c with HeadDim = d }

        if c.Config.Offsets = Blocks then
            yield
                { c with
                    Config = { c.Config with Offsets = Paper }
                }

        if c.Config.Scale.IsSome then
            yield
                { c with
                    Config = { c.Config with Scale = None }
                }
    }

/// Arbitrary cases of the standard sizes.
type Cases =
    static member Case() : Arbitrary<Case> =
        Arb.fromGenShrink (genCase standardLimits, shrinkCase)

/// Arbitrary small cases (for finite differences).
type SmallCases =
    static member Case() : Arbitrary<Case> =
        Arb.fromGenShrink (genCase smallLimits, shrinkCase)

/// A head count H and a dilation rate r.
type HeadsAndRate = { Heads: int; Rate: int }

/// Arbitrary (H, r) with r dividing H.
type DividingRates =
    static member HeadsAndRate() : Arbitrary<HeadsAndRate> =
        gen {
            let! r = Gen.choose (1, 8)
            let! k = Gen.choose (1, 6)
            return { Heads = r * k; Rate = r }
        }
        |> Arb.fromGen

/// Arbitrary (H, r) with 1 ≤ H, r ≤ 24 (r may exceed H).
type AnyRates =
    static member HeadsAndRate() : Arbitrary<HeadsAndRate> =
        gen {
            let! h = Gen.choose (1, 24)
            let! r = Gen.choose (1, 24)
            return { Heads = h; Rate = r }
        }
        |> Arb.fromGen

// ----------------------------------------------------------------------------------------------
// Tensors from a seed

/// float64 standard-normal values of the given shape from a private generator seeded with `seed`
/// (never the global one, so properties can run in parallel and replay exactly).
let randn (seed: int) (shape: int64[]) : torch.Tensor =
    init ()
    use generator = new torch.Generator(uint64 (uint32 seed), torch.CPU)
    torch.randn (shape, dtype = torch.float64, generator = generator)

/// q, k, v `[b, h, n, d]` float64 for a case (seeds Seed, Seed+1, Seed+2).
let qkv (c: Case) : torch.Tensor * torch.Tensor * torch.Tensor =
    let shape = [| int64 c.Batch; int64 c.Heads; int64 c.N; int64 c.HeadDim |]
    randn c.Seed shape, randn (c.Seed + 1) shape, randn (c.Seed + 2) shape

// ----------------------------------------------------------------------------------------------
// Invalid configs and inputs

/// How to build one invalid tensor argument.
type TensorSpec =
    {
        Shape: int64 list
        Dtype: torch.ScalarType
        /// Some value (NaN, ±∞) written at flat index 0.
        Poison: float option
    }

/// An invalid config or input, with the parameter its error must name.
type Invalid =
    /// `DilatedConfig.create` with these lists and scale.
    | BadConfig of segmentLengths: int list * dilationRates: int list * scale: float option * parameter: string
    /// `HeadOffsets.parse` of this text.
    | BadOffsets of text: string * parameter: string
    /// `DilatedAttention.forwardWithLse checkInputs config q k v` with a valid config.
    | BadInputs of
        groups: (int * int) list *
        q: TensorSpec *
        k: TensorSpec *
        v: TensorSpec *
        checkInputs: bool *
        parameter: string

    /// The parameter the error must name.
    member x.Parameter =
        match x with
        | BadConfig(_, _, _, p)
        | BadOffsets(_, p)
        | BadInputs(_, _, _, _, _, p) -> p

let private genValidPairs = genGroups 20

let private genBadConfig: Gen<Invalid> =
    let replaceOne (bad: int * int) (parameter: string) =
        gen {
            let! pairs = genValidPairs
            let! at = Gen.choose (0, pairs.Length)
            let pairs = List.insertAt at bad pairs
            return BadConfig(List.map fst pairs, List.map snd pairs, None, parameter)
        }

    Gen.oneof
        [
            // no group at all
            gen {
                let! rates = Gen.listOf (Gen.choose (1, 4))
                return BadConfig([], rates, None, "segmentLengths")
            }
            // lists of different lengths
            gen {
                let! pairs = genValidPairs
                let! extra = Gen.choose (1, 3)
                let! shorter = Gen.elements [ true; false ]
                let ws = List.map fst pairs
                let rs = List.map snd pairs

                let rs =
                    if shorter then
                        List.truncate (rs.Length - 1) rs
                    else
                        rs @ List.replicate extra 1

                return BadConfig(ws, rs, None, "dilationRates")
            }
            // r = 0 or negative
            gen {
                let! w = Gen.choose (1, 20)
                let! r = Gen.choose (-3, 0)
                return! replaceOne (w, r) "dilationRate"
            }
            // r > w
            gen {
                let! w = Gen.choose (1, 20)
                let! extra = Gen.choose (1, 10)
                return! replaceOne (w, w + extra) "dilationRate"
            }
            // w = 0 or negative (any r)
            gen {
                let! w = Gen.choose (-3, 0)
                let! r = Gen.choose (-1, 4)
                return! replaceOne (w, r) "segmentLength"
            }
            // the same group twice
            gen {
                let! pairs = genValidPairs
                let! which = Gen.elements pairs
                let! at = Gen.choose (0, pairs.Length)
                let pairs = List.insertAt at which pairs
                return BadConfig(List.map fst pairs, List.map snd pairs, None, "segmentLengths")
            }
            // a scale that is not a finite positive number
            gen {
                let! pairs = genValidPairs

                let! scale =
                    Gen.elements
                        [
                            0.0
                            -0.0
                            -1.0
                            -1e-300
                            Double.NaN
                            Double.PositiveInfinity
                            Double.NegativeInfinity
                        ]

                return BadConfig(List.map fst pairs, List.map snd pairs, Some scale, "scale")
            }
        ]

let private genBadOffsets: Gen<Invalid> =
    Gen.elements [ ""; "papers"; "block"; "torchscale"; "0" ]
    |> Gen.map (fun text -> BadOffsets(text, "offsets"))

let private genBadInputs: Gen<Invalid> =
    let names = [ "query"; "key"; "value" ]

    let build (valid: TensorSpec) (target: string) (bad: TensorSpec) =
        let pick name = if name = target then bad else valid
        pick "query", pick "key", pick "value"

    gen {
        let! groups = genValidPairs
        let! b = Gen.choose (1, 2)
        let! h = Gen.choose (1, 3)
        let! n = Gen.choose (1, 9)
        let! d = Gen.choose (1, 4)
        let shape = [ int64 b; int64 h; int64 n; int64 d ]

        let valid =
            {
                Shape = shape
                Dtype = torch.ScalarType.Float64
                Poison = None
            }

        let! kind = Gen.choose (0, 5)
        let! anyTarget = Gen.elements names
        let! laterTarget = Gen.elements [ "key"; "value" ]
        let! dim = Gen.choose (0, 3)
        let! grow = Gen.choose (1, 3)

        let! badDtype =
            Gen.elements
                [
                    torch.ScalarType.Int32
                    torch.ScalarType.Int64
                    torch.ScalarType.Bool
                    torch.ScalarType.Byte
                    torch.ScalarType.Int8
                ]

        let! otherFloat =
            Gen.elements
                [
                    torch.ScalarType.Float32
                    torch.ScalarType.BFloat16
                    torch.ScalarType.Float16
                ]

        let! poison =
            Gen.elements [ Double.NaN; Double.PositiveInfinity; Double.NegativeInfinity ]

        let! wrongRank = Gen.elements [ List.truncate 3 shape; shape @ [ 1L ]; [ int64 n ] ]

        let target, bad, checkInputs =
            match kind with
            | 0 -> anyTarget, { valid with Shape = wrongRank }, false
            | 1 ->
                anyTarget,
                { valid with
                    Shape = List.updateAt dim 0L shape
                },
                false
            | 2 -> anyTarget, { valid with Dtype = badDtype }, false
            | 3 ->
                laterTarget,
                { valid with
                    Shape = List.updateAt dim (shape.[dim] + int64 grow) shape
                },
                false
            | 4 -> laterTarget, { valid with Dtype = otherFloat }, false
            | _ -> anyTarget, { valid with Poison = Some poison }, true

        let q, k, v = build valid target bad
        return BadInputs(groups, q, k, v, checkInputs, target)
    }

/// Arbitrary invalid configs and inputs (no shrinking: each value has exactly one defect).
type Invalids =
    static member Invalid() : Arbitrary<Invalid> =
        Gen.frequency [ 3, genBadConfig; 1, genBadOffsets; 3, genBadInputs ]
        |> Arb.fromGen

/// Builds the tensor a spec describes (values from a fixed seed; ints are zeros).
let tensorOf (spec: TensorSpec) : torch.Tensor =
    init ()
    let shape = Array.ofList spec.Shape

    let isFloat =
        [
            torch.ScalarType.Float64
            torch.ScalarType.Float32
            torch.ScalarType.BFloat16
            torch.ScalarType.Float16
        ]
        |> List.contains spec.Dtype

    if not isFloat then
        torch.zeros (shape, dtype = spec.Dtype)
    else
        let values = (randn 7 shape).flatten().data<float>().ToArray()

        match spec.Poison with
        | Some p when values.Length > 0 -> values.[0] <- p
        | _ -> ()

        torch.tensor(values, dtype = torch.float64).reshape(shape).to_type spec.Dtype
