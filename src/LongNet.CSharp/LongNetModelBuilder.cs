using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Core;
using TorchSharp;
using FsArchitecture = global::LongNet.Modules.Architecture;
using FsAttentionKind = global::LongNet.Modules.AttentionKind;
using FsCrdSchedule = global::LongNet.Modules.CrdSchedule;
using FsFeedForwardKind = global::LongNet.Modules.FeedForwardKind;
using FsModel = global::LongNet.Modules.LongNetModel;
using FsModelConfig = global::LongNet.Modules.ModelConfig;
using FsRope = global::LongNet.Modules.Rope;
using FsModelConfigModule = global::LongNet.Modules.ModelConfigModule;
using FsScalingMethod = global::LongNet.Modules.ScalingMethod;
using FsSelectMergeConfigModule = global::LongNet.Casm.SelectMergeConfigModule;
using FsSelectMergeOptions = global::LongNet.Modules.SelectMergeOptions;
using FsYarnSettings = global::LongNet.Modules.YarnSettings;

namespace LongNet.CSharp;

/// <summary>
/// Builds a <see cref="LongNetModel"/>, a LongNet language model: start with <see cref="LongNetModel.Create"/>
/// (the core's defaults: a byte-level causal decoder, e = 256, 4 layers, 8 heads, SwiGLU 688, groups
/// (64,1) (128,2) (256,4), RoPE, dilated attention, unscaled positions), change what you need, end with
/// <see cref="Build"/>.
/// </summary>
/// <remarks>
/// Immutable: every method returns a new builder. Each method checks its own argument at once
/// (<see cref="ArgumentException"/> or <see cref="ArgumentOutOfRangeException"/> naming the parameter);
/// <see cref="Build"/> checks what spans several calls (heads divide the width, one rate per segment,
/// each rate at most its segment, even head width for rotary positions) and creates the weights. The
/// builder also describes the model a <see cref="Trainer"/> trains.
/// <code>
/// using var model = LongNetModel.Create()
///     .Vocabulary(256).Embedding(64).Layers(2).Heads(4).FeedForward(128)
///     .Segments(16, 32).Rates(1, 2).Causal()
///     .Seed(1)
///     .Build();
///
/// // CASM select-and-merge attention with YaRN positions, for four times the trained length:
/// using var casm = LongNetModel.Create()
///     .Vocabulary(256).Embedding(64).Layers(2).Heads(4).FeedForward(128)
///     .SelectMergeAttention(blockSize: 32, topK: 4)
///     .YarnScaling(scale: 4, trainedLength: 256)
///     .Build();
/// </code>
/// </remarks>
public sealed class LongNetModelBuilder
{
    private readonly Settings settings;

    internal LongNetModelBuilder()
        : this(FromFSharp(FsModelConfigModule.defaults, null)) { }

    internal LongNetModelBuilder(Settings settings) => this.settings = settings;

    internal static Settings FromFSharp(FsModelConfig c, Tokenizer? tokenizer)
    {
        var (position, ropeBase, scaleBase) = Interop.FromFSharp(c.Position);
        return new Settings(
            c.VocabSize,
            c.EmbedDim,
            c.Layers,
            c.Heads,
            c.FeedForwardDim,
            c.FeedForward.IsSwiGlu ? CSharp.FeedForwardKind.SwiGlu : CSharp.FeedForwardKind.Gelu,
            c.Groups.Select(g => g.SegmentLength).ToArray(),
            c.Groups.Select(g => g.DilationRate).ToArray(),
            Interop.FromFSharp(c.Offsets),
            c.Architecture.IsDecoder,
            position,
            ropeBase,
            scaleBase,
            c.SubLayerNorm,
            c.Dropout,
            c.Bias,
            c.TiedEmbeddings,
            c.LayerNormEpsilon,
            c.MaxPositions,
            c.Attention,
            c.PositionScaling,
            c.SmearedKeys,
            tokenizer,
            null)
        {
            DistanceBias = c.Position is global::LongNet.Modules.PositionEncoding.DistanceBiased biased ? biased.Item : FsRope.defaultDistanceBias,
            Norm = c.Norm,
            KvHeads = FSharpOption<int>.get_IsSome(c.KvHeads) ? c.KvHeads.Value : null,
            Lora = c.Lora,
        };
    }

