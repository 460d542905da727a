// LongNet from C#: dilated attention through the builders, checked against plain dense attention,
// and the plan of a long-context configuration. CI runs this (tests/run.sh); it exits 1 if a check fails.
//   dotnet run -c Release --project examples/CSharp
using System;
using LongNet.CSharp;
using TorchSharp;
using static TorchSharp.torch;

var load = LongNetRuntime.EnsureLoaded();
Console.WriteLine($"libtorch: {load.TorchLibraryDirectory ?? "(TorchSharp's loader)"}; bridge patched: {load.Patched}; CUDA: {load.Cuda}");

var failures = 0;
void Check(string what, bool ok)
{
    Console.WriteLine($"{(ok ? "ok  " : "FAIL")} {what}");
    if (!ok)
    {
        failures++;
    }
}

using (var scope = NewDisposeScope())
{
    // [batch, heads, seq, headDim] with odd sizes: the last segment is padded and the padding masked.
    const int batch = 2, heads = 4, n = 97, headDim = 8;
    using var generator = new Generator(2024, CPU);
    Tensor Random() => randn([batch, heads, n, headDim], dtype: ScalarType.Float64, generator: generator);
    var (q, k, v) = (Random(), Random(), Random());

    // 1. One group (w ≥ N, r = 1) is dense attention: compare with softmax(QKᵀ·scale + causal mask)·V.
    var dense = DilatedAttention.Create().Segments(128).Rates(1).Causal().Build();
    var scores = q.matmul(k.transpose(-2, -1)).mul(dense.ScaleFor(headDim));
    var future = ones(n, n, dtype: ScalarType.Bool).triu(1);
    var reference = scores.masked_fill(future, double.NegativeInfinity).softmax(-1).matmul(v);
    var dilatedDense = dense.Forward(q, k, v);
    Check($"w = 128 ≥ N = {n}, r = 1 equals dense causal attention (max |Δ| = {dilatedDense.sub(reference).abs().max().item<double>():E1})",
        dilatedDense.allclose(reference, rtol: 0, atol: 1e-12));

    // 2. A LongNet configuration: segments double while the dilation doubles (the paper's geometric series).
    var attention = DilatedAttention.Create()
        .Segments(16, 32, 64).Rates(1, 2, 4)
        .Causal()
        .HeadOffsets(HeadOffsets.Paper)
        .Build();
    Console.WriteLine(attention);

    using var fused = attention.ForwardWithLse(q, k, v);
    using var explicit_ = attention.ToBuilder().Kernel(AttentionKernel.Explicit).Build().ForwardWithLse(q, k, v);
    Check($"output shape [{string.Join(", ", fused.Output.shape)}]", fused.Output.shape is [batch, heads, n, headDim]);
    Check("fused and explicit kernels agree (outputs within 1e-12)", fused.Output.allclose(explicit_.Output, rtol: 0, atol: 1e-12));
    Check("log-sum-exps agree", fused.LogSumExp.allclose(explicit_.LogSumExp, rtol: 0, atol: 1e-12));

    // 3. Gradients flow through the mixing of the groups.
    var qg = q.detach().requires_grad_();
    attention.Forward(qg, k, v).square().sum().backward();
    Check("gradients reach the queries and are finite", qg.grad is { } grad && grad.isfinite().all().item<bool>());

    // 4. The same data in [batch, seq, heads, headDim] (flash-attn's layout) gives the same output.
    var bshd = AttentionLayout.ToBatchSeqHeads(q);
    var viaLayout = attention.Forward(AttentionLayout.ToBatchHeadsSeq(bshd), k, v);
    Check("layout round trip gives the same output", viaLayout.equal(fused.Output).all().item<bool>());
}

// 5. The plan of a long context: linear cost, and the diameter of the attention graph.
var longContext = DilatedAttention.Create()
    .Segments(2048, 4096, 8192, 16384, 32768).Rates(1, 2, 4, 8, 16)
    .Causal()
    .Build();
var plan = longContext.Plan(sequenceLength: 32768, heads: 16, headDim: 64, computeDiameter: false);
Console.WriteLine(plan.Format());
Check($"attention costs {plan.Flops / plan.DenseFlops:P2} of dense attention at N = 32768", plan.Flops < plan.DenseFlops / 4);

// Non-causal, every position reaches every other in a few hops (causal paths cannot step back, so a
// causal graph is connected only where some r = 1 segment spans every boundary).
var small = DilatedAttention.Create().Segments(64, 256, 1024).Rates(1, 4, 16).Build();
var smallPlan = small.Plan(sequenceLength: 1024, heads: 16, headDim: 64, computeDiameter: true);
Check($"N = 1024, 16 heads, non-causal: {smallPlan.Connectivity}, diameter {smallPlan.Diameter} hops",
    smallPlan.Connectivity == Connectivity.Connected && smallPlan.Diameter <= 4);

Console.WriteLine(failures == 0 ? "all checks passed" : $"{failures} check(s) failed");
return failures == 0 ? 0 : 1;
