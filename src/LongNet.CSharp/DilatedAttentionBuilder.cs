using System;
using System.Collections.Generic;
using System.Linq;
using FsDilatedConfig = global::LongNet.DilatedConfigModule;

namespace LongNet.CSharp;

/// <summary>
/// Builds a <see cref="DilatedAttention"/>: start with <see cref="DilatedAttention.Create"/>, name the groups
/// with <see cref="Segments(int[])"/> and <see cref="Rates(int[])"/>, add options, end with <see cref="Build"/>.
/// </summary>
/// <remarks>
/// The builder is immutable: every method returns a new builder and leaves this one as it was, so one
/// partly configured builder can be the start of several configurations. Each method checks its own
/// argument at once (an <see cref="ArgumentException"/> or <see cref="ArgumentOutOfRangeException"/> naming
/// the parameter); <see cref="Build"/> checks what involves several calls (matching counts, every rate at
/// most its segment length, distinct groups). Nothing here touches native code.
/// <code>
/// var attention = DilatedAttention.Create()
///     .Segments(2048, 4096).Rates(1, 2)
///     .Causal()
///     .HeadOffsets(HeadOffsets.Paper)
///     .Build();
/// </code>
/// </remarks>
public sealed class DilatedAttentionBuilder
{
    private readonly Settings settings;

    internal DilatedAttentionBuilder()
        : this(new Settings(null, null, LongNet.CSharp.HeadOffsets.Paper, false, null, LongNet.CSharp.AttentionKernel.Auto, false)) { }

    private DilatedAttentionBuilder(Settings settings) => this.settings = settings;

    internal static DilatedAttentionBuilder From(DilatedAttention attention) =>
        new(
            new Settings(
                attention.SegmentLengths.ToArray(),
                attention.Rates.ToArray(),
                attention.HeadOffsets,
                attention.IsCausal,
                attention.Scale,
                attention.Kernel,
                attention.ChecksInputs));

    /// <summary>
    /// The segment length w of each group, in the order of <see cref="Rates(int[])"/>; replaces any
    /// earlier call.
    /// </summary>
    /// <param name="segmentLengths">One or more segment lengths, each ≥ 1.</param>
    /// <returns>A builder with these segment lengths.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="segmentLengths"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="segmentLengths"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A segment length is &lt; 1.</exception>
    public DilatedAttentionBuilder Segments(params int[] segmentLengths)
    {
        ArgumentNullException.ThrowIfNull(segmentLengths);
        return With(settings with { SegmentLengths = CheckPositive(segmentLengths, nameof(segmentLengths)), GroupsGiven = true });
    }

    /// <summary>The segment length w of each group (see <see cref="Segments(int[])"/>).</summary>
    /// <param name="segmentLengths">One or more segment lengths, each ≥ 1.</param>
    /// <returns>A builder with these segment lengths.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="segmentLengths"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="segmentLengths"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A segment length is &lt; 1.</exception>
    public DilatedAttentionBuilder Segments(IEnumerable<int> segmentLengths)
    {
        ArgumentNullException.ThrowIfNull(segmentLengths);
        return Segments(segmentLengths.ToArray());
    }

    /// <summary>
    /// The dilation rate r of each group, one per segment length and in the same order; a group keeps
    /// every r-th position of each of its segments. Replaces any earlier call.
    /// </summary>
    /// <param name="rates">One or more dilation rates, each ≥ 1 (and, checked by <see cref="Build"/>, at most its segment length).</param>
    /// <returns>A builder with these rates.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="rates"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="rates"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A rate is &lt; 1.</exception>
    public DilatedAttentionBuilder Rates(params int[] rates)
    {
        ArgumentNullException.ThrowIfNull(rates);
        return With(settings with { Rates = CheckPositive(rates, nameof(rates)), GroupsGiven = true });
    }

    /// <summary>The dilation rate r of each group (see <see cref="Rates(int[])"/>).</summary>
    /// <param name="rates">One or more dilation rates, each ≥ 1.</param>
    /// <returns>A builder with these rates.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="rates"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="rates"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A rate is &lt; 1.</exception>
    public DilatedAttentionBuilder Rates(IEnumerable<int> rates)
    {
        ArgumentNullException.ThrowIfNull(rates);
        return Rates(rates.ToArray());
    }

    /// <summary>Adds one group after those given on this builder (by earlier calls, or by <see cref="Segments(int[])"/> and <see cref="Rates(int[])"/>); the first call after <c>ToBuilder</c> replaces the groups.</summary>
    /// <param name="segmentLength">The segment length w, ≥ 1.</param>
    /// <param name="dilationRate">The dilation rate r, in [1, <paramref name="segmentLength"/>].</param>
    /// <returns>A builder with this group added.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of its range.</exception>
    /// <exception cref="InvalidOperationException">Segments and rates given before differ in count.</exception>
    public DilatedAttentionBuilder Group(int segmentLength, int dilationRate)
    {
        var (segments, rates) = Interop.AddGroup(
            settings.GroupsGiven ? settings.SegmentLengths ?? [] : [], settings.GroupsGiven ? settings.Rates ?? [] : [], segmentLength, dilationRate);
        return With(settings with { SegmentLengths = segments, Rates = rates, GroupsGiven = true });
    }

    /// <summary>Whether a query may only see keys at or before its own position (default: not causal).</summary>
    /// <param name="causal">True for causal (decoder) attention.</param>
    /// <returns>A builder with this setting.</returns>
    public DilatedAttentionBuilder Causal(bool causal = true) => With(settings with { Causal = causal });

