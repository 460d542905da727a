using System.Linq;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LongNet.CSharp.Tests;

/// <summary>
/// The facade keeps its intermediates in dispose scopes: a call leaves alive exactly the tensors it
/// returns, and disposing those (or the caller's scope) frees everything. Counted with TorchSharp's
/// per-thread dispose statistics.
/// </summary>
public sealed class DisposeTests
{
    public DisposeTests() => LongNetRuntime.EnsureLoaded();

    private static long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    private static DilatedAttention Attention(AttentionKernel kernel) =>
        DilatedAttention.Create().Segments(4, 8, 16).Rates(1, 2, 4).Causal().Kernel(kernel).Build();

    [Theory]
    [InlineData(AttentionKernel.Auto)]
    [InlineData(AttentionKernel.Fused)]
    [InlineData(AttentionKernel.Explicit)]
    public void Forward_leaves_only_its_output_alive(AttentionKernel kernel)
    {
        var (q, k, v) = Fixtures.Qkv();
        var before = Live();
        var output = Attention(kernel).Forward(q, k, v);
        Assert.Equal(before + 1, Live());
        output.Dispose();
        Assert.Equal(before, Live());
        q.Dispose();
        k.Dispose();
        v.Dispose();
    }

    [Theory]
    [InlineData(AttentionKernel.Fused)]
    [InlineData(AttentionKernel.Explicit)]
    public void Disposing_an_AttentionResult_frees_both_tensors(AttentionKernel kernel)
    {
        var (q, k, v) = Fixtures.Qkv();
        var before = Live();
        var result = Attention(kernel).ForwardWithLse(q, k, v);
        Assert.Equal(before + 2, Live());
        result.Dispose();
        Assert.Equal(before, Live());
        Assert.True(result.Output.IsInvalid);
        Assert.True(result.LogSumExp.IsInvalid);
        q.Dispose();
        k.Dispose();
        v.Dispose();
    }

    [Fact]
    public void Results_join_the_callers_dispose_scope()
    {
        var before = Live();
        using (var scope = NewDisposeScope())
        {
            var (q, k, v) = Fixtures.Qkv();
            var attention = Attention(AttentionKernel.Auto);
            _ = attention.Forward(q, k, v);
            _ = attention.ForwardWithLse(q, k, v);
            _ = AttentionLayout.ToBatchSeqHeads(q);
            Assert.True(Live() > before);
        }

        Assert.Equal(before, Live());
    }

    [Fact]
    public void Plans_and_builders_create_no_tensors()
    {
        var before = DisposeScopeManager.Statistics.CreatedOutsideScopeCount + DisposeScopeManager.Statistics.CreatedInScopeCount;
        var plan = Attention(AttentionKernel.Auto).Plan(1000, 4, 8, computeDiameter: true);
        Assert.NotEqual(Connectivity.NotComputed, plan.Connectivity);
        var after = DisposeScopeManager.Statistics.CreatedOutsideScopeCount + DisposeScopeManager.Statistics.CreatedInScopeCount;
        Assert.Equal(before, after);
    }

    [Fact]
    public void Npy_tensor_round_trip_leaves_only_the_read_tensor_alive()
    {
        var (q, k, v) = Fixtures.Qkv();
        k.Dispose();
        v.Dispose();
        var path = System.IO.Path.GetTempFileName();
        try
        {
            var before = Live();
            Npy.WriteTensor(path, q);
            Assert.Equal(before, Live());
            var back = Npy.ReadTensor(path);
            Assert.Equal(before + 1, Live());
            back.Dispose();
            Assert.Equal(before, Live());
        }
        finally
        {
            System.IO.File.Delete(path);
            q.Dispose();
        }
    }

    [Fact]
    public void Disposing_a_multihead_layer_frees_its_weights_and_its_forward_leaves_only_the_output()
    {
        var before = Live();
        var layer = MultiheadDilatedAttention.Create().EmbeddingDim(8).Heads(2).Attention(Attention(AttentionKernel.Auto)).Position(PositionEncoding.Rope).Build();
        var weights = Live();
        Assert.True(weights > before);
        var x = randn(2, 11, 8);
        var output = layer.Forward(x);
        Assert.Equal(weights + 2, Live());
        output.Dispose();
        x.Dispose();
        layer.Dispose();
        Assert.Equal(before, Live());
    }

    [Fact]
    public void Disposing_a_model_frees_its_weights_and_generation_leaves_nothing_alive()
    {
        var before = Live();
        var model = LongNetModel.Create().Preset(Preset.Tiny).Tokenizer(Tokenizer.ByteLevel()).Seed(1).Build();
        var weights = Live();
        Assert.Equal(before + model.Module.parameters().Count(), weights);
        var tokens = ones(1, 9, dtype: ScalarType.Int64);
        var logits = model.Forward(tokens);
        Assert.Equal(weights + 2, Live());
        logits.Dispose();
        tokens.Dispose();
        _ = TextGenerator.Create().MaxNewTokens(5).Build().Generate(model, "abc");
        Assert.Equal(weights, Live());
        model.Dispose();
        Assert.Equal(before, Live());
    }

    [Fact]
    public void Disposing_a_training_result_frees_the_trained_model()
    {
        var result = Trainer.Create().CorpusText(string.Concat(Enumerable.Repeat("The mill by the river. ", 40)))
            .Steps(2).SequenceLength(16).BatchSize(2).EvaluationTokens(32).Build().Train();
        var trained = Live();
        var parameters = result.Model.Module.parameters().Count();
        Assert.True(parameters > 0);
        result.Dispose();
        Assert.Equal(trained - parameters, Live());
    }
}
