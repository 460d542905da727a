/// The fused kernels reached through TorchScript: agreement with explicit attention, and robustness
/// of the call path under garbage-collection pressure.
module LongNet.Tests.KernelTests

open System
open System.Threading
open Xunit
open TorchSharp
open LongNet

[<Fact>]
let ``fused forward and backward agree with explicit attention under constant garbage collection`` () =
    Native.ensureLoaded () |> ignore
    use stop = new CancellationTokenSource()
    // Forces collections while the kernels run: a Scalar argument freed early would corrupt the call.
    let collector =
        Thread(fun () ->
            while not stop.IsCancellationRequested do
                GC.Collect()
                Thread.Sleep 0)

    collector.Start()

    try
        for i in 1..300 do
            use _scope = torch.NewDisposeScope()
            let scale = 0.1 + float (i % 7) / 10.0
            let causal = i % 2 = 0

            let make () =
                torch.randn (1L, 2L, 9L, 4L, dtype = torch.float64)

            let q, k, v, g = make (), make (), make (), make ()
            let out, lse = Kernels.forward scale causal None q k v
            let expected, expectedLse = Attend.attend scale causal None q k v
            Assert.True((out - expected).abs().max().item<float>() < 1e-12, $"out at call {i}")
            Assert.True((lse - expectedLse).abs().max().item<float>() < 1e-12, $"lse at call {i}")
            let dq, _, _ = Kernels.backward scale causal None g q k v out lse
            let qa = q.detach().requires_grad_ true
            let oa, _ = Attend.attend scale causal None qa k v
            oa.backward (Collections.Generic.List [ g ])
            Assert.True((dq - qa.grad).abs().max().item<float>() < 1e-12, $"dq at call {i}")
    finally
        stop.Cancel()
        collector.Join()
