/// The Expecto console suite: the slower proofs at larger sizes than the xunit properties use.
/// `dotnet run --project tests/LongNet.Proofs -c Release -- --summary`
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

[<EntryPoint>]
let main argv =
    Native.ensureLoaded () |> ignore
    runTestsWithCLIArgs [] argv (testList "LongNet proofs" [ denseEquivalence ])
