using System;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace LongNet.CSharp.Tests;

/// <summary>The new builders reject invalid input with the documented exception type, naming the C# parameter.</summary>
public sealed class BuilderValidationTests
{
    public BuilderValidationTests() => LongNetRuntime.EnsureLoaded();

    private static void Throws<TException>(string parameter, Action action)
        where TException : ArgumentException
    {
        var e = Assert.Throws<TException>(action);
        Assert.Equal(parameter, e.ParamName);
        Assert.Contains(parameter, e.Message, StringComparison.Ordinal);
    }

    private static DilatedAttention Groups() => DilatedAttention.Create().Segments(4, 8).Rates(1, 2).Causal().Build();

    [Fact]
    public void Multihead_settings_are_checked()
    {
        var b = MultiheadDilatedAttention.Create();
        Throws<ArgumentOutOfRangeException>("embeddingDim", () => b.EmbeddingDim(0));
        Throws<ArgumentOutOfRangeException>("heads", () => b.Heads(-1));
        Throws<ArgumentNullException>("attention", () => b.Attention(null!));
        Throws<ArgumentOutOfRangeException>("dropout", () => b.Dropout(1.0));
        Throws<ArgumentOutOfRangeException>("dropout", () => b.Dropout(double.NaN));
        Throws<ArgumentOutOfRangeException>("ropeBase", () => b.RopeBase(1.0));
        Throws<ArgumentOutOfRangeException>("position", () => b.Position((PositionEncoding)7));
        Assert.Throws<InvalidOperationException>(() => b.EmbeddingDim(8).Heads(2).Build());
        Throws<ArgumentException>("heads", () => b.EmbeddingDim(10).Heads(4).Attention(Groups()).Build());
        Throws<ArgumentException>("position", () => b.EmbeddingDim(9).Heads(3).Attention(Groups()).Position(PositionEncoding.Rope).Build());
    }

