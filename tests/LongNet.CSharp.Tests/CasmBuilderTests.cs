using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using FsAttentionKind = global::LongNet.Modules.AttentionKind;
using FsCheckpoint = global::LongNet.Training.Checkpoint;
using FsCrdSchedule = global::LongNet.Modules.CrdSchedule;
using FsModel = global::LongNet.Modules.LongNetModel;
using FsModelConfig = global::LongNet.Modules.ModelConfig;
using FsModelConfigModule = global::LongNet.Modules.ModelConfigModule;
using FsPasskey = global::LongNet.Text.Passkey;
using FsRunConfig = global::LongNet.Training.RunConfig;
using FsScalingMethod = global::LongNet.Modules.ScalingMethod;
using FsSelectMergeOptions = global::LongNet.Modules.SelectMergeOptions;
using FsTokenizer = global::LongNet.Text.Tokenizer;
using FsTrainSession = global::LongNet.Training.TrainSession;
using FsYarnSettings = global::LongNet.Modules.YarnSettings;

namespace LongNet.CSharp.Tests;

/// <summary>
/// The seed-001 (CASM) options through the builders: dense and select-and-merge attention, the RoPE
/// position scalings and the passkey training task reach the F# core exactly, compute what it computes
/// for the same seed, and bad values are refused naming the C# parameter.
/// </summary>
public sealed class CasmBuilderTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("longnet-csharp-casm-").FullName;

    public CasmBuilderTests() => LongNetRuntime.EnsureLoaded();

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static LongNetModelBuilder TinyModel() =>
        LongNetModel.Create().Vocabulary(40).Embedding(16).Layers(2).Heads(2).FeedForward(24, FeedForwardKind.Gelu)
            .Segments(8, 16).Rates(1, 2).Causal().MaxPositions(256);

    /// <summary>TinyModel's configuration written as an F# record, with this attention and scaling.</summary>
    private static FsModelConfig FSharpTiny(FsAttentionKind attention, FsScalingMethod scaling)
    {
        var d = FsModelConfigModule.defaults;
        return new FsModelConfig(
            40, 16, 2, 2, 24, global::LongNet.Modules.FeedForwardKind.Gelu, global::LongNet.Groups.ofPairsOrRaise(Interop.ToFSharpList(new[] { Tuple.Create(8, 1), Tuple.Create(16, 2) })),
            global::LongNet.HeadOffsets.Paper, global::LongNet.Modules.Architecture.Decoder, d.Position, attention, scaling, false, 0.0, false,
            true, 1e-5, 256, false, d.Norm, d.KvHeads, d.Lora);
    }

    private static void Throws<TException>(string parameter, Action action)
        where TException : ArgumentException
    {
        var e = Assert.Throws<TException>(action);
        Assert.Equal(parameter, e.ParamName);
        Assert.Contains(parameter, e.Message, StringComparison.Ordinal);
    }

    /// <summary>The builder's model and the F# model with the same configuration and seed give identical logits.</summary>
    private static void AssertSameLogits(LongNetModelBuilder builder, FsModelConfig config, int length = 45)
    {
        using var scope = NewDisposeScope();
        using var model = builder.Seed(3).Build();
        torch.manual_seed(3);
        using var core = new FsModel(config);
        using var generator = new Generator(8, CPU);
        var tokens = randint(0, 40, [2, length], dtype: ScalarType.Int64, generator: generator);
        Assert.True(Fixtures.Identical(core.forward(tokens), model.Forward(tokens)));
        Assert.Equal(core.ParameterCount, model.ParameterCount);
    }

    [Theory]
    [InlineData(8, 2, 1, true, true)]
    [InlineData(8, 1, 2, false, true)]
    [InlineData(5, 0, 1, true, false)]
    [InlineData(16, 3, 1, false, false)]
    public void Select_merge_attention_through_the_builder_equals_the_FSharp_model(int blockSize, int topK, int mergeFactor, bool sink, bool renumber)
    {
        var builder = TinyModel().SelectMergeAttention(blockSize, topK, mergeFactor, sink, renumber);
        var expected = FSharpTiny(
            FsAttentionKind.NewSelectMerge(new FsSelectMergeOptions(blockSize, topK, mergeFactor, sink, renumber, 0, global::LongNet.Casm.BlockSelection.Correlation)), FsScalingMethod.PlainRope);

        Assert.Equal(expected, builder.ToFSharp());
        AssertSameLogits(builder, expected);

        // The default options are the core's defaults; DilatedAttention() switches back.
        Assert.Equal(FsAttentionKind.NewSelectMerge(FsModelConfigModule.defaultSelectMerge), TinyModel().SelectMergeAttention().ToFSharp().Attention);
        Assert.Equal(FsAttentionKind.Dilated, builder.DilatedAttention().ToFSharp().Attention);
    }

    [Fact]
    public void Trainable_selection_with_local_blocks_through_the_builder_equals_the_FSharp_model()
    {
        var builder = TinyModel().SelectMergeAttention(blockSize: 4, topK: 3, localBlocks: 1, selection: BlockSelectionRule.Trainable);
        var expected = FSharpTiny(
            FsAttentionKind.NewSelectMerge(new FsSelectMergeOptions(4, 3, 1, true, true, 1, global::LongNet.Casm.BlockSelection.Trainable)), FsScalingMethod.PlainRope);

        Assert.Equal(expected, builder.ToFSharp());
        AssertSameLogits(builder, expected);

        // the bias changes the logits: the same model with the paper's selection computes something else
        using var scope = NewDisposeScope();
        using var trainable = builder.Seed(3).Build();
        using var correlation = TinyModel().SelectMergeAttention(blockSize: 4, topK: 3, localBlocks: 1).Seed(3).Build();
        var tokens = arange(45, dtype: ScalarType.Int64).remainder(40).unsqueeze(0);
        Assert.False(Fixtures.Identical(trainable.Forward(tokens), correlation.Forward(tokens)));
    }

    [Fact]
    public void Dense_attention_through_the_builder_equals_the_FSharp_model()
    {
        var builder = TinyModel().DenseAttention();
        var expected = FSharpTiny(FsAttentionKind.Dense, FsScalingMethod.PlainRope);
        Assert.Equal(expected, builder.ToFSharp());
        AssertSameLogits(builder, expected);

        // Dense attention is not dilated: the same weights give other logits than the default model.
        using var scope = NewDisposeScope();
        using var dense = builder.Seed(3).Build();
        using var dilated = TinyModel().Seed(3).Build();
        var tokens = arange(45, dtype: ScalarType.Int64).remainder(40).unsqueeze(0);
        Assert.False(Fixtures.Identical(dense.Forward(tokens), dilated.Forward(tokens)));
    }

    public static IEnumerable<object[]> Scalings() =>
    [
        ["none"],
        ["pi"],
        ["ntk"],
        ["dynamic-ntk"],
        ["yarn"],
        ["yarn-default-ramp"],
        ["crd-ntk"],
    ];

    private static (LongNetModelBuilder Builder, FsScalingMethod Expected) Scaled(string name, LongNetModelBuilder b) =>
        name switch
        {
            "none" => (b.YarnScaling(2, 32).NoPositionScaling(), FsScalingMethod.PlainRope),
            "pi" => (b.InterpolationScaling(4), FsScalingMethod.NewInterpolation(4)),
            "ntk" => (b.NtkAwareScaling(2.5), FsScalingMethod.NewNtkAware(2.5)),
            "dynamic-ntk" => (b.DynamicNtkScaling(16), FsScalingMethod.NewDynamicNtk(16)),
            "yarn" => (b.YarnScaling(3, 20, alpha: 0.5, beta: 8), FsScalingMethod.NewYarn(new FsYarnSettings(3, 20, 0.5, 8))),
            "yarn-default-ramp" => (b.YarnScaling(4, 32), FsScalingMethod.NewYarn(new FsYarnSettings(4, 32, 1, 32))),
            "crd-ntk" => (b.CrdNtkScaling(1, 8, 50, 24, 12), FsScalingMethod.NewCrdNtk(new FsCrdSchedule(1, 8, 50, 24, 12))),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };

    [Theory]
    [MemberData(nameof(Scalings))]
    public void Each_position_scaling_is_carried_into_the_model_configuration(string name)
    {
        var (builder, expected) = Scaled(name, TinyModel());
        Assert.Equal(FSharpTiny(FsAttentionKind.Dilated, expected), builder.ToFSharp());
        AssertSameLogits(builder, FSharpTiny(FsAttentionKind.Dilated, expected));

        // With select-and-merge too, and kept by ToBuilder.
        var (casm, _) = Scaled(name, TinyModel().SelectMergeAttention(blockSize: 8, topK: 2));
        var config = casm.ToFSharp();
        Assert.Equal(expected, config.PositionScaling);
        using var model = casm.Seed(1).Build();
        Assert.Equal(config, model.ToBuilder().ToFSharp());
        Assert.Equal(config, model.Inner.Config);
    }

    [Fact]
    public void Select_merge_and_scaling_survive_a_checkpoint_and_ToBuilder()
    {
        var path = Path.Combine(folder, "casm");
        var model = LongNetModel.Create().Preset(Preset.Tiny).Embedding(16).Heads(2).FeedForward(24)
            .SelectMergeAttention(blockSize: 8, topK: 1, sink: false).NtkAwareScaling(2);
        using var trained = Trainer.Create().Model(model).CorpusText(string.Concat(Enumerable.Repeat("The mill by the river. ", 40)))
            .Steps(1).SequenceLength(24).BatchSize(1).EvaluationTokens(32).CheckpointDirectory(path).Build().Train();
        using var loaded = LongNetModel.Load(Path.Combine(path, Trainer.CheckpointFileName));
        Assert.Equal(trained.Model.Inner.Config, loaded.Inner.Config);
        Assert.Equal(FsScalingMethod.NewNtkAware(2), loaded.ToBuilder().ToFSharp().PositionScaling);
        Assert.True(loaded.ToBuilder().ToFSharp().Attention.IsSelectMerge);
    }

    [Fact]
    public void Invalid_select_merge_options_are_refused_naming_the_parameter()
    {
        var b = TinyModel();
        Throws<ArgumentOutOfRangeException>("blockSize", () => b.SelectMergeAttention(blockSize: 0));
        Throws<ArgumentOutOfRangeException>("blockSize", () => b.SelectMergeAttention(blockSize: -3));
        Throws<ArgumentOutOfRangeException>("topK", () => b.SelectMergeAttention(topK: -1));
        Throws<ArgumentOutOfRangeException>("localBlocks", () => b.SelectMergeAttention(localBlocks: -1));
        Throws<ArgumentOutOfRangeException>("selection", () => b.SelectMergeAttention(selection: (BlockSelectionRule)7));
        Throws<ArgumentOutOfRangeException>("mergeFactor", () => b.SelectMergeAttention(mergeFactor: 0));

        // What spans several calls is checked by Build: renumbered positions cannot carry xPos's decay.
        Throws<ArgumentException>("renumberPositions", () => b.Position(PositionEncoding.XPos).SelectMergeAttention().Build());
        Assert.NotNull(b.Position(PositionEncoding.XPos).SelectMergeAttention(renumberPositions: false).ToFSharp());
    }

    [Fact]
    public void Invalid_scalings_are_refused_naming_the_parameter_with_the_core_message()
    {
        var b = TinyModel();
        Throws<ArgumentOutOfRangeException>("scale", () => b.InterpolationScaling(0.5));
        Throws<ArgumentOutOfRangeException>("scale", () => b.InterpolationScaling(double.PositiveInfinity));
        Throws<ArgumentOutOfRangeException>("scale", () => b.NtkAwareScaling(double.NaN));
        Throws<ArgumentOutOfRangeException>("trainedLength", () => b.DynamicNtkScaling(0));
        Throws<ArgumentOutOfRangeException>("scale", () => b.YarnScaling(0.9, 32));
        Throws<ArgumentOutOfRangeException>("trainedLength", () => b.YarnScaling(2, 0));
        Throws<ArgumentOutOfRangeException>("alpha", () => b.YarnScaling(2, 32, alpha: -1));
        Throws<ArgumentOutOfRangeException>("beta", () => b.YarnScaling(2, 32, alpha: 4, beta: 4));
        Throws<ArgumentOutOfRangeException>("beta", () => b.YarnScaling(2, 32, beta: double.PositiveInfinity));
        Throws<ArgumentOutOfRangeException>("minScale", () => b.CrdNtkScaling(0.5, 8, 50, 64, 16));
        Throws<ArgumentOutOfRangeException>("maxScale", () => b.CrdNtkScaling(2, 1.5, 50, 64, 16));
        Throws<ArgumentOutOfRangeException>("cycleSteps", () => b.CrdNtkScaling(1, 8, 0, 64, 16));
        Throws<ArgumentOutOfRangeException>("trainedLength", () => b.CrdNtkScaling(1, 8, 50, 0, 16));
        Throws<ArgumentOutOfRangeException>("minLength", () => b.CrdNtkScaling(1, 8, 50, 64, 65));
        Throws<ArgumentOutOfRangeException>("minLength", () => b.CrdNtkScaling(1, 8, 50, 64, 0));

        // The message is the core's (the same words as the CLI and the JSON configuration).
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => b.NtkAwareScaling(0.5));
        var core = FsModelConfigModule.validateScaling(FSharpTiny(FsAttentionKind.Dilated, FsScalingMethod.NewNtkAware(0.5)));
        Assert.StartsWith(core.ErrorValue.Message, e.Message, StringComparison.Ordinal);
        Assert.Equal(0.5, e.ActualValue);

        // A scaling rescales RoPE: with xPos or no positions Build refuses it, naming position.
        Throws<ArgumentException>("position", () => b.NtkAwareScaling(2).Position(PositionEncoding.XPos).Build());
        Throws<ArgumentException>("position", () => b.Position(PositionEncoding.None).DynamicNtkScaling(64).Build());
    }

    private static TrainerBuilder PasskeyRun(int sequenceLength) =>
        Trainer.Create()
            .Model(LongNetModel.Create().Preset(Preset.Tiny).Embedding(16).Heads(2).FeedForward(24).Segments(16, 32).Rates(1, 2))
            .PasskeySamples()
            .Steps(3).SequenceLength(sequenceLength).BatchSize(2).WarmupSteps(1).LearningRate(3e-3).EvaluationTokens(2 * sequenceLength).Seed(6);

    private static int ShortestPasskeySample => FsPasskey.minimumSampleLength(FsTokenizer.byteLevel());

    [Fact]
    public void A_passkey_run_through_the_TrainerBuilder_trains_with_finite_losses_like_the_FSharp_session()
    {
        var length = ShortestPasskeySample + 4;
        var builder = PasskeyRun(length);
        var trainer = builder.Build();
        Assert.Equal(TrainingTask.PasskeySamples, trainer.Task);
        using var result = trainer.Train();

        Assert.Equal(3, result.Losses.Count);
        Assert.All(result.Losses, l => Assert.True(double.IsFinite(l), $"loss {l}"));
        Assert.True(result.ValidationLoss is { } v && double.IsFinite(v));

        var run = new FsRunConfig(builder.Current.Model.ToFSharp(), builder.Current.Train, global::LongNet.Training.TokenizerChoice.ByteTokens);
        Assert.True(run.Train.Task.IsPasskeySamples);
        using var session = FsTrainSession.Create(run, FsTokenizer.byteLevel()).ResultValue;
        var expected = Enumerable.Range(0, 3).Select(_ => session.TrainStep([]).ResultValue.Loss).ToArray();
        Assert.Equal(expected, result.Losses);
        Assert.Equal(session.ValidationLoss(FsPasskey.corpus(session.Tokenizer, length).Validation).ResultValue, result.ValidationLoss);
    }

    [Fact]
    public void A_passkey_run_with_select_merge_attention_and_CRD_NTK_trains()
    {
        var length = ShortestPasskeySample + 8;
        var model = LongNetModel.Create().Preset(Preset.Tiny).Embedding(16).Heads(2).FeedForward(24)
            .SelectMergeAttention(blockSize: 16, topK: 2).CrdNtkScaling(1, 4, 10, length, ShortestPasskeySample);
        using var result = PasskeyRun(length).Model(model).Steps(2).Build().Train();
        Assert.Equal(2, result.Losses.Count);
        Assert.All(result.Losses, l => Assert.True(double.IsFinite(l), $"loss {l}"));
        Assert.True(result.Model.Inner.Config.Attention.IsSelectMerge);
    }

    [Fact]
    public void The_task_follows_the_last_choice_and_is_checked_before_training()
    {
        var passkey = PasskeyRun(ShortestPasskeySample);
        Assert.Equal(TrainingTask.TextWindows, passkey.CorpusText("The mill.").Build().Task);
        Assert.Equal(TrainingTask.PasskeySamples, passkey.CorpusText("The mill.").PasskeySamples().Build().Task);
        Assert.Equal(TrainingTask.PasskeySamples, passkey.Preset(Preset.Tiny).SequenceLength(ShortestPasskeySample).Build().Task);
        Assert.Throws<InvalidOperationException>(() => Trainer.Create().Build());

        // Too short for one passkey sample: refused by Build, naming the C# parameter.
        Throws<ArgumentException>("sequenceLength", () => passkey.SequenceLength(ShortestPasskeySample - 1).Build());
        Assert.Contains(ShortestPasskeySample.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Assert.Throws<ArgumentException>(() => passkey.SequenceLength(ShortestPasskeySample - 1).Build()).Message, StringComparison.Ordinal);

        // A CRD window longer than the sequences is the core's refusal when training starts.
        var crd = passkey.Model(LongNetModel.Create().Preset(Preset.Tiny).CrdNtkScaling(1, 4, 10, ShortestPasskeySample + 1, ShortestPasskeySample));
        Assert.Contains("trainedLength", Assert.Throws<InvalidOperationException>(() => crd.Build().Train()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Initial_weights_start_a_run_from_a_checkpoint()
    {
        var text = string.Concat(Enumerable.Repeat("The river ran past the mill and under the old stone bridge. ", 30));
        var model = LongNetModel.Create().Preset(Preset.Tiny).Embedding(16).Heads(2).FeedForward(24).Segments(8, 16).Rates(1, 2);
        TrainerBuilder Run() => Trainer.Create().Model(model).CorpusText(text).Steps(2).SequenceLength(24).BatchSize(2).EvaluationTokens(64);

        var source = Path.Combine(folder, "source");
        using var first = Run().Seed(11).CheckpointDirectory(source).Build().Train();
        var checkpoint = first.CheckpointPath!;

        var tune = Run().Seed(4).InitialWeights(checkpoint);
        Assert.Equal(checkpoint, tune.Build().InitialWeightsPath);
        using var tuned = tune.Build().Train();
        using var fresh = Run().Seed(4).Build().Train();
        Assert.NotEqual(fresh.Losses, tuned.Losses);

        // The same as the F# session given the checkpoint's weights before its first step.
        var run = new FsRunConfig(tune.Current.Model.ToFSharp(), tune.Current.Train, global::LongNet.Training.TokenizerChoice.ByteTokens);
        var bytes = FsTokenizer.byteLevel();
        using var session = FsTrainSession.Create(run, bytes).ResultValue;
        var loaded = FsCheckpoint.load(checkpoint).ResultValue;
        Assert.True(session.LoadWeights(loaded.Tensors).IsOk);
        foreach (var t in loaded.Tensors)
        {
            t.Value.Dispose();
        }

        var tokens = bytes.Encode(text);
        var train = tokens[..(tokens.Length - (int)Math.Ceiling(tokens.Length * 0.1))];
        Assert.Equal(Enumerable.Range(0, 2).Select(_ => session.TrainStep(train).ResultValue.Loss), tuned.Losses);

        Throws<ArgumentException>("checkpointPath", () => Run().InitialWeights(""));
        Assert.Throws<FileNotFoundException>(() => Run().InitialWeights(Path.Combine(folder, "missing.ckpt")).Build().Train());
        var untouched = Path.Combine(folder, "never-created");
        Assert.Throws<FileNotFoundException>(() => Run().InitialWeights(Path.Combine(folder, "missing.ckpt")).CheckpointDirectory(untouched).Build().Train());
        Assert.False(Directory.Exists(untouched), "a run refused for missing initial weights created its checkpoint folder");
        Assert.Throws<InvalidOperationException>(() => Run().Model(model.Embedding(32)).InitialWeights(checkpoint).Build().Train());
        Assert.Throws<InvalidOperationException>(() => Run().InitialWeights(checkpoint).CheckpointDirectory(source).Resume().Build());
    }
}
