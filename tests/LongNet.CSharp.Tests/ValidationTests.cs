using System;
using Xunit;
using static TorchSharp.torch;

namespace LongNet.CSharp.Tests;

/// <summary>Invalid input raises the documented exception type, naming the C# parameter.</summary>
public sealed class ValidationTests
{
    public ValidationTests() => LongNetRuntime.EnsureLoaded();

    private static DilatedAttentionBuilder Valid() => DilatedAttention.Create().Segments(4, 8).Rates(1, 2);

    private static void Throws<TException>(string parameter, Action action)
        where TException : ArgumentException
    {
        var e = Assert.Throws<TException>(action);
        Assert.Equal(parameter, e.ParamName);
        Assert.Contains(parameter, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Segment_lengths_must_be_given_and_at_least_one()
    {
        Throws<ArgumentNullException>("segmentLengths", () => DilatedAttention.Create().Segments((int[])null!));
        Throws<ArgumentNullException>("segmentLengths", () => DilatedAttention.Create().Segments((System.Collections.Generic.IEnumerable<int>)null!));
        Throws<ArgumentException>("segmentLengths", () => DilatedAttention.Create().Segments());
        Throws<ArgumentOutOfRangeException>("segmentLengths", () => DilatedAttention.Create().Segments(4, 0));
        Throws<ArgumentOutOfRangeException>("segmentLengths", () => DilatedAttention.Create().Segments(-3));
    }

    [Fact]
    public void Rates_must_be_given_and_at_least_one()
    {
        Throws<ArgumentNullException>("rates", () => DilatedAttention.Create().Rates((int[])null!));
        Throws<ArgumentException>("rates", () => DilatedAttention.Create().Rates());
        Throws<ArgumentOutOfRangeException>("rates", () => DilatedAttention.Create().Rates(1, 0));
    }

    [Fact]
    public void Build_checks_counts_rates_against_segments_and_distinct_groups()
    {
        Throws<ArgumentException>("rates", () => DilatedAttention.Create().Segments(4, 8).Rates(1).Build());
        Throws<ArgumentOutOfRangeException>("rates", () => DilatedAttention.Create().Segments(4, 8).Rates(1, 9).Build());
        Throws<ArgumentException>("segmentLengths", () => DilatedAttention.Create().Segments(4, 4).Rates(2, 2).Build());

        // A count mismatch is an ArgumentException but not an out-of-range one.
        var mismatch = Assert.Throws<ArgumentException>(() => DilatedAttention.Create().Segments(4, 8).Rates(1).Build());
        Assert.IsNotType<ArgumentOutOfRangeException>(mismatch);
    }

    [Fact]
    public void Build_without_segments_or_rates_is_an_invalid_operation()
    {
        Assert.Throws<InvalidOperationException>(() => DilatedAttention.Create().Build());
        Assert.Throws<InvalidOperationException>(() => DilatedAttention.Create().Segments(4).Build());
        Assert.Throws<InvalidOperationException>(() => DilatedAttention.Create().Rates(1).Build());
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-1.0)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void Scale_must_be_finite_and_positive(double scale) =>
        Throws<ArgumentOutOfRangeException>("scale", () => Valid().Scale(scale));

    [Fact]
    public void Enum_options_reject_undefined_values()
    {
        Throws<ArgumentOutOfRangeException>("offsets", () => Valid().HeadOffsets((HeadOffsets)7));
        Throws<ArgumentOutOfRangeException>("kernel", () => Valid().Kernel((AttentionKernel)(-1)));
    }

    [Fact]
    public void Plan_sizes_must_be_at_least_one()
    {
        var attention = Valid().Build();
        Throws<ArgumentOutOfRangeException>("sequenceLength", () => attention.Plan(0, 2));
        Throws<ArgumentOutOfRangeException>("heads", () => attention.Plan(16, 0));
        Throws<ArgumentOutOfRangeException>("headDim", () => attention.Plan(16, 2, headDim: 0));
        Throws<ArgumentOutOfRangeException>("headDim", () => attention.ScaleFor(0));
    }

    [Fact]
    public void Forward_names_the_offending_tensor()
    {
        using var scope = NewDisposeScope();
        var attention = Valid().Build();
        var q = randn(1, 2, 9, 4, dtype: ScalarType.Float64);

        Throws<ArgumentNullException>("query", () => attention.Forward(null!, q, q));
        Throws<ArgumentNullException>("key", () => attention.Forward(q, null!, q));
        Throws<ArgumentNullException>("value", () => attention.ForwardWithLse(q, q, null!));
        Throws<ArgumentException>("query", () => attention.Forward(randn(2, 9, 4), q, q));
        Throws<ArgumentException>("key", () => attention.Forward(q, randn(1, 2, 8, 4, dtype: ScalarType.Float64), q));
        Throws<ArgumentException>("value", () => attention.Forward(q, q, q.to_type(ScalarType.Float32)));
        Throws<ArgumentException>("query", () => attention.Forward(q.to_type(ScalarType.Int64), q, q));
    }

    [Fact]
    public void CheckInputs_rejects_NaN_and_infinity_and_is_off_by_default()
    {
        using var scope = NewDisposeScope();
        var q = randn(1, 2, 9, 4, dtype: ScalarType.Float64);
        var withNaN = q.clone();
        withNaN[0, 1, 3, 2] = tensor(double.NaN, ScalarType.Float64);

        Throws<ArgumentException>("key", () => Valid().CheckInputs().Build().Forward(q, withNaN, q));
        var unchecked_ = Valid().Build().Forward(q, withNaN, q);
        Assert.Equal(q.shape, unchecked_.shape);
    }

    [Fact]
    public void Layout_helpers_want_4D_tensors()
    {
        using var scope = NewDisposeScope();
        Throws<ArgumentNullException>("tensor", () => AttentionLayout.ToBatchHeadsSeq(null!));
        Throws<ArgumentException>("tensor", () => AttentionLayout.ToBatchSeqHeads(randn(2, 3, 4)));
    }

    [Fact]
    public void NpyArray_checks_its_shape_against_its_data()
    {
        Throws<ArgumentNullException>("data", () => NpyArray.FromFloat64(null!, 2));
        Throws<ArgumentNullException>("shape", () => NpyArray.FromFloat64([1.0], null!));
        Throws<ArgumentException>("shape", () => NpyArray.FromFloat64([1.0, 2.0, 3.0], 2, 2));
        Throws<ArgumentOutOfRangeException>("shape", () => NpyArray.FromFloat32([], -1));
        Assert.Throws<System.IO.InvalidDataException>(() => Npy.Parse([1, 2, 3]));
        Throws<ArgumentException>("tensor", () => NpyArray.FromTensor(ones(2, dtype: ScalarType.Int32)));
    }
}
