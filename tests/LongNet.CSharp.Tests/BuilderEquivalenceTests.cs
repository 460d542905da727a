using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json.Nodes;
using Microsoft.FSharp.Core;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using FsBenchmarking = global::LongNet.Benchmarking;
using FsGenerate = global::LongNet.Training.Generate;
using FsModel = global::LongNet.Modules.LongNetModel;
using FsMultihead = global::LongNet.Modules.MultiheadDilatedAttention;
using FsPasskeyEvaluation = global::LongNet.Training.PasskeyEvaluation;
using FsRng = global::LongNet.Training.Rng;

namespace LongNet.CSharp.Tests;

/// <summary>The module, model, generation, passkey and benchmark builders compute what the F# API computes for the same settings and seed.</summary>
public sealed class BuilderEquivalenceTests
{
    public BuilderEquivalenceTests() => LongNetRuntime.EnsureLoaded();

    private static DilatedAttention Groups(bool causal) => DilatedAttention.Create().Segments(4, 8).Rates(1, 2).Causal(causal).Build();

    [Theory]
    [InlineData(PositionEncoding.None, false, false)]
    [InlineData(PositionEncoding.Rope, true, false)]
    [InlineData(PositionEncoding.XPos, true, true)]
    public void The_multihead_builder_equals_the_FSharp_module(PositionEncoding position, bool causal, bool subLayerNorm)
    {
        using var scope = NewDisposeScope();
        var attention = Groups(causal);
        using var layer = MultiheadDilatedAttention.Create()
            .EmbeddingDim(12).Heads(3).Attention(attention).Position(position).SubLayerNorm(subLayerNorm).RopeBase(500).Seed(9)
            .Build();

        var fsPosition = position switch
        {
            PositionEncoding.Rope => global::LongNet.Modules.PositionEncoding.NewRope(new global::LongNet.Modules.RopeSettings(500, global::LongNet.Modules.PositionScaling.Unscaled)),
            PositionEncoding.XPos => global::LongNet.Modules.PositionEncoding.NewXPos(new global::LongNet.Modules.XPosSettings(500, 512)),
            _ => global::LongNet.Modules.PositionEncoding.NoPosition,
        };
        torch.manual_seed(9);
        using var core = new FsMultihead(
            "core", new global::LongNet.Modules.AttentionSettings(12, 3, attention.Config, global::LongNet.Modules.AttentionKind.Dilated, fsPosition, subLayerNorm, 0.0, true, 1e-5, false, 3,
                Microsoft.FSharp.Core.FSharpOption<global::LongNet.Modules.LoraSettings>.None));

        using var generator = new Generator(4, CPU);
        var x = randn([2, 19, 12], generator: generator);
        var y = randn([2, 19, 12], generator: generator);
        Assert.True(Fixtures.Identical(core.forward(x), layer.Forward(x)));
        Assert.True(Fixtures.Identical(core.Forward(x, y, y), layer.Forward(x, y, y)));
        Assert.Equal(4, layer.HeadDim);
        Assert.Equal(core.parameters().Count(), layer.Module.parameters().Count());
    }

    private static LongNetModelBuilder TinyModel() =>
        LongNetModel.Create().Vocabulary(40).Embedding(16).Layers(2).Heads(2).FeedForward(24, FeedForwardKind.Gelu)
            .Segments(8, 16).Rates(1, 2).Causal().MaxPositions(256);

    [Fact]
    public void Groups_added_one_at_a_time_equal_the_parallel_lists()
    {
        var byGroup = LongNetModel.Create().Vocabulary(40).Embedding(16).Layers(2).Heads(2).FeedForward(24, FeedForwardKind.Gelu)
            .Group(segmentLength: 8, dilationRate: 1).Group(segmentLength: 16, dilationRate: 2).Causal().MaxPositions(256);
        Assert.Equal(TinyModel().ToFSharp(), byGroup.ToFSharp());

        var attention = DilatedAttention.Create().Group(4, 1).Group(8, 2).Build();
        Assert.Equal(new[] { 4, 8 }, attention.SegmentLengths);
        Assert.Equal(new[] { 1, 2 }, attention.Rates);

        // the first Group on a new builder replaces its groups; later ones append
        var again = attention.ToBuilder().Group(16, 1).Build();
        Assert.Equal(new[] { 16 }, again.SegmentLengths);
        var preset = LongNetModel.Create().Preset(Preset.Tiny).Group(32, 1).Group(64, 2).ToFSharp();
        Assert.Equal(new[] { 32, 64 }, preset.Groups.Select(g => g.SegmentLength));

        // mixing the two ways with different counts is refused at once
        Assert.Throws<InvalidOperationException>(() => LongNetModel.Create().Segments(8, 16).Group(32, 4));
        Assert.Throws<InvalidOperationException>(() => DilatedAttention.Create().Segments(8, 16).Group(32, 2));
    }

