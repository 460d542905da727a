/// The Expecto console suite: the slower proofs at larger sizes than the xunit properties use.
/// `dotnet run --project tests/LongNet.Proofs -c Release -- --summary`; the fuzz case count comes from
/// `LONGNET_PROOF_CASES` (see Cases.fs).
module LongNet.Proofs.Main

open Expecto
open TorchSharp
open LongNet

let private randn (seed: int64) (shape: int64[]) =
    use generator = new torch.Generator(uint64 seed)
    torch.randn (shape, dtype = torch.float64, generator = generator)

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float>()

/// Dense equivalence at odd, larger sizes than the property tests use.
let denseEquivalence =
    testList
        "a single group with w ≥ N and r = 1 equals dense attention"
        [
            for n, heads, d in [ 1025L, 3L, 5L; 97L, 8L, 64L; 2049L, 2L, 16L ] do
                for causal in [ false; true ] do
                    test $"N = {n}, {heads} heads, head dim {d}, causal = {causal}" {
                        use _scope = torch.NewDisposeScope()

                        let q, k, v =
                            randn 1L [| 1L; heads; n; d |],
                            randn 2L [| 1L; heads; n; d |],
                            randn 3L [| 1L; heads; n; d |]

                        let config = DilatedConfig.createOrRaise [ int n + 7 ] [ 1 ] Paper causal None
                        let dilated = DilatedAttention.forward config q k v
                        let dense, _ = Dense.attend (1.0 / sqrt (float d)) causal q k v
                        Expect.isLessThan (maxAbs dilated dense) 1e-10 "max |dilated − dense| in float64"
                    }
        ]

/// The paper's geometric configuration w_i = 64·2^i, r_i = 2^i up to the first segment covering n.
let private geometric (n: int) =
    let groups =
        Seq.initInfinite (fun i -> 64 <<< i, 1 <<< i)
        |> Seq.takeWhile (fun (w, _) -> w / 2 < n)
        |> List.ofSeq

    DilatedConfig.createOrRaise (List.map fst groups) (List.map snd groups) Paper false None

/// Path length at sizes too slow for the xunit suite: logarithmic for dilated, linear for a window.
let pathLength =
    testList
        "the attention graph's diameter grows like log N"
        [
            test "geometric configs: at most one more hop per fourfold N up to N = 65536" {
                let diameters =
                    [ 1024; 4096; 16384; 65536 ]
                    |> List.map (fun n -> n, Plan.diameter (Plan.Dilated(geometric n, 8)) n)

                for n, d in diameters do
                    printfn "  N = %6d: %s hops" n (d |> Option.map string |> Option.defaultValue "∞")

                let hops = diameters |> List.map (snd >> Option.get)
                Expect.equal (List.take 3 hops) [ 3; 3; 4 ] "3 hops at 1K and 4K, 4 at 16K (measured independently)"

                for a, b in List.pairwise hops do
                    Expect.isLessThanOrEqual (b - a) 1 "at most one hop more per fourfold N"
            }
            test "a sliding window of width 256 needs about N / 256 hops at N = 16384" {
                let d = Plan.diameter (Plan.SlidingWindow(256, false)) 16384 |> Option.get
                Expect.isGreaterThanOrEqual d 62 "about N/w hops"
                Expect.isLessThanOrEqual d 66 "about N/w hops"
            }
        ]

/// Linear cost: pairs per token stay constant from 1K to 1M tokens for the default groups.
let linearCost =
    test "pairs per token are flat from N = 8192 to N = 1048576 for groups 2048,4096,8192 / 1,2,4" {
        let config =
            DilatedConfig.createOrRaise [ 2048; 4096; 8192 ] [ 1; 2; 4 ] Paper true None

        let perToken =
            [ 8192; 65536; 1048576 ]
            |> List.map (fun n -> (Plan.summarise config n 8 64 false).PairsPerToken)

        for p in perToken do
            Expect.floatClose Accuracy.veryHigh p perToken.Head "pairs per token independent of N"
    }

[<EntryPoint>]
let main argv =
    Native.ensureLoaded () |> ignore
    // Sequenced: TorchSharp's Scalars can be freed mid-call when other threads trigger collections.
    printfn "fuzz: %d cases for the main property (%s; default %d)" Cases.count Cases.Variable Cases.DefaultCount

    // Memory first: its RSS figures are clearest in a fresh process, before the fuzz has grown the heap.
    let code =
        runTestsWithCLIArgs
            [ Sequenced ]
            argv
            (testList
                "LongNet proofs"
                [
                    Memory.tests
                    denseEquivalence
                    pathLength
                    linearCost
                    AttentionFuzz.tests
                    ModuleFuzz.tests
                    CliFuzz.tests
                ])

    printfn "fuzz cases run:\n%s" (Cases.report ())
    code
