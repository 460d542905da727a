using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;
using FsAttention = global::LongNet.DilatedAttention;
using FsDilatedConfig = global::LongNet.DilatedConfig;
using FsDilatedConfigModule = global::LongNet.DilatedConfigModule;
using FsPlan = global::LongNet.Plan;

namespace LongNet.CSharp;

/// <summary>
/// Dilated attention (LongNet, Ding et al. 2023) with a fixed, validated configuration: every group
/// (w, r) splits the sequence into segments of length w, keeps every r-th position of each segment (a
/// different offset per head), attends inside each sparse segment, scatters the results back, and the
/// groups are mixed by their softmax denominators: <c>out = Σ_g out_g·exp(lse_g) / Σ_g exp(lse_g)</c>.
/// </summary>
/// <remarks>
/// Build one with <see cref="Create"/>. Immutable and safe to share between threads; it holds no tensors,
/// so it needs no disposal. Tensors are <c>[batch, heads, seq, headDim]</c> (use
/// <see cref="AttentionLayout.ToBatchHeadsSeq"/> for <c>[batch, seq, heads, headDim]</c> data); any
/// sequence length, float32, float64, bfloat16 or float16, on the CPU or CUDA. A position that no group
/// covers outputs 0. Gradients are the true gradients, through the mixing weights too.
/// </remarks>
public sealed class DilatedAttention
{
    internal DilatedAttention(FsDilatedConfig config, AttentionKernel kernel, bool checkInputs)
    {
        Config = config;
        Kernel = kernel;
        ChecksInputs = checkInputs;
        Groups = Interop.ReadOnly(config.Groups.Select(g => new DilatedGroup(g.SegmentLength, g.DilationRate)));
        SegmentLengths = Interop.ReadOnly(Groups.Select(g => g.SegmentLength));
        Rates = Interop.ReadOnly(Groups.Select(g => g.DilationRate));
    }

    /// <summary>Starts a builder with the defaults: not causal, paper head offsets, scale 1/sqrt(headDim), automatic kernel.</summary>
    /// <returns>A new <see cref="DilatedAttentionBuilder"/>; call <c>Segments</c> and <c>Rates</c> before <c>Build</c>.</returns>
    public static DilatedAttentionBuilder Create() => new();

    /// <summary>The core configuration this object wraps (for the rest of the facade; never public).</summary>
    internal FsDilatedConfig Config { get; }

    /// <summary>The (segment length, dilation rate) groups, in the order they were given.</summary>
    public IReadOnlyList<DilatedGroup> Groups { get; }

    /// <summary>The segment length w of each group.</summary>
    public IReadOnlyList<int> SegmentLengths { get; }

    /// <summary>The dilation rate r of each group.</summary>
    public IReadOnlyList<int> Rates { get; }

    /// <summary>Whether a query only sees keys at or before its own position.</summary>
    public bool IsCausal => Config.Causal;

    /// <summary>The configured softmax scale, or null for the default 1/sqrt(headDim) (see <see cref="ScaleFor"/>).</summary>
    public double? Scale => Interop.ToNullable(Config.Scale);

    /// <summary>Which offset each head uses inside a segment.</summary>
    public HeadOffsets HeadOffsets => Interop.FromFSharp(Config.Offsets);

    /// <summary>The kernel the calls use.</summary>
    public AttentionKernel Kernel { get; }

    /// <summary>Whether every call checks its inputs for NaN and infinity.</summary>
    public bool ChecksInputs { get; }

    /// <summary>A builder that starts from this configuration, to derive a variant of it.</summary>
    /// <returns>A <see cref="DilatedAttentionBuilder"/> holding every setting of this attention.</returns>
    public DilatedAttentionBuilder ToBuilder() => DilatedAttentionBuilder.From(this);