    [Fact]
    public void Multihead_inputs_are_checked_before_any_native_call()
    {
        using var scope = NewDisposeScope();
        var layer = MultiheadDilatedAttention.Create().EmbeddingDim(8).Heads(2).Attention(Groups()).Build();
        Throws<ArgumentNullException>("input", () => layer.Forward(null!));
        Throws<ArgumentException>("input", () => layer.Forward(randn(2, 5, 7)));
        Throws<ArgumentException>("input", () => layer.Forward(randn(5, 8)));
        Throws<ArgumentException>("key", () => layer.Forward(randn(2, 5, 8), randn(2, 6, 8), randn(2, 5, 8)));
        Throws<ArgumentException>("value", () => layer.Forward(randn(2, 5, 8), randn(2, 5, 8), randn(1, 5, 8)));
        layer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => layer.Forward(randn(2, 5, 8)));
    }

    [Fact]
    public void Distance_bias_settings_are_checked_and_reach_the_model()
    {
        var b = LongNetModel.Create().Vocabulary(32).Embedding(16).Layers(1).Heads(4).Segments(8, 16).Rates(1, 2);
        Throws<ArgumentOutOfRangeException>("maxSlope", () => b.DistanceBias(maxSlope: 0.0));
        Throws<ArgumentOutOfRangeException>("minSlope", () => b.DistanceBias(maxSlope: 1.0, minSlope: 2.0));
        Throws<ArgumentOutOfRangeException>("minSlope", () => b.DistanceBias(minSlope: double.NaN));
        Throws<ArgumentOutOfRangeException>("form", () => b.DistanceBias((DistanceBiasForm)5));
        Throws<ArgumentException>("position", () => b.DistanceBias().SelectMergeAttention().Build());

        using var scope = NewDisposeScope();
        using var model = b.DistanceBias(DistanceBiasForm.Linear, 0.5, 0.125).Build();
        var position = Assert.IsType<global::LongNet.Modules.PositionEncoding.DistanceBiased>(model.Inner.Config.Position);
        Assert.Equal(global::LongNet.BiasForm.LinearBias, position.Item.Form);
        Assert.Equal(0.5, position.Item.MaxSlope);
        Assert.Equal(0.125, position.Item.MinSlope);
        Assert.Equal(model.Inner.Config, model.ToBuilder().ToFSharp());
        Assert.Equal(new long[] { 1, 5, 32 }, model.Forward(randint(32, [1, 5])).shape);
    }

    [Fact]
    public void Model_settings_are_checked()
    {
        var b = LongNetModel.Create();
        Throws<ArgumentOutOfRangeException>("vocabularySize", () => b.Vocabulary(1));
        Throws<ArgumentOutOfRangeException>("embeddingDim", () => b.Embedding(0));
        Throws<ArgumentOutOfRangeException>("layers", () => b.Layers(0));
        Throws<ArgumentOutOfRangeException>("layers", () => b.Layers(2000));
        Throws<ArgumentOutOfRangeException>("feedForwardDim", () => b.FeedForward(0));
        Throws<ArgumentOutOfRangeException>("kind", () => b.FeedForward(8, (FeedForwardKind)5));
        Throws<ArgumentNullException>("segmentLengths", () => b.Segments(null!));
        Throws<ArgumentException>("segmentLengths", () => b.Segments());
        Throws<ArgumentOutOfRangeException>("rates", () => b.Rates(1, 0));
        Throws<ArgumentOutOfRangeException>("epsilon", () => b.LayerNormEpsilon(0));
        Throws<ArgumentOutOfRangeException>("maxPositions", () => b.MaxPositions(0));
        Throws<ArgumentOutOfRangeException>("preset", () => b.Preset((Preset)9));
        Throws<ArgumentNullException>("tokenizer", () => b.Tokenizer(null!));

        Throws<ArgumentOutOfRangeException>("segmentLength", () => b.Group(0, 1));
        Throws<ArgumentOutOfRangeException>("dilationRate", () => b.Group(4, 8));
        Throws<ArgumentOutOfRangeException>("dilationRate", () => DilatedAttention.Create().Group(4, 0));

        var tiny = b.Preset(Preset.Tiny);
        Throws<ArgumentException>("rates", () => tiny.Segments(8, 16).Rates(1).Build());
        Throws<ArgumentOutOfRangeException>("rates", () => tiny.Segments(8, 16).Rates(1, 32).Build());
        Throws<ArgumentException>("heads", () => tiny.Embedding(30).Heads(4).Build());
        Throws<ArgumentException>("position", () => tiny.Embedding(6).Heads(2).Build());
        Throws<ArgumentException>("maxPositions", () => tiny.Position(PositionEncoding.XPos).XPosScaleBase(1).Build());
    }

    [Fact]
    public void Model_inputs_are_checked_before_any_native_call()
    {
        using var scope = NewDisposeScope();
        using var model = LongNetModel.Create().Preset(Preset.Tiny).Vocabulary(30).MaxPositions(64).Seed(1).Build();
        Throws<ArgumentNullException>("tokens", () => model.Forward(null!));
        Throws<ArgumentException>("tokens", () => model.Forward(ones(3, dtype: ScalarType.Int64)));
        Throws<ArgumentException>("tokens", () => model.Forward(ones(1, 3)));
        Throws<ArgumentException>("tokens", () => model.Forward(ones(1, 65, dtype: ScalarType.Int64)));
        Throws<ArgumentOutOfRangeException>("tokens", () => model.Forward(full(1, 3, 30, dtype: ScalarType.Int64)));
        Throws<ArgumentOutOfRangeException>("tokens", () => model.Forward(full(1, 3, -1, dtype: ScalarType.Int64)));
        Assert.Throws<System.IO.FileNotFoundException>(() => LongNetModel.Load("/nonexistent/checkpoint.ckpt"));
        Throws<ArgumentException>("checkpointPath", () => LongNetModel.Load(""));
    }

    [Fact]
    public void Generation_settings_and_prompts_are_checked()
    {
        var b = TextGenerator.Create();
        Throws<ArgumentOutOfRangeException>("maxNewTokens", () => b.MaxNewTokens(0));
        Throws<ArgumentOutOfRangeException>("temperature", () => b.Temperature(0));
        Throws<ArgumentOutOfRangeException>("topK", () => b.TopK(-1));
        Throws<ArgumentOutOfRangeException>("topP", () => b.TopP(1.5));
        Throws<ArgumentOutOfRangeException>("topP", () => b.TopP(0));
        Assert.True(b.Temperature(0.5).Greedy().Build().IsGreedy);
        Assert.False(b.Greedy().TopK(3).Build().IsGreedy);

        using var noTokenizer = LongNetModel.Create().Preset(Preset.Tiny).Vocabulary(30).MaxPositions(64).Seed(1).Build();
        using var encoder = LongNetModel.Create().Preset(Preset.Tiny).Encoder().Seed(1).Build();
        var generator = b.MaxNewTokens(10).Build();
        Throws<ArgumentException>("model", () => generator.Generate(noTokenizer, "hi"));
        Throws<ArgumentException>("model", () => generator.GenerateTokens(encoder, [1, 2]));
        Throws<ArgumentException>("prompt", () => generator.GenerateTokens(noTokenizer, []));
        Throws<ArgumentException>("prompt", () => generator.GenerateTokens(noTokenizer, new int[60]));
        Throws<ArgumentOutOfRangeException>("prompt", () => generator.GenerateTokens(noTokenizer, [1, 30]));
        Throws<ArgumentNullException>("prompt", () => generator.Generate(noTokenizer, null!));
    }

    [Fact]
    public void Trainer_settings_are_checked()
    {
        var b = Trainer.Create();
        Throws<ArgumentOutOfRangeException>("steps", () => b.Steps(0));
        Throws<ArgumentOutOfRangeException>("sequenceLength", () => b.SequenceLength(0));
        Throws<ArgumentOutOfRangeException>("batchSize", () => b.BatchSize(0));
        Throws<ArgumentOutOfRangeException>("learningRate", () => b.LearningRate(0));
        Throws<ArgumentOutOfRangeException>("learningRate", () => b.LearningRate(1));
        Throws<ArgumentOutOfRangeException>("warmupSteps", () => b.WarmupSteps(-1));
        Throws<ArgumentOutOfRangeException>("gradientClip", () => b.GradientClip(-0.5));
        Throws<ArgumentOutOfRangeException>("checkpointEvery", () => b.CheckpointEvery(-1));
        Throws<ArgumentOutOfRangeException>("maxCharacters", () => b.DefaultCorpus(10));
        Throws<ArgumentException>("text", () => b.CorpusText(""));
        Throws<ArgumentException>("path", () => b.CorpusFile(" "));
        Throws<ArgumentException>("directory", () => b.CheckpointDirectory(""));
        Throws<ArgumentNullException>("onProgress", () => b.OnProgress((Action<TrainingProgress>)null!));
        Throws<ArgumentNullException>("model", () => b.Model(null!));
        Assert.Throws<InvalidOperationException>(() => b.Build());
        Assert.Throws<InvalidOperationException>(() => b.CorpusText("x").Resume().Build());
        Throws<ArgumentException>("model", () => b.CorpusText("x").Model(LongNetModel.Create().Encoder()).Build());
    }

    [Fact]
    public void Passkey_and_benchmark_settings_are_checked()
    {
        var p = PasskeyEvaluation.Create();
        Throws<ArgumentException>("lengths", () => p.Lengths());
        Throws<ArgumentOutOfRangeException>("lengths", () => p.Lengths(0));
        Throws<ArgumentOutOfRangeException>("depths", () => p.Depths(0.5, 1.5));
        Throws<ArgumentOutOfRangeException>("trials", () => p.Trials(0));
        Assert.Throws<InvalidOperationException>(() => p.Build());
        using var model = LongNetModel.Create().Preset(Preset.Tiny).Tokenizer(Tokenizer.ByteLevel()).MaxPositions(200).Seed(1).Build();
        Throws<ArgumentOutOfRangeException>("lengths", () => p.Lengths(20).Build().Run(model));
        Throws<ArgumentOutOfRangeException>("lengths", () => p.Lengths(195).Build().Run(model));

        var b = Benchmark.Create();
        Throws<ArgumentOutOfRangeException>("sequenceLengths", () => b.SequenceLengths(0));
        Throws<ArgumentException>("sequenceLengths", () => b.SequenceLengths());
        Throws<ArgumentException>("implementations", () => b.Implementations("flash"));
        Throws<ArgumentOutOfRangeException>("modes", () => b.Modes((BenchmarkMode)3));
        Throws<ArgumentOutOfRangeException>("repeats", () => b.Repeats(0));
        Throws<ArgumentOutOfRangeException>("heads", () => b.Heads(0));
        Throws<ArgumentOutOfRangeException>("dtype", () => b.DType(ScalarType.Int32));
        Throws<ArgumentOutOfRangeException>("maxDenseSeconds", () => b.MaxDenseSeconds(0));
        Throws<ArgumentNullException>("attention", () => b.Attention(null!));
    }

    [Fact]
    public void Tokenizers_check_their_arguments()
    {
        var bytes = Tokenizer.ByteLevel();
        Assert.Equal("héllo", bytes.Decode(bytes.Encode("héllo")));
        Assert.Equal(259, bytes.VocabularySize);
        Assert.Equal(257, bytes.EndOfText);
        Throws<ArgumentOutOfRangeException>("ids", () => bytes.Decode([300]));
        Throws<ArgumentNullException>("text", () => bytes.Encode(null!));
        Assert.Throws<System.IO.FileNotFoundException>(() => Tokenizer.FromBpeFiles("/nonexistent/vocab.json", "/nonexistent/merges.txt"));
    }
}
