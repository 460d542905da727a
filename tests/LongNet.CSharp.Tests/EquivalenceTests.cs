using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.FSharp.Core;
using Xunit;
using static TorchSharp.torch;
using FsAttention = global::LongNet.DilatedAttention;
using FsInputs = global::LongNet.Inputs;
using FsNative = global::LongNet.Native;
using FsNpy = global::LongNet.Npy;
using FsPlan = global::LongNet.Plan;

namespace LongNet.CSharp.Tests;

/// <summary>The facade computes exactly what the F# core computes for the same settings (float64, bit for bit).</summary>
public sealed class EquivalenceTests
{
    public EquivalenceTests() => LongNetRuntime.EnsureLoaded();

    public static IEnumerable<object[]> Settings() =>
        from offsets in new[] { HeadOffsets.Paper, HeadOffsets.Blocks }
        from causal in new[] { false, true }
        from kernel in new[] { AttentionKernel.Auto, AttentionKernel.Fused, AttentionKernel.Explicit }
        select new object[] { offsets, causal, kernel };

    private static FsAttention.Kernel CoreKernel(AttentionKernel kernel, Tensor q) =>
        kernel switch
        {
            AttentionKernel.Fused => FsAttention.Kernel.Fused,
            AttentionKernel.Explicit => FsAttention.Kernel.Explicit,
            _ => FsAttention.defaultKernel(q),
        };

