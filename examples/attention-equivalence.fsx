// Dilated attention in F# Interactive: equivalence with dense attention, the union-softmax
// identity, and the true gradient through the mixing weights.
// Run after one build:  dotnet build -c Release src/LongNet && dotnet fsi examples/attention-equivalence.fsx
#r "nuget: TorchSharp-cpu, 0.107.0"
#r "../src/LongNet/bin/Release/net10.0/LongNet.dll"

open TorchSharp
open LongNet

// Loads libtorch (with the libstdc++ fix where this OS needs it) before the first `torch` call.
Native.ensureLoaded () |> ignore
torch.manual_seed 7L |> ignore

let maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float>()

let randn () =
    torch.randn (2L, 3L, 97L, 8L, dtype = torch.float64) // [batch, heads, seq, headDim]

let q, k, v = randn (), randn (), randn ()

// 1. One group whose segment covers the sequence, with r = 1, is dense attention.
for causal in [ false; true ] do
    let config = DilatedConfig.createOrRaise [ 128 ] [ 1 ] Paper causal None
    let dilated = DilatedAttention.forward config q k v
    let dense, _ = Dense.attend (1.0 / sqrt 8.0) causal q k v
    let err = maxAbs dilated dense
    printfn "w ≥ N, r = 1, causal = %-5b  max |dilated − dense| = %.1e" causal err

    if err > 1e-10 then
        failwith "dilated attention differs from dense attention"

// 2. Several groups: the fused kernel and the explicit reference agree, outputs and gradients.
let config = DilatedConfig.createOrRaise [ 16; 32; 64 ] [ 1; 2; 4 ] Paper true None

let outputAndGradients kernel =
    let inputs = [ q; k; v ] |> List.map (fun t -> t.detach().requires_grad_ true)

    let out, _ =
        DilatedAttention.forwardUsing kernel false config inputs.[0] inputs.[1] inputs.[2]

    out.sum().backward()
    out.detach () :: (inputs |> List.map (fun t -> t.grad))

let fused = outputAndGradients DilatedAttention.Fused
let explicitPath = outputAndGradients DilatedAttention.Explicit

for name, a, b in List.zip3 [ "out"; "dq"; "dk"; "dv" ] fused explicitPath do
    let err = maxAbs a b
    printfn "groups (16,1) (32,2) (64,4): fused vs explicit %-3s max difference %.1e" name err

    if err > 1e-10 then
        failwith $"fused and explicit kernels differ in {name}"
