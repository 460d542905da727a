/// Numerical safety: finite outputs and gradients where softmax attention usually breaks — half
/// precision with scores in the tens of thousands, rows with no visible key, positions no group covers,
/// a single position, head dimension 1, and batches whose last segment is padded.
module LongNet.Tests.NumericalSafetyTests

open Xunit
open TorchSharp
open LongNet

let private init = lazy (Native.ensureLoaded () |> ignore)

let private halfTypes = [ torch.ScalarType.BFloat16; torch.ScalarType.Float16 ]

let private kernels = [ DilatedAttention.Fused; DilatedAttention.Explicit ]

let private finite (t: torch.Tensor) = t.isfinite().all().item<bool>()

let private randn (seed: int) (shape: int64[]) (dtype: torch.ScalarType) (magnitude: float) =
    use generator = new torch.Generator(uint64 seed)

    (torch.randn (shape, dtype = torch.float64, generator = generator) * magnitude).to_type(dtype).requires_grad_(true)

/// Forward and backward on `kernel`; asserts finite output and gradients and returns the output.
let private forwardBackward
    (kernel: DilatedAttention.Kernel)
    (config: DilatedConfig)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    =
    let out, _ = DilatedAttention.forwardUsing kernel false config q k v
    Assert.True(finite out, $"{kernel} {q.dtype}: output not finite")
    out.to_type(torch.float64).square().sum().backward()

    for name, t in [ "dq", q; "dk", k; "dv", v ] do
        Assert.True(finite t.grad, $"{kernel} {q.dtype}: {name} not finite")

    out

[<Fact>]
let ``bfloat16 and float16 with scores in the tens of thousands give finite outputs and gradients`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let config = DilatedConfig.createOrRaise [ 8; 16; 32 ] [ 1; 2; 4 ] Paper true None

    for dtype in halfTypes do
        for kernel in kernels do
            // |q|, |k| ≈ 100 per coordinate, head dim 16: raw scores reach 10^5, far beyond exp's range
            let shape = [| 2L; 3L; 45L; 16L |]

            let q, k, v =
                randn 1 shape dtype 100.0, randn 2 shape dtype 100.0, randn 3 shape dtype 1.0

            let out = forwardBackward kernel config q k v
            // a softmax average stays inside the values' range
            let bound = v.abs().max().to_type(torch.float64).item<float>() * 1.02
            Assert.True(out.abs().max().to_type(torch.float64).item<float>() <= bound)

[<Fact>]
let ``a row that sees no key gives a finite output and gradient`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()

    for dtype in
        [
            torch.ScalarType.Float32
            torch.ScalarType.BFloat16
            torch.ScalarType.Float16
        ] do
        let shape = [| 1L; 2L; 6L; 4L |]

        let q, k, v =
            randn 4 shape dtype 10.0, randn 5 shape dtype 10.0, randn 6 shape dtype 1.0
        // no key is valid: every row is fully masked
        let noKey = torch.zeros ([| 6L |], dtype = torch.ScalarType.Bool)
        let out, lse = Attend.attend 0.5 false (Some noKey) q k v
        Assert.True(finite out, $"{dtype}: output of a fully masked row")
        Assert.False(lse.isnan().any().item<bool>(), $"{dtype}: lse of a fully masked row is NaN")
        out.to_type(torch.float64).sum().backward()

        for name, t in [ "dq", q; "dk", k; "dv", v ] do
            Assert.True(finite t.grad, $"{dtype}: {name} of a fully masked row")

[<Fact>]
let ``positions no group covers output exactly zero with finite gradients in every dtype`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()
    // one group with r = 4 and 2 heads: local offsets 2 and 3 belong to no head
    let config = DilatedConfig.createOrRaise [ 8 ] [ 4 ] Paper false None

    for dtype in Inputs.supportedDtypes do
        for kernel in kernels do
            let shape = [| 2L; 2L; 19L; 3L |]

            let q, k, v =
                randn 7 shape dtype 1.0, randn 8 shape dtype 1.0, randn 9 shape dtype 1.0

            let out = forwardBackward kernel config q k v

            for p in [ 2L; 3L; 6L; 7L; 10L; 18L ] do
                Assert.Equal(0.0, out.narrow(2L, p, 1L).abs().max().to_type(torch.float64).item<float>())

[<Fact>]
let ``a single position returns its own value with finite gradients`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()

    for causal in [ false; true ] do
        let config = DilatedConfig.createOrRaise [ 4; 8 ] [ 1; 2 ] Paper causal None

        for dtype in Inputs.supportedDtypes do
            for kernel in kernels do
                let shape = [| 3L; 2L; 1L; 5L |]

                let q, k, v =
                    randn 10 shape dtype 50.0, randn 11 shape dtype 50.0, randn 12 shape dtype 1.0

                let out = forwardBackward kernel config q k v
                // one key, softmax weight 1: the output is the value (the r = 1 group covers it for every head)
                let error =
                    (out.to_type torch.float64 - v.to_type torch.float64).abs().max().item<float>()

                Assert.True(error < 1e-2, $"{kernel} {dtype} causal={causal}: |out − v| = {error}")

[<Fact>]
let ``head dimension 1 gives finite outputs and gradients`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()
    let config = DilatedConfig.createOrRaise [ 4; 16 ] [ 1; 4 ] Blocks true None

    for dtype in Inputs.supportedDtypes do
        for kernel in kernels do
            let shape = [| 2L; 4L; 33L; 1L |]

            let q, k, v =
                randn 13 shape dtype 30.0, randn 14 shape dtype 30.0, randn 15 shape dtype 1.0

            forwardBackward kernel config q k v |> ignore

[<Fact>]
let ``a batch whose last segment is padded equals its items run one at a time`` () =
    init.Force()
    use _scope = torch.NewDisposeScope()
    // N = 37 with segments of 16 and 32: the last segments are padded
    let config = DilatedConfig.createOrRaise [ 16; 32 ] [ 1; 2 ] Paper true None

    for dtype in
        [
            torch.ScalarType.Float64
            torch.ScalarType.Float32
            torch.ScalarType.BFloat16
        ] do
        for kernel in kernels do
            let shape = [| 3L; 2L; 37L; 4L |]

            let q, k, v =
                randn 16 shape dtype 5.0, randn 17 shape dtype 5.0, randn 18 shape dtype 1.0

            let batched = forwardBackward kernel config q k v

            for item in 0L .. 2L do
                let one (t: torch.Tensor) = t.detach().narrow(0L, item, 1L)

                let alone, _ =
                    DilatedAttention.forwardUsing kernel false config (one q) (one k) (one v)

                let error =
                    (alone.to_type torch.float64
                     - (batched.detach().narrow(0L, item, 1L)).to_type torch.float64)
                        .abs()
                        .max()
                        .item<float>()

                Assert.True(error < 1e-6, $"{kernel} {dtype}: batch item {item} differs by {error}")