    /// <summary>The softmax scale used for a head dimension: the configured one or 1/sqrt(headDim).</summary>
    /// <param name="headDim">The head dimension, ≥ 1.</param>
    /// <returns>The scale.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="headDim"/> is &lt; 1.</exception>
    public double ScaleFor(int headDim)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        return FsDilatedConfigModule.scaleFor(Config, headDim);
    }

    /// <summary>
    /// Dilated attention: <c>[batch, heads, seq, headDim]</c> query, key and value →
    /// <c>[batch, heads, seq, headDim]</c> output. Differentiable.
    /// </summary>
    /// <param name="query">Queries <c>[batch, heads, seq, headDim]</c>.</param>
    /// <param name="key">Keys, of the query's shape, dtype and device.</param>
    /// <param name="value">Values, of the query's shape, dtype and device.</param>
    /// <returns>
    /// A new tensor <c>[batch, heads, seq, headDim]</c> of the query's dtype and device, owned by the
    /// caller (it joins the caller's current dispose scope, if any). The inputs are not disposed.
    /// </returns>
    /// <exception cref="ArgumentNullException">An input is null.</exception>
    /// <exception cref="ArgumentException">
    /// An input is not 4-D, has a dimension &lt; 1, an unsupported dtype, or differs from the query in
    /// shape, dtype or device; with <see cref="ChecksInputs"/>, holds NaN or infinity; with the
    /// <see cref="AttentionKernel.Fused"/> kernel, libtorch has no fused kernel for its dtype and device
    /// (parameter <c>kernel</c>).
    /// </exception>
    public Tensor Forward(Tensor query, Tensor key, Tensor value)
    {
        var (output, logSumExp) = Run(query, key, value);
        logSumExp.Dispose();
        return output;
    }

    /// <summary>
    /// Dilated attention with its global log-sum-exp: <c>[batch, heads, seq, headDim]</c> query, key and
    /// value → output <c>[batch, heads, seq, headDim]</c> and log-sum-exp <c>[batch, heads, seq]</c> (−∞
    /// where no group covers the position). The output is differentiable on every kernel; the log-sum-exp
    /// only on <see cref="AttentionKernel.Explicit"/>.
    /// </summary>
    /// <param name="query">Queries <c>[batch, heads, seq, headDim]</c>.</param>
    /// <param name="key">Keys, of the query's shape, dtype and device.</param>
    /// <param name="value">Values, of the query's shape, dtype and device.</param>
    /// <returns>Both tensors, owned by the caller; dispose the result to free both.</returns>
    /// <exception cref="ArgumentNullException">An input is null.</exception>
    /// <exception cref="ArgumentException">As for <see cref="Forward"/>.</exception>
    public AttentionResult ForwardWithLse(Tensor query, Tensor key, Tensor value)
    {
        var (output, logSumExp) = Run(query, key, value);
        return new AttentionResult(output, logSumExp);
    }

    /// <summary>
    /// The plan of this attention for a sequence length and head count: which positions each group
    /// covers, attended (query, key) pairs, FLOPs, a memory estimate and, on request, the diameter of the
    /// attention graph. Pure index math: no tensors, no native code.
    /// </summary>
    /// <param name="sequenceLength">The sequence length N, ≥ 1.</param>
    /// <param name="heads">The number of heads H, ≥ 1.</param>
    /// <param name="headDim">The head dimension d, ≥ 1 (for FLOPs and memory).</param>
    /// <param name="computeDiameter">
    /// Whether to compute the diameter by breadth-first search from every position (O(N²/64 · blocks) work:
    /// quick up to tens of thousands of positions).
    /// </param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A size is &lt; 1.</exception>
    public AttentionPlan Plan(int sequenceLength, int heads, int headDim = 64, bool computeDiameter = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(heads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        return new AttentionPlan(FsPlan.summarise(Config, sequenceLength, heads, headDim, computeDiameter));
    }

    /// <summary>A one-line description, e.g. <c>DilatedAttention(w=[4, 8], r=[1, 2], causal, offsets=Paper, scale=default, kernel=Auto)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        var scale = Scale is { } s ? s.ToString("R", System.Globalization.CultureInfo.InvariantCulture) : "default";
        return $"DilatedAttention(w=[{string.Join(", ", SegmentLengths)}], r=[{string.Join(", ", Rates)}], "
            + $"{(IsCausal ? "causal" : "non-causal")}, offsets={HeadOffsets}, scale={scale}, kernel={Kernel}"
            + $"{(ChecksInputs ? ", checks inputs" : "")})";
    }

    private (Tensor Output, Tensor LogSumExp) Run(Tensor query, Tensor key, Tensor value)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        global::LongNet.Native.ensureLoaded();
        var kernel = Kernel == AttentionKernel.Auto ? FsAttention.defaultKernel(query) : Interop.ToFSharp(Kernel);
        var result = FsAttention.forwardUsing(kernel, ChecksInputs, Config, query, key, value);
        return (result.Item1, result.Item2);
    }
}

/// <summary>One (segment length w, dilation rate r) group of a dilated attention, with 1 ≤ r ≤ w.</summary>
public sealed record DilatedGroup
{
    internal DilatedGroup(int segmentLength, int dilationRate)
    {
        SegmentLength = segmentLength;
        DilationRate = dilationRate;
    }

    /// <summary>The segment length w.</summary>
    public int SegmentLength { get; }

    /// <summary>The dilation rate r: the group keeps every r-th position of each segment.</summary>
    public int DilationRate { get; }

    /// <summary>The group as <c>(w=…, r=…)</c>.</summary>
    /// <returns>The description.</returns>
    public override string ToString() => $"(w={SegmentLength}, r={DilationRate})";
}

/// <summary>
/// The two results of <see cref="DilatedAttention.ForwardWithLse"/>; disposing it disposes both tensors.
/// Deconstructs as <c>var (output, logSumExp) = result;</c>.
/// </summary>
public sealed class AttentionResult : IDisposable
{
    internal AttentionResult(Tensor output, Tensor logSumExp)
    {
        Output = output;
        LogSumExp = logSumExp;
    }

    /// <summary>The attention output <c>[batch, heads, seq, headDim]</c>.</summary>
    public Tensor Output { get; }

    /// <summary>The global log-sum-exp of the scaled scores <c>[batch, heads, seq]</c>; −∞ where no group covers a position.</summary>
    public Tensor LogSumExp { get; }

    /// <summary>Gives the two tensors (still owned by this result unless taken out of it).</summary>
    /// <param name="output">The attention output.</param>
    /// <param name="logSumExp">The log-sum-exp.</param>
    public void Deconstruct(out Tensor output, out Tensor logSumExp)
    {
        output = Output;
        logSumExp = LogSumExp;
    }

    /// <summary>Disposes both tensors.</summary>
    public void Dispose()
    {
        Output.Dispose();
        LogSumExp.Dispose();
    }
}
