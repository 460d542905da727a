using System;
using TorchSharp;
using FsAttentionSettings = global::LongNet.Modules.AttentionSettings;
using FsAttentionSettingsModule = global::LongNet.Modules.AttentionSettingsModule;
using FsMultihead = global::LongNet.Modules.MultiheadDilatedAttention;

namespace LongNet.CSharp;

/// <summary>
/// Builds a <see cref="MultiheadDilatedAttention"/>: start with <see cref="MultiheadDilatedAttention.Create"/>,
/// give <see cref="EmbeddingDim"/>, <see cref="Heads"/> and <see cref="Attention"/>, add options, end with <see cref="Build"/>.
/// </summary>
/// <remarks>
/// Immutable: every method returns a new builder. Each method checks its own argument at once
/// (<see cref="ArgumentException"/> or <see cref="ArgumentOutOfRangeException"/> naming the parameter);
/// <see cref="Build"/> checks what spans several calls and creates the weights.
/// <code>
/// using var layer = MultiheadDilatedAttention.Create()
///     .EmbeddingDim(64).Heads(4)
///     .Attention(DilatedAttention.Create().Segments(16, 32).Rates(1, 2).Causal().Build())
///     .Position(PositionEncoding.Rope)
///     .Seed(1)
///     .Build();
/// </code>
/// </remarks>
public sealed class MultiheadDilatedAttentionBuilder
{
    private readonly Settings settings;

    internal MultiheadDilatedAttentionBuilder()
        : this(new Settings(null, null, null, PositionEncoding.None, Interop.DefaultRopeBase, Interop.DefaultXPosScaleBase, false, 0.0, true, 1e-5, null)) { }

    internal MultiheadDilatedAttentionBuilder(Settings settings) => this.settings = settings;

    /// <summary>The embedding width e of the input and output (a multiple of the head count).</summary>
    /// <param name="embeddingDim">The width, ≥ 1.</param>
    /// <returns>A builder with this width.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="embeddingDim"/> is &lt; 1.</exception>
    public MultiheadDilatedAttentionBuilder EmbeddingDim(int embeddingDim) =>
        new(settings with { EmbeddingDim = Checks.AtLeast(embeddingDim, 1, nameof(embeddingDim)) });

    /// <summary>The number of heads h (a divisor of the embedding width).</summary>
    /// <param name="heads">The head count, ≥ 1.</param>
    /// <returns>A builder with this head count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="heads"/> is &lt; 1.</exception>
    public MultiheadDilatedAttentionBuilder Heads(int heads) => new(settings with { Heads = Checks.AtLeast(heads, 1, nameof(heads)) });

    /// <summary>The dilated attention between the projections: groups, head offsets, causality and scale (its kernel choice is not used: the layer runs on the default kernel).</summary>
    /// <param name="attention">A built dilated attention.</param>
    /// <returns>A builder with this attention.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="attention"/> is null.</exception>
    public MultiheadDilatedAttentionBuilder Attention(DilatedAttention attention)
    {
        ArgumentNullException.ThrowIfNull(attention);
        return new(settings with { Attention = attention });
    }

    /// <summary>The relative positions applied to queries and keys (default: <see cref="PositionEncoding.None"/>); rotary ones need an even head width.</summary>
    /// <param name="position">None, Rope, XPos or DistanceBias (logarithmic, slopes 2 … 1/16 over the heads).</param>
    /// <returns>A builder with this setting.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="position"/> is not a defined value.</exception>
    public MultiheadDilatedAttentionBuilder Position(PositionEncoding position) =>
        new(settings with { Position = Checks.Defined(position, nameof(position)) });

    /// <summary>The base θ of the rotary frequencies (default 10000; RoPE and xPos).</summary>
    /// <param name="ropeBase">A finite number &gt; 1.</param>
    /// <returns>A builder with this base.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ropeBase"/> is not a finite number &gt; 1.</exception>
    public MultiheadDilatedAttentionBuilder RopeBase(double ropeBase) => new(settings with { RopeBase = Checks.Above(ropeBase, 1.0, nameof(ropeBase)) });