    [Fact]
    public void The_model_builder_equals_the_FSharp_model_for_the_same_seed()
    {
        using var scope = NewDisposeScope();
        var builder = TinyModel().Seed(3);
        using var model = builder.Build();
        var config = builder.ToFSharp();
        torch.manual_seed(3);
        using var core = new FsModel(config);

        using var generator = new Generator(8, CPU);
        var tokens = randint(0, 40, [2, 21], dtype: ScalarType.Int64, generator: generator);
        var logits = model.Forward(tokens);
        Assert.True(Fixtures.Identical(core.forward(tokens), logits));
        Assert.Equal(new long[] { 2, 21, 40 }, logits.shape);
        Assert.True(Fixtures.Identical(core.Hidden(tokens, null), model.Hidden(tokens)));
        Assert.Equal(core.ParameterCount, model.ParameterCount);

        Assert.Equal(40, config.VocabSize);
        Assert.Equal(16, config.EmbedDim);
        Assert.Equal(2, config.Layers);
        Assert.Equal(24, config.FeedForwardDim);
        Assert.True(config.FeedForward.IsGelu);
        Assert.Equal(new[] { 8, 16 }, config.Groups.Select(g => g.SegmentLength));
        Assert.Equal(new[] { 1, 2 }, config.Groups.Select(g => g.DilationRate));
        Assert.True(config.Architecture.IsDecoder);

        // ToBuilder keeps the configuration: the same seed gives the same weights.
        using var again = model.ToBuilder().Seed(3).Build();
        Assert.True(Fixtures.Identical(logits, again.Forward(tokens)));
        Assert.Equal(model.ToString(), again.ToString());
    }