    /// <summary>The softmax scale (default: 1/sqrt(headDim)).</summary>
    /// <param name="scale">A finite number &gt; 0.</param>
    /// <returns>A builder with this scale.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="scale"/> is not finite or not &gt; 0.</exception>
    public DilatedAttentionBuilder Scale(double scale)
    {
        if (!double.IsFinite(scale) || scale <= 0.0)
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"scale must be a finite number > 0, got {scale}.");
        }

        return With(settings with { Scale = scale });
    }

    /// <summary>Uses the default softmax scale 1/sqrt(headDim), undoing an earlier <see cref="Scale(double)"/>.</summary>
    /// <returns>A builder with the default scale.</returns>
    public DilatedAttentionBuilder DefaultScale() => With(settings with { Scale = null });

    /// <summary>Which offset each head uses inside a segment (default: <see cref="LongNet.CSharp.HeadOffsets.Paper"/>).</summary>
    /// <param name="offsets">Paper (head j: j mod r) or Blocks (head j: j / ceil(H / r)).</param>
    /// <returns>A builder with this setting.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offsets"/> is not a defined value.</exception>
    public DilatedAttentionBuilder HeadOffsets(HeadOffsets offsets)
    {
        if (!Enum.IsDefined(offsets))
        {
            throw new ArgumentOutOfRangeException(nameof(offsets), offsets, "offsets must be Paper or Blocks.");
        }

        return With(settings with { Offsets = offsets });
    }

    /// <summary>Which kernel computes the attention (default: <see cref="AttentionKernel.Auto"/>).</summary>
    /// <param name="kernel">Auto, Fused or Explicit.</param>
    /// <returns>A builder with this setting.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kernel"/> is not a defined value.</exception>
    public DilatedAttentionBuilder Kernel(AttentionKernel kernel)
    {
        if (!Enum.IsDefined(kernel))
        {
            throw new ArgumentOutOfRangeException(nameof(kernel), kernel, "kernel must be Auto, Fused or Explicit.");
        }

        return With(settings with { Kernel = kernel });
    }

    /// <summary>
    /// Whether every call also checks that query, key and value hold no NaN or infinity (default: off;
    /// shapes, dtypes and devices are always checked).
    /// </summary>
    /// <param name="checkInputs">True to check the values too.</param>
    /// <returns>A builder with this setting.</returns>
    public DilatedAttentionBuilder CheckInputs(bool checkInputs = true) => With(settings with { CheckInputs = checkInputs });

    /// <summary>Checks the whole configuration and returns the immutable attention it describes.</summary>
    /// <returns>The configured <see cref="DilatedAttention"/>.</returns>
    /// <exception cref="InvalidOperationException"><see cref="Segments(int[])"/> or <see cref="Rates(int[])"/> was not called.</exception>
    /// <exception cref="ArgumentException">
    /// The counts of segment lengths and rates differ (parameter <c>rates</c>), or a group appears twice
    /// (parameter <c>segmentLengths</c>).
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException">A rate exceeds its segment length (parameter <c>rates</c>).</exception>
    public DilatedAttention Build()
    {
        var segmentLengths = settings.SegmentLengths
            ?? throw new InvalidOperationException("Call Segments(...) before Build(): dilated attention needs at least one group.");
        var rates = settings.Rates
            ?? throw new InvalidOperationException("Call Rates(...) before Build(): each segment length needs a dilation rate.");

        if (rates.Length != segmentLengths.Length)
        {
            throw new ArgumentException(
                $"rates must have one entry per segment length ({segmentLengths.Length}), got {rates.Length}.",
                nameof(rates));
        }

        for (var i = 0; i < rates.Length; i++)
        {
            if (rates[i] > segmentLengths[i])
            {
                throw new ArgumentOutOfRangeException(
                    nameof(rates),
                    rates[i],
                    $"rates[{i}] must be in [1, segmentLengths[{i}] = {segmentLengths[i]}], got {rates[i]}.");
            }
        }

        var seen = new HashSet<(int, int)>();
        for (var i = 0; i < rates.Length; i++)
        {
            if (!seen.Add((segmentLengths[i], rates[i])))
            {
                throw new ArgumentException(
                    $"groups must be distinct; (w={segmentLengths[i]}, r={rates[i]}) appears more than once.",
                    nameof(segmentLengths));
            }
        }

        var created = FsDilatedConfig.create(
            Interop.ToFSharpList(segmentLengths),
            Interop.ToFSharpList(rates),
            Interop.ToFSharp(settings.Offsets),
            settings.Causal,
            Interop.ToOption(settings.Scale));

        // The checks above mirror the core's, so this only fires if the core grows a new rule.
        if (created.IsError)
        {
            throw Interop.ToException(created.ErrorValue);
        }

        return new DilatedAttention(created.ResultValue, settings.Kernel, settings.CheckInputs);
    }

    private DilatedAttentionBuilder With(Settings next) => new(next);

    private static int[] CheckPositive(int[] values, string parameter)
    {
        if (values.Length == 0)
        {
            throw new ArgumentException($"{parameter} must name at least one group.", parameter);
        }

        for (var i = 0; i < values.Length; i++)
        {
            if (values[i] < 1)
            {
                throw new ArgumentOutOfRangeException(parameter, values[i], $"{parameter}[{i}] must be ≥ 1, got {values[i]}.");
            }
        }

        return (int[])values.Clone();
    }

    private sealed record Settings(
        int[]? SegmentLengths,
        int[]? Rates,
        HeadOffsets Offsets,
        bool Causal,
        double? Scale,
        AttentionKernel Kernel,
        bool CheckInputs,
        bool GroupsGiven = false);
}
