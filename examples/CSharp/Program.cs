// LongNet from C#: dilated attention through the builders, checked against plain dense attention, the
// plan of a long-context configuration, a multi-head layer, and a small LongNet language model trained,
// resumed and sampled. CI runs this (tests/run.sh); it exits 1 if a check fails.
//   dotnet run -c Release --project examples/CSharp
using System;
using System.IO;
using System.Linq;
using System.Threading;
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
        .Group(segmentLength: 16, dilationRate: 1).Group(32, 2).Group(64, 4)
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

// 6. A multi-head layer over [batch, seq, embed] with RoPE, built from the same attention.
using (var scope = NewDisposeScope())
{
    using var layer = MultiheadDilatedAttention.Create()
        .EmbeddingDim(32).Heads(4)
        .Attention(DilatedAttention.Create().Segments(8, 16).Rates(1, 2).Causal().Build())
        .Position(PositionEncoding.Rope)
        .Seed(7)
        .Build();
    var x = randn(2, 37, 32);
    var y = layer.Forward(x);
    var prefix = layer.Forward(x[.., ..20, ..]);
    Check($"multi-head layer: [{string.Join(", ", y.shape)}], causal (a prefix gives the same first 20 outputs)",
        y.shape is [2, 37, 32] && prefix.allclose(y[.., ..20, ..], rtol: 1e-5, atol: 1e-6));
}

// 7. Train a small LongNet language model on a text (about half a minute on two cores), stop it half way,
//    resume it from its checkpoint, and generate from the checkpoint.
var runFolder = Directory.CreateTempSubdirectory("longnet-example-").FullName;
try
{
    var text = string.Concat(Enumerable.Repeat(
        "The river ran past the mill and under the old stone bridge. The miller sang to the water wheel. "
        + "In spring the river rose, and in summer it ran low and clear over the stones. ", 40));
    var model = LongNetModel.Create()
        .Embedding(64).Layers(2).Heads(4).FeedForward(160)
        .Segments(32, 64, 128).Rates(1, 2, 4)
        .Causal();
    var trainer = Trainer.Create()
        .Model(model)
        .CorpusText(text)
        .Steps(80).SequenceLength(64).BatchSize(8).LearningRate(4e-3).WarmupSteps(8).Seed(1)
        .CheckpointDirectory(runFolder).CheckpointEvery(40);

    using var cancel = new CancellationTokenSource();
    void Report(TrainingProgress p)
    {
        if (p.Step % 20 == 0 || p.ValidationLoss is not null)
        {
            Console.WriteLine($"  step {p.Step}/{p.TotalSteps}  loss {p.Loss:F3}  lr {p.LearningRate:E1}"
                + (p.ValidationLoss is { } v ? $"  validation {v:F3}" : ""));
        }

        if (p.Step == 40)
        {
            cancel.Cancel(); // stop half way: the checkpoint keeps the whole state
        }
    }

    var clock = System.Diagnostics.Stopwatch.StartNew();
    using (var first = trainer.OnProgress(Report).Build().Train(cancel.Token))
    {
        Check($"training stopped at step {first.FinalStep} with a checkpoint", first.Cancelled && first.FinalStep == 40 && File.Exists(first.CheckpointPath));
    }

    using var trained = trainer.Resume().OnProgress(Report).Build().Train();
    Console.WriteLine($"trained {trained.Model} in {clock.Elapsed.TotalSeconds:F0} s");
    var firstLoss = trained.Steps[0].Loss;
    Check($"resumed from step {trained.StartStep} to {trained.FinalStep}; loss {trained.Losses[^1]:F3}, validation {trained.ValidationLoss:F3} (ln 259 = {Math.Log(259):F2} at the start)",
        trained.StartStep == 40 && trained.FinalStep == 80 && trained.Losses[^1] < 2.5 && trained.ValidationLoss < 2.5);

    var generator = TextGenerator.Create().MaxNewTokens(60).Temperature(0.7).TopK(20).Seed(3).Build();
    var sample = generator.Generate(trained.Model, "The river ");
    Console.WriteLine($"sample: \"The river {sample.Text.ReplaceLineEndings(" ")}\"");
    var fromCheckpoint = generator.Generate(trained.CheckpointPath!, "The river ");
    Check("generating from the checkpoint gives the same sample", fromCheckpoint.Tokens.SequenceEqual(sample.Tokens));
    Check("the sample is mostly letters and spaces", sample.Text.Count(c => char.IsLetter(c) || c == ' ') >= sample.Text.Length * 3 / 4);
}
finally
{
    Directory.Delete(runFolder, recursive: true);
}

Console.WriteLine(failures == 0 ? "all checks passed" : $"{failures} check(s) failed");
return failures == 0 ? 0 : 1;