    /// <summary>Starts from the model of a preset (see <see cref="Preset"/>), keeping this builder's tokenizer and seed.</summary>
    /// <param name="preset">Tiny, Demo or Small.</param>
    /// <returns>A builder with the preset's model settings.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="preset"/> is not a defined value.</exception>
    public LongNetModelBuilder Preset(Preset preset)
    {
        var model = Interop.PresetRun(Checks.Defined(preset, nameof(preset))).Model;
        var next = FromFSharp(model, settings.Tokenizer) with { Seed = settings.Seed };
        return new(settings.Tokenizer is { } t ? next with { VocabularySize = t.VocabularySize } : next);
    }

    /// <summary>The vocabulary size V: token ids are 0 … V−1 (default 259, the byte-level tokenizer's).</summary>
    /// <param name="vocabularySize">The size, ≥ 2.</param>
    /// <returns>A builder with this vocabulary size (and no tokenizer).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vocabularySize"/> is &lt; 2.</exception>
    public LongNetModelBuilder Vocabulary(int vocabularySize) =>
        new(settings with { VocabularySize = Checks.AtLeast(vocabularySize, 2, nameof(vocabularySize)), Tokenizer = null });

    /// <summary>The tokenizer the model reads (sets the vocabulary size to the tokenizer's); text generation needs one.</summary>
    /// <param name="tokenizer">A tokenizer.</param>
    /// <returns>A builder with this tokenizer and its vocabulary size.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tokenizer"/> is null.</exception>
    public LongNetModelBuilder Tokenizer(Tokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new(settings with { Tokenizer = tokenizer, VocabularySize = tokenizer.VocabularySize });
    }

    /// <summary>The embedding width e (a multiple of the head count).</summary>
    /// <param name="embeddingDim">The width, ≥ 1.</param>
    /// <returns>A builder with this width.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="embeddingDim"/> is &lt; 1.</exception>
    public LongNetModelBuilder Embedding(int embeddingDim) => new(settings with { EmbeddingDim = Checks.AtLeast(embeddingDim, 1, nameof(embeddingDim)) });

    /// <summary>The number of Transformer blocks.</summary>
    /// <param name="layers">The count, in [1, 1024].</param>
    /// <returns>A builder with this depth.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layers"/> is not in [1, 1024].</exception>
    public LongNetModelBuilder Layers(int layers)
    {
        if (layers is < 1 or > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(layers), layers, $"layers must be in [1, 1024], got {layers}.");
        }