    /// <summary>xPos's scale base γ (default 512): larger values decay more slowly.</summary>
    /// <param name="xposScaleBase">A finite number &gt; 0.</param>
    /// <returns>A builder with this scale base.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="xposScaleBase"/> is not a finite number &gt; 0.</exception>
    public MultiheadDilatedAttentionBuilder XPosScaleBase(double xposScaleBase) =>
        new(settings with { XPosScaleBase = Checks.Above(xposScaleBase, 0.0, nameof(xposScaleBase)) });

    /// <summary>Whether a LayerNorm runs over the attention output before the output projection (Magneto's sub-LN; default off).</summary>
    /// <param name="subLayerNorm">True to add the LayerNorm.</param>
    /// <returns>A builder with this setting.</returns>
    public MultiheadDilatedAttentionBuilder SubLayerNorm(bool subLayerNorm = true) => new(settings with { SubLayerNorm = subLayerNorm });

    /// <summary>The dropout probability on the layer's output in training mode (default 0).</summary>
    /// <param name="dropout">A probability in [0, 1).</param>
    /// <returns>A builder with this probability.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dropout"/> is not in [0, 1).</exception>
    public MultiheadDilatedAttentionBuilder Dropout(double dropout) =>
        new(settings with { Dropout = Checks.InRange(dropout, 0.0, 1.0, nameof(dropout)) });

    /// <summary>Whether the four projections have biases (default: yes, like <c>torch.nn.MultiheadAttention</c>).</summary>
    /// <param name="bias">True for biases.</param>
    /// <returns>A builder with this setting.</returns>
    public MultiheadDilatedAttentionBuilder Bias(bool bias = true) => new(settings with { Bias = bias });

    /// <summary>
    /// Seeds libtorch's global generator with this value just before the weights are created, so that
    /// the same seed gives the same weights (default: the generator is left as it is).
    /// </summary>
    /// <param name="seed">Any seed.</param>
    /// <returns>A builder with this seed.</returns>
    public MultiheadDilatedAttentionBuilder Seed(long seed) => new(settings with { Seed = seed });

    /// <summary>Checks the whole configuration and creates the layer with freshly initialised weights.</summary>
    /// <returns>The layer; dispose it to free its weights.</returns>
    /// <exception cref="InvalidOperationException"><see cref="EmbeddingDim"/>, <see cref="Heads"/> or <see cref="Attention"/> was not called.</exception>
    /// <exception cref="ArgumentException">
    /// The embedding width is not a multiple of the head count (parameter <c>heads</c>), or a rotary
    /// position scheme meets an odd head width (parameter <c>position</c>).
    /// </exception>
    public MultiheadDilatedAttention Build()
    {
        var embeddingDim = settings.EmbeddingDim
            ?? throw new InvalidOperationException("Call EmbeddingDim(...) before Build().");
        var heads = settings.Heads ?? throw new InvalidOperationException("Call Heads(...) before Build().");
        var attention = settings.Attention
            ?? throw new InvalidOperationException("Call Attention(...) before Build(): the layer needs a dilated attention.");

        var fsSettings = new FsAttentionSettings(
            embeddingDim,
            heads,
            attention.Config,
            global::LongNet.Modules.AttentionKind.Dilated,
            Interop.ToFSharp(settings.Position, settings.RopeBase, settings.XPosScaleBase),
            settings.SubLayerNorm,
            settings.Dropout,
            settings.Bias,
            settings.LayerNormEpsilon,
            false,
            heads,
            Microsoft.FSharp.Core.FSharpOption<global::LongNet.Modules.LoraSettings>.None);

        var validated = FsAttentionSettingsModule.validate(fsSettings);
        if (validated.IsError)
        {
            throw Interop.ToException(validated.ErrorValue);
        }

        LongNetRuntime.EnsureLoaded();
        if (settings.Seed is { } seed)
        {
            torch.manual_seed(seed);
        }

        return new MultiheadDilatedAttention(new FsMultihead("multihead_dilated_attention", fsSettings), settings, attention);
    }

    internal sealed record Settings(
        int? EmbeddingDim,
        int? Heads,
        DilatedAttention? Attention,
        PositionEncoding Position,
        double RopeBase,
        double XPosScaleBase,
        bool SubLayerNorm,
        double Dropout,
        bool Bias,
        double LayerNormEpsilon,
        long? Seed);
}