    [Theory]
    [MemberData(nameof(Settings))]
    public void Forward_with_the_builder_equals_the_FSharp_forward(HeadOffsets offsets, bool causal, AttentionKernel kernel)
    {
        using var scope = NewDisposeScope();
        var (q, k, v) = Fixtures.Qkv();
        var attention = DilatedAttention.Create()
            .Segments(Fixtures.SegmentLengths).Rates(Fixtures.Rates)
            .Causal(causal).HeadOffsets(offsets).Kernel(kernel)
            .Build();
        var config = Fixtures.FSharpConfig(Fixtures.SegmentLengths, Fixtures.Rates, offsets, causal, null);

        var fromBuilder = attention.Forward(q, k, v);
        var fromCore = kernel == AttentionKernel.Auto
            ? FsAttention.forward(config, q, k, v)
            : FsAttention.forwardUsing(CoreKernel(kernel, q), false, config, q, k, v).Item1;

        Assert.True(Fixtures.Identical(fromCore, fromBuilder));
        Assert.Equal(new long[] { Fixtures.Batch, Fixtures.Heads, Fixtures.SequenceLength, Fixtures.HeadDim }, fromBuilder.shape);
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void ForwardWithLse_equals_the_FSharp_forwardWithLse(HeadOffsets offsets, bool causal, AttentionKernel kernel)
    {
        using var scope = NewDisposeScope();
        var (q, k, v) = Fixtures.Qkv(seed: 11);
        var attention = DilatedAttention.Create()
            .Segments(Fixtures.SegmentLengths).Rates(Fixtures.Rates)
            .Causal(causal).HeadOffsets(offsets).Kernel(kernel).Scale(0.3).CheckInputs()
            .Build();
        var config = Fixtures.FSharpConfig(Fixtures.SegmentLengths, Fixtures.Rates, offsets, causal, 0.3);

        using var result = attention.ForwardWithLse(q, k, v);
        var (output, logSumExp) = result;
        var core = FsAttention.forwardUsing(CoreKernel(kernel, q), true, config, q, k, v);

        Assert.True(Fixtures.Identical(core.Item1, output));
        Assert.True(Fixtures.Identical(core.Item2, logSumExp));
        Assert.Equal(new long[] { Fixtures.Batch, Fixtures.Heads, Fixtures.SequenceLength }, logSumExp.shape);
    }

    [Fact]
    public void Gradients_through_the_builder_equal_the_FSharp_gradients()
    {
        using var scope = NewDisposeScope();
        var (q0, k0, v0) = Fixtures.Qkv(seed: 5);
        var attention = DilatedAttention.Create().Segments(4, 16).Rates(1, 4).Causal().Build();
        var config = Fixtures.FSharpConfig([4, 16], [1, 4], HeadOffsets.Paper, true, null);

        Tensor[] Grads(Func<Tensor, Tensor, Tensor, Tensor> f)
        {
            var q = q0.detach().requires_grad_();
            var k = k0.detach().requires_grad_();
            var v = v0.detach().requires_grad_();
            f(q, k, v).pow(2).sum().backward();
            return [q.grad!, k.grad!, v.grad!];
        }

        var fromBuilder = Grads(attention.Forward);
        var fromCore = Grads((q, k, v) => FsAttention.forward(config, q, k, v));

        for (var i = 0; i < 3; i++)
        {
            Assert.True(Fixtures.Identical(fromCore[i], fromBuilder[i]));
        }
    }

    [Fact]
    public void The_built_attention_reports_its_settings_and_round_trips_through_ToBuilder()
    {
        var attention = DilatedAttention.Create()
            .Segments(8, 32, 128).Rates(1, 4, 16)
            .Causal().HeadOffsets(HeadOffsets.Blocks).Scale(0.125).Kernel(AttentionKernel.Explicit).CheckInputs()
            .Build();

        Assert.Equal(new[] { 8, 32, 128 }, attention.SegmentLengths);
        Assert.Equal(new[] { 1, 4, 16 }, attention.Rates);
        Assert.Equal(new[] { (8, 1), (32, 4), (128, 16) }, attention.Groups.Select(g => (g.SegmentLength, g.DilationRate)));
        Assert.True(attention.IsCausal);
        Assert.Equal(HeadOffsets.Blocks, attention.HeadOffsets);
        Assert.Equal(0.125, attention.Scale);
        Assert.Equal(AttentionKernel.Explicit, attention.Kernel);
        Assert.True(attention.ChecksInputs);
        Assert.Equal(0.125, attention.ScaleFor(64));

        var copy = attention.ToBuilder().Build();
        Assert.Equal(attention.ToString(), copy.ToString());
        Assert.Equal(attention.Groups, copy.Groups);

        var defaults = attention.ToBuilder().DefaultScale().Causal(false).Build();
        Assert.Null(defaults.Scale);
        Assert.False(defaults.IsCausal);
        Assert.Equal(1.0 / Math.Sqrt(64), defaults.ScaleFor(64));
        Assert.Equal(
            "DilatedAttention(w=[8, 32, 128], r=[1, 4, 16], non-causal, offsets=Blocks, scale=default, kernel=Explicit, checks inputs)",
            defaults.ToString());
    }

    [Fact]
    public void A_builder_is_immutable_so_one_prefix_can_start_several_configurations()
    {
        var prefix = DilatedAttention.Create().Segments(4, 8).Rates(1, 2);
        var causal = prefix.Causal().Build();
        var plain = prefix.Build();
        var otherRates = prefix.Rates(2, 4).Build();

        Assert.True(causal.IsCausal);
        Assert.False(plain.IsCausal);
        Assert.Equal(new[] { 1, 2 }, plain.Rates);
        Assert.Equal(new[] { 2, 4 }, otherRates.Rates);
    }

    [Fact]
    public void Segments_and_rates_are_copied_so_later_changes_to_the_caller_array_do_not_leak_in()
    {
        int[] segments = [4, 8];
        var builder = DilatedAttention.Create().Segments(segments).Rates(new List<int> { 1, 2 });
        segments[0] = 1000;
        Assert.Equal(new[] { 4, 8 }, builder.Build().SegmentLengths);
    }

    public static IEnumerable<object[]> PlanSettings() =>
        new[]
        {
            new object[] { new[] { 4, 8, 16 }, new[] { 1, 2, 4 }, false, 37, 3, true },
            new object[] { new[] { 4, 8, 16 }, new[] { 1, 2, 4 }, true, 64, 4, true },
            new object[] { new[] { 4, 8, 64 }, new[] { 1, 2, 4 }, true, 50, 3, true }, // connected
            new object[] { new[] { 8 }, new[] { 2 }, false, 33, 1, true }, // one head, r = 2: disconnected
            new object[] { new[] { 2048, 4096 }, new[] { 1, 2 }, true, 100_000, 8, false },
        };

    [Theory]
    [MemberData(nameof(PlanSettings))]
    public void Plan_equals_the_FSharp_summary(int[] segments, int[] rates, bool causal, int n, int heads, bool computeDiameter)
    {
        var attention = DilatedAttention.Create().Segments(segments).Rates(rates).Causal(causal).Build();
        var plan = attention.Plan(n, heads, Fixtures.HeadDim, computeDiameter);
        var core = FsPlan.summarise(
            Fixtures.FSharpConfig(segments, rates, HeadOffsets.Paper, causal, null), n, heads, Fixtures.HeadDim, computeDiameter);

        Assert.Equal(core.N, plan.SequenceLength);
        Assert.Equal(core.Heads, plan.Heads);
        Assert.Equal(core.HeadDim, plan.HeadDim);
        Assert.Equal(core.Causal, plan.IsCausal);
        Assert.Equal(core.Pairs, plan.AttendedPairs);
        Assert.Equal(core.PairsPerToken, plan.PairsPerToken);
        Assert.Equal(core.Flops, plan.Flops);
        Assert.Equal(core.DenseFlops, plan.DenseFlops);
        Assert.Equal(core.MemoryBytes, plan.MemoryBytes);
        Assert.Equal(core.UncoveredPairs, plan.UncoveredPairs);
        Assert.Equal(core.UncoveredShare, plan.UncoveredShare);
        Assert.Equal(
            core.Groups.Select(g => (g.SegmentLength, g.DilationRate, g.Segments, g.CoveredPairs, g.AttendedPairs)),
            plan.Groups.Select(g => (g.SegmentLength, g.DilationRate, g.Segments, g.CoveredPairs, g.AttendedPairs)));
        Assert.Equal(FsPlan.format(core), plan.Format());
        Assert.Equal(plan.Format(), plan.ToString());

        if (!computeDiameter)
        {
            Assert.Equal(Connectivity.NotComputed, plan.Connectivity);
            Assert.Null(plan.Diameter);
        }
        else
        {
            var diameter = FsPlan.diameter(FsPlan.Pattern.NewDilated(Fixtures.FSharpConfig(segments, rates, HeadOffsets.Paper, causal, null), heads), n);
            if (OptionModule.IsSome(diameter))
            {
                Assert.Equal(Connectivity.Connected, plan.Connectivity);
                Assert.Equal(diameter.Value, plan.Diameter);
            }
            else
            {
                Assert.Equal(Connectivity.Disconnected, plan.Connectivity);
                Assert.Null(plan.Diameter);
            }
        }
    }

    [Fact]
    public void The_plan_cases_cover_connected_and_disconnected_graphs()
    {
        var connected = DilatedAttention.Create().Segments(4, 8, 64).Rates(1, 2, 4).Build().Plan(37, 3, 5, computeDiameter: true);
        var disconnected = DilatedAttention.Create().Segments(8).Rates(2).Build().Plan(33, 1, 5, computeDiameter: true);
        Assert.Equal(Connectivity.Connected, connected.Connectivity);
        Assert.NotNull(connected.Diameter);
        Assert.Equal(Connectivity.Disconnected, disconnected.Connectivity);
    }

    [Fact]
    public void Layout_helpers_equal_the_FSharp_converters()
    {
        using var scope = NewDisposeScope();
        var (q, _, _) = Fixtures.Qkv();
        var bshd = AttentionLayout.ToBatchSeqHeads(q);
        Assert.Equal(new long[] { Fixtures.Batch, Fixtures.SequenceLength, Fixtures.Heads, Fixtures.HeadDim }, bshd.shape);
        Assert.True(Fixtures.Identical(FsInputs.bhsdToBshd(q), bshd));
        Assert.True(Fixtures.Identical(FsInputs.bshdToBhsd(bshd), AttentionLayout.ToBatchHeadsSeq(bshd)));
        Assert.True(Fixtures.Identical(q, AttentionLayout.ToBatchHeadsSeq(bshd)));
    }

    [Fact]
    public void Npy_files_written_by_either_API_read_back_identically_through_the_other()
    {
        using var scope = NewDisposeScope();
        var (q, _, _) = Fixtures.Qkv();
        var folder = Directory.CreateTempSubdirectory("longnet-csharp-npy-");
        try
        {
            var fromCSharp = Path.Combine(folder.FullName, "cs.npy");
            var fromFSharp = Path.Combine(folder.FullName, "fs.npy");
            Npy.WriteTensor(fromCSharp, q);
            FsNpy.writeTensor(fromFSharp, q);

            Assert.Equal(File.ReadAllBytes(fromFSharp), File.ReadAllBytes(fromCSharp));
            Assert.True(Fixtures.Identical(q, FsNpy.readTensor(fromCSharp)));
            Assert.True(Fixtures.Identical(q, Npy.ReadTensor(fromFSharp)));

            var array = Npy.Read(fromFSharp);
            Assert.Equal(NpyElementType.Float64, array.ElementType);
            Assert.Equal(q.shape, array.Shape);
            Assert.Equal(q.data<double>().ToArray(), array.ToFloat64Array());
            Assert.Equal(File.ReadAllBytes(fromFSharp), Npy.Serialize(array));
            Assert.Equal(array.ToFloat64Array(), Npy.Parse(Npy.Serialize(array)).ToFloat64Array());
            Assert.True(Fixtures.Identical(q, array.ToTensor()));
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    [Fact]
    public void NpyArray_built_in_CSharp_serializes_like_the_FSharp_record()
    {
        float[] data = [1f, 2f, 3f, 4f, 5f, 6f];
        var array = NpyArray.FromFloat32(data, 2, 3);
        var core = new FsNpy.NpyArray([2L, 3L], FsNpy.NpyData.NewFloat32(data));

        Assert.Equal(FsNpy.serialize(core), Npy.Serialize(array));
        Assert.Equal(6, array.Length);
        Assert.Equal("NpyArray(Float32, [2, 3])", array.ToString());
        Assert.Equal(data, array.ToFloat32Array());
        Assert.Throws<InvalidOperationException>(() => array.ToFloat64Array());

        var scalar = NpyArray.FromFloat64([2.5]);
        Assert.Empty(scalar.Shape);
        Assert.Equal(1, scalar.Length);
    }

    [Fact]
    public void EnsureLoaded_reports_what_the_FSharp_loader_reports()
    {
        var info = LongNetRuntime.EnsureLoaded();
        var core = FsNative.ensureLoaded();
        Assert.Equal(core.Patched, info.Patched);
        Assert.Equal(core.Cuda, info.Cuda);
        Assert.Equal(OptionModule.IsSome(core.TorchLib) ? core.TorchLib.Value : null, info.TorchLibraryDirectory);
        Assert.Equal(OptionModule.IsSome(core.LibTorchSharp) ? core.LibTorchSharp.Value : null, info.LibTorchSharpPath);
        Assert.Equal("LONGNET_TORCH_LIB", LongNetRuntime.TorchLibraryVariable);
    }
}