    [Fact]
    public void Presets_and_encoders_reach_the_FSharp_configuration()
    {
        var tiny = global::LongNet.Training.RunConfigModule.tiny.Model;
        Assert.Equal(tiny, LongNetModel.Create().Preset(Preset.Tiny).ToFSharp());
        var encoder = LongNetModel.Create().Preset(Preset.Tiny).Encoder().Position(PositionEncoding.None).ToFSharp();
        Assert.True(encoder.Architecture.IsEncoder);
        Assert.True(encoder.Position.IsNoPosition);
        var bytes = Tokenizer.ByteLevel();
        Assert.Equal(259, LongNetModel.Create().Vocabulary(7).Tokenizer(bytes).ToFSharp().VocabSize);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Generation_equals_the_FSharp_generation(bool greedy)
    {
        using var model = TinyModel().Tokenizer(Tokenizer.ByteLevel()).Seed(5).Build();
        var builder = TextGenerator.Create().MaxNewTokens(12).Seed(21).StopAtEndOfText(false);
        var generator = greedy ? builder.Greedy().Build() : builder.Temperature(1.3).TopK(50).TopP(0.9).Build();
        var seen = new List<int>();
        var result = generator.Generate(model, "The mill ", seen.Add);

        var sampling = new global::LongNet.Training.SamplingSettings(greedy, 1.3, 50, 0.9);
        var core = FsGenerate.tokens(
            model.Inner,
            model.Tokenizer!.Encode("The mill "),
            new global::LongNet.Training.GenerateSettings(12, sampling, false),
            FSharpOption<int>.Some(257),
            FsRng.Create(21),
            FuncConvert.FromAction<int>(_ => { }));

        Assert.Equal(core.ResultValue, result.Tokens);
        Assert.Equal(seen, result.Tokens);
        Assert.Equal(12, result.Tokens.Count);
        Assert.Equal(model.Tokenizer.Decode(core.ResultValue), result.Text);
        Assert.Equal(model.Tokenizer.Encode("The mill "), result.PromptTokens);
        Assert.Equal(result.Tokens, generator.GenerateTokens(model, result.PromptTokens));
    }

    [Fact]
    public void Passkey_evaluation_equals_the_FSharp_grid()
    {
        using var model = TinyModel().Tokenizer(Tokenizer.ByteLevel()).Seed(2).Build();
        var evaluation = PasskeyEvaluation.Create().Lengths(100, 140).Depths(0, 0.5).Trials(2).Seed(8).Build();
        var seen = new List<PasskeyCell>();
        var result = evaluation.Run(model, seen.Add);

        var core = FsPasskeyEvaluation.evaluate(
            model.Inner,
            model.Tokenizer!.Inner,
            Interop.ToFSharpList(new[] { 100, 140 }),
            Interop.ToFSharpList(new[] { 0.0, 0.5 }),
            2,
            8,
            FuncConvert.FromAction<global::LongNet.Training.PasskeyCell>(_ => { })).ResultValue;

        Assert.Equal(core.Select(c => (c.Length, c.Depth, c.Correct, c.Trials)), result.Cells.Select(c => (c.Length, c.Depth, c.Correct, c.Trials)));
        Assert.Equal(result.Cells, seen);
        Assert.Equal(FsPasskeyEvaluation.table(Interop.ToFSharpList(new[] { 100, 140 }), Interop.ToFSharpList(new[] { 0.0, 0.5 }), core), result.Format());
        Assert.Equal((double)result.Cells[1].Correct / 2, result.Accuracy(100, 0.5));
    }

    [Fact]
    public void The_benchmark_reports_the_FSharp_costs_and_the_CLI_JSON_fields()
    {
        var attention = DilatedAttention.Create().Segments(16, 32).Rates(1, 2).Causal().Build();
        var cells = new List<BenchmarkCell>();
        var result = Benchmark.Create()
            .SequenceLengths(40, 72).Modes(BenchmarkMode.Forward, BenchmarkMode.ForwardBackward)
            .Attention(attention).Repeats(1).Batch(2).Heads(3).HeadDim(8)
            .Build()
            .Run(cells.Add);

        Assert.Equal(8, result.Cells.Count);
        Assert.Equal(result.Cells.Select(c => (c.Implementation, c.SequenceLength, c.Mode)), cells.Select(c => (c.Implementation, c.SequenceLength, c.Mode)));
        Assert.Empty(result.Skipped);
        Assert.True(result.GemmGflops > 0);

        foreach (var cell in result.Cells)
        {
            var (pairs, flops, _) = FsBenchmarking.implementation(cell.Implementation, attention.Config, 2, 3, cell.SequenceLength, 8);
            Assert.Equal(pairs, cell.Pairs);
            Assert.Equal(flops * (cell.Mode == BenchmarkMode.ForwardBackward ? 3.5 : 1.0), cell.Flops);
            Assert.True(cell.Causal);
            Assert.Equal(cell.Implementation == "dilated", cell.SpeedupVsDense.HasValue);
        }

        var json = JsonNode.Parse(result.ToJson())!;
        var results = json["results"]!.AsArray();
        Assert.Equal(result.Cells.Count, results.Count);
        for (var i = 0; i < results.Count; i++)
        {
            var (o, c) = (results[i]!, result.Cells[i]);
            Assert.Equal(c.Implementation, o["impl"]!.GetValue<string>());
            Assert.Equal(c.SequenceLength, o["n"]!.GetValue<long>());
            Assert.Equal(c.Mode == BenchmarkMode.Forward ? "fwd" : "fwdbwd", o["mode"]!.GetValue<string>());
            Assert.Equal(c.MedianSeconds, o["median_s"]!.GetValue<double>());
            Assert.Equal(c.Pairs, o["pairs"]!.GetValue<long>());
            Assert.Equal(c.GemmFraction, o["gemm_fraction"]!.GetValue<double>());
            Assert.Equal(c.SpeedupVsDense, o["speedup_vs_dense"]?.GetValue<double>());
        }

        Assert.Equal(result.GemmGflops, json["gemm_gflops"]!.GetValue<double>());
        Assert.Equal(result.Machine.Cores, json["machine"]!["cores"]!.GetValue<int>());
        Assert.Equal(9, result.Format().Split('\n').Length);
    }

    [Fact]
    public void Slow_dense_cells_are_skipped_and_listed()
    {
        var result = Benchmark.Create().SequenceLengths(64).Modes(BenchmarkMode.Forward).Attention(Groups(false))
            .Repeats(1).Heads(2).HeadDim(4).MaxDenseSeconds(1e-12).Build().Run();
        Assert.Equal(new[] { "dilated" }, result.Cells.Select(c => c.Implementation));
        var skip = Assert.Single(result.Skipped);
        Assert.Equal(("dense", BenchmarkMode.Forward, 64L), (skip.Implementation, skip.Mode, skip.SequenceLength));
    }
}
