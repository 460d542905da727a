using System.Linq;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using TorchSharp;
using static TorchSharp.torch;
using FsConfig = global::LongNet.DilatedConfig;
using FsConfigModule = global::LongNet.DilatedConfigModule;
using FsHeadOffsets = global::LongNet.HeadOffsets;

namespace LongNet.CSharp.Tests;

/// <summary>Inputs and F# configurations shared by the tests: odd sizes, float64, seeded.</summary>
internal static class Fixtures
{
    public const int Batch = 2;
    public const int Heads = 3;
    public const int SequenceLength = 37;
    public const int HeadDim = 5;

    public static readonly int[] SegmentLengths = [4, 8, 16];
    public static readonly int[] Rates = [1, 2, 4];

    /// <summary>Query, key and value <c>[2, 3, 37, 5]</c> float64 from a seeded generator.</summary>
    public static (Tensor Q, Tensor K, Tensor V) Qkv(long seed = 7, ScalarType dtype = ScalarType.Float64)
    {
        LongNetRuntime.EnsureLoaded();
        using var generator = new Generator((ulong)seed, CPU);
        long[] shape = [Batch, Heads, SequenceLength, HeadDim];
        return (
            randn(shape, dtype: dtype, generator: generator),
            randn(shape, dtype: dtype, generator: generator),
            randn(shape, dtype: dtype, generator: generator));
    }

    public static FsHeadOffsets ToFSharp(HeadOffsets offsets) =>
        offsets == HeadOffsets.Paper ? FsHeadOffsets.Paper : FsHeadOffsets.Blocks;

    /// <summary>The F# core's configuration for the same settings, built by its own constructor.</summary>
    public static FsConfig FSharpConfig(int[] segmentLengths, int[] rates, HeadOffsets offsets, bool causal, double? scale) =>
        FsConfigModule.createOrRaise(
            ListModule.OfSeq(segmentLengths),
            ListModule.OfSeq(rates),
            ToFSharp(offsets),
            causal,
            scale is { } s ? FSharpOption<double>.Some(s) : FSharpOption<double>.None);

    public static bool Identical(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && Equal(a, b);

    private static bool Equal(Tensor a, Tensor b)
    {
        using var same = a.eq(b);
        using var all = same.all();
        return all.item<bool>();
    }
}