        return new(settings with { Layers = layers });
    }

    /// <summary>Attention heads per block (a divisor of the embedding width).</summary>
    /// <param name="heads">The count, ≥ 1.</param>
    /// <returns>A builder with this head count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="heads"/> is &lt; 1.</exception>
    public LongNetModelBuilder Heads(int heads) => new(settings with { Heads = Checks.AtLeast(heads, 1, nameof(heads)) });

    /// <summary>The hidden width f of each block's feed-forward network, and optionally its kind.</summary>
    /// <param name="feedForwardDim">The width, ≥ 1.</param>
    /// <param name="kind">SwiGlu (default) or Gelu.</param>
    /// <returns>A builder with this feed-forward network.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="feedForwardDim"/> is &lt; 1, or <paramref name="kind"/> is not a defined value.</exception>
    public LongNetModelBuilder FeedForward(int feedForwardDim, FeedForwardKind kind = CSharp.FeedForwardKind.SwiGlu) =>
        new(settings with
        {
            FeedForwardDim = Checks.AtLeast(feedForwardDim, 1, nameof(feedForwardDim)),
            FeedForwardKind = Checks.Defined(kind, nameof(kind)),
        });

    /// <summary>The segment length w of each dilated-attention group, in the order of <see cref="Rates(int[])"/>.</summary>
    /// <param name="segmentLengths">One or more lengths, each ≥ 1.</param>
    /// <returns>A builder with these segment lengths.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="segmentLengths"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="segmentLengths"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A length is &lt; 1.</exception>
    public LongNetModelBuilder Segments(params int[] segmentLengths) =>
        new(settings with { SegmentLengths = Checks.NonEmpty(segmentLengths, nameof(segmentLengths), (v, p) => Checks.AtLeast(v, 1, p)), GroupsGiven = true });

    /// <summary>The dilation rate r of each group, one per segment length.</summary>
    /// <param name="rates">One or more rates, each ≥ 1 and (checked by <see cref="Build"/>) at most its segment length.</param>
    /// <returns>A builder with these rates.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="rates"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="rates"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A rate is &lt; 1.</exception>
    public LongNetModelBuilder Rates(params int[] rates) =>
        new(settings with { Rates = Checks.NonEmpty(rates, nameof(rates), (v, p) => Checks.AtLeast(v, 1, p)), GroupsGiven = true });

    /// <summary>Adds one dilated-attention group; the first call on a new builder (Create, Preset, ToBuilder) replaces its groups.</summary>
    /// <param name="segmentLength">The segment length w, ≥ 1.</param>
    /// <param name="dilationRate">The dilation rate r, in [1, <paramref name="segmentLength"/>].</param>
    /// <returns>A builder with this group after the ones given before.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of its range.</exception>
    /// <exception cref="InvalidOperationException">Segments and rates given before differ in count.</exception>
    public LongNetModelBuilder Group(int segmentLength, int dilationRate)
    {
        var (segments, rates) = Interop.AddGroup(
            settings.GroupsGiven ? settings.SegmentLengths : [], settings.GroupsGiven ? settings.Rates : [], segmentLength, dilationRate);
        return new(settings with { SegmentLengths = segments, Rates = rates, GroupsGiven = true });
    }

    /// <summary>Which offset each head uses inside a segment (default <see cref="CSharp.HeadOffsets.Paper"/>).</summary>
    /// <param name="offsets">Paper or Blocks.</param>
    /// <returns>A builder with this setting.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offsets"/> is not a defined value.</exception>
    public LongNetModelBuilder HeadOffsets(HeadOffsets offsets) => new(settings with { Offsets = Checks.Defined(offsets, nameof(offsets)) });

    /// <summary>A causal decoder, a language model that can generate (the default).</summary>
    /// <returns>A builder for a decoder.</returns>
    public LongNetModelBuilder Causal() => new(settings with { Causal = true });

    /// <summary>A non-causal encoder: every position sees its whole segment (cannot generate or be trained on next tokens).</summary>
    /// <returns>A builder for an encoder.</returns>
    public LongNetModelBuilder Encoder() => new(settings with { Causal = false });

    /// <summary>The relative positions of attention (default <see cref="PositionEncoding.Rope"/>).</summary>
    /// <param name="position">None, Rope, XPos or DistanceBias (default slopes; see <see cref="DistanceBias"/>).</param>
    /// <returns>A builder with this setting.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="position"/> is not a defined value.</exception>
    public LongNetModelBuilder Position(PositionEncoding position) => new(settings with { Position = Checks.Defined(position, nameof(position)) });

    /// <summary>Positions as an additive score bias −slopeₕ·f(distance) instead of rotations, with slopes spaced geometrically from <paramref name="maxSlope"/> (head 0) to <paramref name="minSlope"/> (the last head).</summary>
    /// <param name="form">Logarithmic (default) or Linear (ALiBi).</param>
    /// <param name="maxSlope">The most local head's slope: a finite number &gt; 0 (default 2).</param>
    /// <param name="minSlope">The most far-reaching head's slope, in (0, <paramref name="maxSlope"/>] (default 1/16).</param>
    /// <returns>A builder with <see cref="PositionEncoding.DistanceBias"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A slope is out of range, or <paramref name="form"/> is not a defined value.</exception>
    public LongNetModelBuilder DistanceBias(DistanceBiasForm form = DistanceBiasForm.Logarithmic, double maxSlope = 2.0, double minSlope = 0.0625)
    {
        Checks.Defined(form, nameof(form));
        Checks.Above(maxSlope, 0.0, nameof(maxSlope));
        Checks.InRange(minSlope, 0.0, maxSlope, nameof(minSlope), lowIncluded: false, highIncluded: true);
        return new(settings with { Position = PositionEncoding.DistanceBias, DistanceBias = Interop.ToFSharp(form, maxSlope, minSlope) });
    }

    /// <summary>RMSNorm (Llama, Mistral) instead of LayerNorm before attention, before the feed-forward network and at the end.</summary>
    /// <returns>A builder with RMSNorm.</returns>
    public LongNetModelBuilder RmsNorm() => new(settings with { Norm = global::LongNet.Modules.NormKind.RmsNormalization });

    /// <summary>Grouped-query attention: <paramref name="kvHeads"/> key/value heads, each shared by heads / kvHeads query heads (checked by <see cref="Build"/>).</summary>
    /// <param name="kvHeads">A divisor of the head count, ≥ 1.</param>
    /// <returns>A builder with this many key/value heads.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kvHeads"/> is below 1.</exception>
    public LongNetModelBuilder KeyValueHeads(int kvHeads) =>
        new(settings with { KvHeads = Checks.AtLeast(kvHeads, 1, nameof(kvHeads)) });

    /// <summary>Low-rank adapters (LoRA) on the attention projections: each adapted projection W is used as W + (α / r)·B·A; training then updates only the adapters and the norms (ranges checked by <see cref="Build"/>).</summary>
    /// <param name="rank">The rank r, in [1, embedding width].</param>
    /// <param name="alpha">α, a finite number &gt; 0 (the update is scaled by α / r).</param>
    /// <param name="targets">The adapted projections (default: query and value).</param>
    /// <returns>A builder with these adapters.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="rank"/> is below 1 or <paramref name="alpha"/> is not a finite positive number.</exception>
    public LongNetModelBuilder Lora(int rank, double alpha, params LoraProjection[] targets)
    {
        Checks.AtLeast(rank, 1, nameof(rank));
        if (!double.IsFinite(alpha) || alpha <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "alpha must be a finite number > 0.");
        }

        var chosen = targets is { Length: > 0 } ? targets : new[] { LoraProjection.Query, LoraProjection.Value };
        var fsTargets = Microsoft.FSharp.Collections.ListModule.OfSeq(chosen.Select(t => t switch
        {
            LoraProjection.Query => global::LongNet.Modules.LoraTarget.QueryProjection,
            LoraProjection.Key => global::LongNet.Modules.LoraTarget.KeyProjection,
            LoraProjection.Value => global::LongNet.Modules.LoraTarget.ValueProjection,
            LoraProjection.Output => global::LongNet.Modules.LoraTarget.OutputProjection,
            _ => throw new ArgumentOutOfRangeException(nameof(targets), t, "targets must be Query, Key, Value or Output."),
        }));
        var lora = new global::LongNet.Modules.LoraSettings(rank, alpha, fsTargets);
        return new(settings with { Lora = FSharpOption<global::LongNet.Modules.LoraSettings>.Some(lora) });
    }

    /// <summary>The base θ of the rotary frequencies (default 10000).</summary>
    /// <param name="ropeBase">A finite number &gt; 1.</param>
    /// <returns>A builder with this base.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ropeBase"/> is not a finite number &gt; 1.</exception>
    public LongNetModelBuilder RopeBase(double ropeBase) => new(settings with { RopeBase = Checks.Above(ropeBase, 1.0, nameof(ropeBase)) });

    /// <summary>xPos's scale base γ (default 512).</summary>
    /// <param name="xposScaleBase">A finite number &gt; 0.</param>
    /// <returns>A builder with this scale base.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="xposScaleBase"/> is not a finite number &gt; 0.</exception>
    public LongNetModelBuilder XPosScaleBase(double xposScaleBase) =>
        new(settings with { XPosScaleBase = Checks.Above(xposScaleBase, 0.0, nameof(xposScaleBase)) });

    /// <summary>LongNet dilated attention over the groups of <see cref="Segments"/> and <see cref="Rates"/> in every block (the default).</summary>
    /// <returns>A builder with dilated attention.</returns>
    public LongNetModelBuilder DilatedAttention() => new(settings with { Attention = FsAttentionKind.Dilated });

    /// <summary>Full softmax attention over the whole sequence in every block (the segments and rates are kept but unused; groups that are not valid are replaced by the defaults).</summary>
    /// <returns>A builder with dense attention.</returns>
    public LongNetModelBuilder DenseAttention() => new(settings with { Attention = FsAttentionKind.Dense });

    /// <summary>
    /// CASM select-and-merge attention in every block: the sequence is cut into blocks, each group of
    /// <paramref name="mergeFactor"/> query blocks keeps its own blocks, the <paramref name="topK"/> most relevant
    /// earlier key blocks and optionally block 0, and attends to them merged (no KV cache: generation recomputes).
    /// </summary>
    /// <param name="blockSize">Positions per block, ≥ 1.</param>
    /// <param name="topK">Key blocks each query group selects besides its own (and the sink), ≥ 0.</param>
    /// <param name="mergeFactor">Adjacent query blocks sharing one selection, ≥ 1.</param>
    /// <param name="sink">Whether key block 0 is always kept (an attention sink).</param>
    /// <param name="renumberPositions">
    /// Whether RoPE rotates queries and keys at positions renumbered 0 … len−1 over the merged sequence
    /// (true) or at their original positions; renumbering needs <see cref="PositionEncoding.Rope"/> or <see cref="PositionEncoding.None"/> (checked by <see cref="Build"/>).
    /// </param>
    /// <param name="localBlocks">Blocks right before each query group that it always keeps (a local window), ≥ 0.</param>
    /// <param name="selection">How candidate blocks are ranked and weighted: the paper's correlation, or trainable.</param>
    /// <returns>A builder with select-and-merge attention.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockSize"/> is &lt; 1, <paramref name="topK"/> is &lt; 0, <paramref name="mergeFactor"/> is &lt; 1, or <paramref name="localBlocks"/> is &lt; 0.</exception>
    public LongNetModelBuilder SelectMergeAttention(int blockSize = 64, int topK = 4, int mergeFactor = 1, bool sink = true, bool renumberPositions = true, int localBlocks = 0, BlockSelectionRule selection = BlockSelectionRule.Correlation)
    {
        // The core's own check (SelectMergeConfig.validate) throws naming these parameters.
        var rule = selection switch
        {
            BlockSelectionRule.Correlation => global::LongNet.Casm.BlockSelection.Correlation,
            BlockSelectionRule.Trainable => global::LongNet.Casm.BlockSelection.Trainable,
            _ => throw new ArgumentOutOfRangeException(nameof(selection), selection, "selection must be Correlation or Trainable."),
        };
        var c = FsSelectMergeConfigModule.validate(new global::LongNet.Casm.SelectMergeConfig(blockSize, topK, mergeFactor, sink, true, renumberPositions, localBlocks, rule));
        var options = new FsSelectMergeOptions(c.BlockSize, c.TopK, c.MergeFactor, c.Sink, c.RenumberPositions, c.LocalBlocks, c.Selection);
        return new(settings with { Attention = FsAttentionKind.NewSelectMerge(options) });
    }

    /// <summary>Plain RoPE frequencies, no rescaling for longer contexts (the default).</summary>
    /// <returns>A builder without position scaling.</returns>
    public LongNetModelBuilder NoPositionScaling() => new(settings with { Scaling = FsScalingMethod.PlainRope });

    /// <summary>Linear position interpolation (PI): RoPE positions p become p / <paramref name="scale"/>. RoPE only (checked by <see cref="Build"/>).</summary>
    /// <param name="scale">The context extension factor, finite and ≥ 1.</param>
    /// <returns>A builder with this scaling.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="scale"/> is not a finite number ≥ 1.</exception>
    public LongNetModelBuilder InterpolationScaling(double scale) =>
        WithScaling(FsScalingMethod.NewInterpolation(scale), ("positionScaling.scale", nameof(scale), scale));

    /// <summary>NTK-aware scaling: the RoPE base θ becomes θ·s^(d/(d−2)), keeping the highest frequency. RoPE only (checked by <see cref="Build"/>).</summary>
    /// <param name="scale">The context extension factor s, finite and ≥ 1.</param>
    /// <returns>A builder with this scaling.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="scale"/> is not a finite number ≥ 1.</exception>
    public LongNetModelBuilder NtkAwareScaling(double scale) =>
        WithScaling(FsScalingMethod.NewNtkAware(scale), ("positionScaling.scale", nameof(scale), scale));

    /// <summary>Dynamic NTK: NTK-aware scaling with s = max(1, L / <paramref name="trainedLength"/>) for the current length L. RoPE only (checked by <see cref="Build"/>).</summary>
    /// <param name="trainedLength">The context length the model was trained on, ≥ 1.</param>
    /// <returns>A builder with this scaling.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="trainedLength"/> is &lt; 1.</exception>
    public LongNetModelBuilder DynamicNtkScaling(int trainedLength) =>
        WithScaling(FsScalingMethod.NewDynamicNtk(trainedLength), ("positionScaling.trainedLength", nameof(trainedLength), trainedLength));

    /// <summary>YaRN: per frequency a ramp between interpolation and keeping it, plus an attention temperature. RoPE only (checked by <see cref="Build"/>).</summary>
    /// <param name="scale">The context extension factor s, finite and ≥ 1.</param>
    /// <param name="trainedLength">The trained context length T, ≥ 1.</param>
    /// <param name="alpha">Below α rotations over T a frequency is fully interpolated (paper: 1), finite and ≥ 0.</param>
    /// <param name="beta">Above β rotations over T a frequency is kept as it is (paper: 32), finite and &gt; α.</param>
    /// <returns>A builder with this scaling.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A parameter is outside its range, or <paramref name="beta"/> ≤ <paramref name="alpha"/>.</exception>
    public LongNetModelBuilder YarnScaling(double scale, int trainedLength, double alpha = 1.0, double beta = 32.0)
    {
        var alphaFits = alpha >= 0.0 && double.IsFinite(alpha);
        return WithScaling(
            FsScalingMethod.NewYarn(new FsYarnSettings(scale, trainedLength, alpha, beta)),
            ("positionScaling.scale", nameof(scale), scale),
            ("positionScaling.trainedLength", nameof(trainedLength), trainedLength),
            ("positionScaling.yarnBeta", alphaFits ? nameof(beta) : nameof(alpha), alphaFits ? beta : alpha));
    }

    /// <summary>
    /// CRD NTK: in training, NTK-aware scaling with a scale, window length and position gap drawn per
    /// micro-batch from a schedule whose scale ceiling grows over each cycle; at inference, dynamic NTK over
    /// <paramref name="trainedLength"/>. RoPE only (checked by <see cref="Build"/>).
    /// </summary>
    /// <param name="minScale">The smallest scale drawn, finite and ≥ 1.</param>
    /// <param name="maxScale">The scale ceiling at the end of a cycle, finite and ≥ <paramref name="minScale"/>.</param>
    /// <param name="cycleSteps">Training steps per cycle, ≥ 1.</param>
    /// <param name="trainedLength">The longest training window T, ≥ 1 (at most the trainer's sequence length).</param>
    /// <param name="minLength">The shortest training window, in [1, <paramref name="trainedLength"/>].</param>
    /// <returns>A builder with this scaling.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A parameter is outside its range.</exception>
    public LongNetModelBuilder CrdNtkScaling(double minScale, double maxScale, int cycleSteps, int trainedLength, int minLength) =>
        WithScaling(
            FsScalingMethod.NewCrdNtk(new FsCrdSchedule(minScale, maxScale, cycleSteps, trainedLength, minLength)),
            ("positionScaling.crdMinScale", nameof(minScale), minScale),
            ("positionScaling.crdMaxScale", nameof(maxScale), maxScale),
            ("positionScaling.crdCycleSteps", nameof(cycleSteps), cycleSteps),
            ("positionScaling.trainedLength", nameof(trainedLength), trainedLength),
            ("positionScaling.crdMinLength", nameof(minLength), minLength));

    /// <summary>A builder with this position scaling, checked by the core's own rule (ModelConfig.validateScaling), so the messages are the core's.</summary>
    /// <param name="method">The scaling.</param>
    /// <param name="fields">For each field of the core's error, the C# parameter it names and that parameter's value.</param>
    private LongNetModelBuilder WithScaling(FsScalingMethod method, params (string Field, string Parameter, object Value)[] fields)
    {
        var d = FsModelConfigModule.defaults;
        var probe = new FsModelConfig(
            d.VocabSize, d.EmbedDim, d.Layers, d.Heads, d.FeedForwardDim, d.FeedForward, d.Groups, d.Offsets,
            d.Architecture, d.Position, d.Attention, method, d.SubLayerNorm, d.Dropout, d.Bias, d.TiedEmbeddings, d.LayerNormEpsilon,
            d.MaxPositions, d.SmearedKeys, d.Norm, d.KvHeads, d.Lora);
        var result = FsModelConfigModule.validateScaling(probe);
        if (result.IsError)
        {
            var error = result.ErrorValue;
            foreach (var (field, parameter, value) in fields)
            {
                if (field == error.Parameter)
                {
                    throw new ArgumentOutOfRangeException(parameter, value, error.Message);
                }
            }

            throw Interop.ToException(error);
        }

        return new(settings with { Scaling = method });
    }

    /// <summary>Magneto's sub-LN in attention and feed-forward, with its initialisation gain (default off).</summary>
    /// <param name="subLayerNorm">True to use sub-LN.</param>
    /// <returns>A builder with this setting.</returns>
    public LongNetModelBuilder SubLayerNorm(bool subLayerNorm = true) => new(settings with { SubLayerNorm = subLayerNorm });

    /// <summary>The dropout probability on embeddings, attention and feed-forward outputs in training mode (default 0).</summary>
    /// <param name="dropout">A probability in [0, 1).</param>
    /// <returns>A builder with this probability.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dropout"/> is not in [0, 1).</exception>
    public LongNetModelBuilder Dropout(double dropout) => new(settings with { Dropout = Checks.InRange(dropout, 0.0, 1.0, nameof(dropout)) });

    /// <summary>Whether linear layers have biases (default: no).</summary>
    /// <param name="bias">True for biases.</param>
    /// <returns>A builder with this setting.</returns>
    public LongNetModelBuilder Bias(bool bias = true) => new(settings with { Bias = bias });

    /// <summary>Whether the output head shares the token embedding's weights (default: yes).</summary>
    /// <param name="tied">True to tie them.</param>
    /// <returns>A builder with this setting.</returns>
    public LongNetModelBuilder TiedEmbeddings(bool tied = true) => new(settings with { TiedEmbeddings = tied });

    /// <summary>ε of every LayerNorm (default 1e-5).</summary>
    /// <param name="epsilon">A number in (0, 1).</param>
    /// <returns>A builder with this ε.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="epsilon"/> is not in (0, 1).</exception>
    public LongNetModelBuilder LayerNormEpsilon(double epsilon) =>
        new(settings with { LayerNormEpsilon = Checks.InRange(epsilon, 0.0, 1.0, nameof(epsilon), lowIncluded: false) });

    /// <summary>The longest sequence the model accepts (default 2²⁰).</summary>
    /// <param name="maxPositions">The length, ≥ 1.</param>
    /// <returns>A builder with this limit.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxPositions"/> is &lt; 1.</exception>
    public LongNetModelBuilder MaxPositions(int maxPositions) => new(settings with { MaxPositions = Checks.AtLeast(maxPositions, 1, nameof(maxPositions)) });

    /// <summary>
    /// Smeared keys (default off): every key is mixed with the previous position's by a learnt gate per head,
    /// so one attention layer can copy what followed an earlier occurrence of the current token (an induction head).
    /// </summary>
    /// <param name="enabled">True to smear the keys.</param>
    /// <returns>A builder with this setting.</returns>
    public LongNetModelBuilder SmearedKeys(bool enabled = true) => new(settings with { SmearedKeys = enabled });

    /// <summary>
    /// Seeds libtorch's global generator with this value just before the weights are created, so the same
    /// seed gives the same model (default: the generator is left as it is). A <see cref="Trainer"/> uses its own seed instead.
    /// </summary>
    /// <param name="seed">Any seed.</param>
    /// <returns>A builder with this seed.</returns>
    public LongNetModelBuilder Seed(long seed) => new(settings with { Seed = seed });

    /// <summary>Checks the whole configuration and creates the model with freshly initialised weights.</summary>
    /// <returns>The model; dispose it to free its weights.</returns>
    /// <exception cref="ArgumentException">
    /// A setting conflicts with another: rates and segments differ in count (parameter <c>rates</c>), the head count does not
    /// divide the embedding width (<c>heads</c>), a rotary scheme meets an odd head width (<c>position</c>),
    /// xPos overflows at <c>maxPositions</c>, a position scaling meets a scheme other than RoPE (<c>position</c>),
    /// select-and-merge renumbers xPos positions (<c>renumberPositions</c>).
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException">A rate exceeds its segment length (parameter <c>rates</c>).</exception>
    public LongNetModel Build()
    {
        var config = ToFSharp();
        LongNetRuntime.EnsureLoaded();
        if (settings.Seed is { } seed)
        {
            torch.manual_seed(seed);
        }

        return new LongNetModel(new FsModel(config), settings.Tokenizer);
    }

    /// <summary>The checked core configuration this builder describes.</summary>
    internal FsModelConfig ToFSharp()
    {
        // The groups first, through the attention builder, so they fail exactly as DilatedAttention's do
        // (dense attention does not use them, and the core does not check them then).
        if (!settings.Attention.IsDense)
        {
            _ = CSharp.DilatedAttention.Create().Segments(settings.SegmentLengths).Rates(settings.Rates).Causal(settings.Causal).HeadOffsets(settings.Offsets).Build();
        }

        var config = new FsModelConfig(
            settings.VocabularySize,
            settings.EmbeddingDim,
            settings.Layers,
            settings.Heads,
            settings.FeedForwardDim,
            settings.FeedForwardKind == CSharp.FeedForwardKind.SwiGlu ? FsFeedForwardKind.SwiGlu : FsFeedForwardKind.Gelu,
            Interop.ToFSharpGroups(settings.SegmentLengths, settings.Rates, settings.Attention.IsDense),
            Interop.ToFSharp(settings.Offsets),
            settings.Causal ? FsArchitecture.Decoder : FsArchitecture.Encoder,
            Interop.ToFSharp(settings.Position, settings.RopeBase, settings.XPosScaleBase, settings.DistanceBias),
            settings.Attention,
            settings.Scaling,
            settings.SubLayerNorm,
            settings.Dropout,
            settings.Bias,
            settings.TiedEmbeddings,
            settings.LayerNormEpsilon,
            settings.MaxPositions,
            settings.SmearedKeys,
            settings.Norm,
            settings.KvHeads is { } kv ? FSharpOption<int>.Some(kv) : FSharpOption<int>.None,
            settings.Lora);

        var validated = FsModelConfigModule.validate(config);
        if (validated.IsError)
        {
            throw Interop.ToException(validated.ErrorValue);
        }

        return config;
    }

    internal Tokenizer? TokenizerOrNull => settings.Tokenizer;

    internal sealed record Settings(
        int VocabularySize,
        int EmbeddingDim,
        int Layers,
        int Heads,
        int FeedForwardDim,
        FeedForwardKind FeedForwardKind,
        int[] SegmentLengths,
        int[] Rates,
        HeadOffsets Offsets,
        bool Causal,
        PositionEncoding Position,
        double RopeBase,
        double XPosScaleBase,
        bool SubLayerNorm,
        double Dropout,
        bool Bias,
        bool TiedEmbeddings,
        double LayerNormEpsilon,
        int MaxPositions,
        FsAttentionKind Attention,
        FsScalingMethod Scaling,
        bool SmearedKeys,
        Tokenizer? Tokenizer,
        long? Seed,
        bool GroupsGiven = false)
    {
        /// <summary>The distance bias used when <see cref="Position"/> is <see cref="PositionEncoding.DistanceBias"/>.</summary>
        internal global::LongNet.Modules.DistanceBiasSettings DistanceBias { get; init; } = FsRope.defaultDistanceBias;

        /// <summary>LayerNorm (default) or RMSNorm in the blocks and at the end.</summary>
        internal global::LongNet.Modules.NormKind Norm { get; init; } = global::LongNet.Modules.NormKind.LayerNormalization;

        /// <summary>Key/value heads (grouped-query attention); null: one per query head.</summary>
        internal int? KvHeads { get; init; }

        /// <summary>Low-rank adapters on the attention projections; none by default.</summary>
        internal FSharpOption<global::LongNet.Modules.LoraSettings> Lora { get; init; } = FSharpOption<global::LongNet.Modules.LoraSettings>.None;
    }
}
