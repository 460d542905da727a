using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using Xunit;
using FsRunConfig = global::LongNet.Training.RunConfig;
using FsTokenizer = global::LongNet.Text.Tokenizer;
using FsTrainSession = global::LongNet.Training.TrainSession;

namespace LongNet.CSharp.Tests;

/// <summary>Training from C#: the same losses as the F# session, exact resumption after a cancelled run, checkpoints that load and generate.</summary>
public sealed class TrainerTests : IDisposable
{
    private const string Text = "The river ran past the mill and under the old stone bridge. The miller sang. ";

    private readonly string folder = Directory.CreateTempSubdirectory("longnet-csharp-train-").FullName;

    public TrainerTests() => LongNetRuntime.EnsureLoaded();

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static TrainerBuilder Tiny() =>
        Trainer.Create()
            .Model(LongNetModel.Create().Preset(Preset.Tiny).Embedding(16).Heads(2).FeedForward(24).Segments(8, 16).Rates(1, 2).Dropout(0.1))
            .CorpusText(string.Concat(Enumerable.Repeat(Text, 30)))
            .Steps(6).SequenceLength(24).BatchSize(2).Accumulation(2).WarmupSteps(2).LearningRate(3e-3).EvaluationTokens(64).Seed(4);

    [Fact]
    public void Training_from_CSharp_gives_the_losses_of_the_FSharp_session()
    {
        var progress = new List<TrainingProgress>();
        using var result = Tiny().Steps(4).OnProgress(progress.Add).Build().Train();

        var builder = Tiny().Steps(4);
        var run = new FsRunConfig(builder.Current.Model.ToFSharp(), builder.Current.Train, global::LongNet.Training.TokenizerChoice.ByteTokens);
        var bytes = FsTokenizer.byteLevel();
        var tokens = bytes.Encode(string.Concat(Enumerable.Repeat(Text, 30)));
        var train = tokens[..(tokens.Length - (int)Math.Ceiling(tokens.Length * 0.1))];
        using var session = FsTrainSession.Create(run, bytes).ResultValue;
        var expected = Enumerable.Range(0, 4).Select(_ => session.TrainStep(train).ResultValue.Loss).ToArray();

        Assert.Equal(expected, result.Losses);
        Assert.Equal(result.Losses, progress.Select(p => p.Loss));
        Assert.Equal(new[] { 1, 2, 3, 4 }, progress.Select(p => p.Step));
        Assert.All(progress, p => Assert.Equal(4, p.TotalSteps));
        Assert.Equal((0, 4, 4, false), (result.StartStep, result.FinalStep, result.TotalSteps, result.Cancelled));
        Assert.NotNull(result.ValidationLoss);
        Assert.Null(result.CheckpointPath);
        Assert.Equal(259, result.Model.VocabularySize);
        Assert.NotNull(result.Model.Tokenizer);
    }

    [Fact]
    public void A_cancelled_run_resumed_from_its_checkpoint_continues_like_an_uninterrupted_one()
    {
        var whole = Path.Combine(folder, "whole");
        var parts = Path.Combine(folder, "parts");
        using var uninterrupted = Tiny().CheckpointDirectory(whole).Build().Train();

        using var cancel = new CancellationTokenSource();
        using var first = Tiny().CheckpointDirectory(parts)
            .OnProgress(p =>
            {
                if (p.Step == 3)
                {
                    cancel.Cancel();
                }
            })
            .Build().Train(cancel.Token);
        Assert.True(first.Cancelled);
        Assert.Equal(3, first.FinalStep);
        Assert.True(File.Exists(first.CheckpointPath));

        Assert.Throws<InvalidOperationException>(() => Tiny().CheckpointDirectory(parts).Build().Train());
        Assert.Throws<InvalidOperationException>(() => Tiny().LearningRate(1e-3).CheckpointDirectory(parts).Resume().Build().Train());

        using var second = Tiny().CheckpointDirectory(parts).Resume().Build().Train();
        Assert.Equal((3, 6, false), (second.StartStep, second.FinalStep, second.Cancelled));
        Assert.Equal(uninterrupted.Losses, first.Losses.Concat(second.Losses));
        Assert.Equal(uninterrupted.ValidationLoss, second.ValidationLoss);

        // The checkpoint holds the trained model: loading it generates what the returned model generates.
        var generator = TextGenerator.Create().MaxNewTokens(8).Greedy().Build();
        var fromCheckpoint = generator.Generate(Path.Combine(parts, Trainer.CheckpointFileName), "The mill");
        Assert.Equal(generator.Generate(second.Model, "The mill").Tokens, fromCheckpoint.Tokens);
        Assert.Equal(generator.Generate(uninterrupted.Model, "The mill").Tokens, fromCheckpoint.Tokens);

        var resumeWithoutRun = Tiny().CheckpointDirectory(Path.Combine(folder, "none")).Resume().Build();
        Assert.Throws<FileNotFoundException>(() => resumeWithoutRun.Train());
    }

    [Fact]
    public void Corpus_files_and_folders_train_and_missing_ones_are_reported()
    {
        var file = Path.Combine(folder, "corpus.txt");
        File.WriteAllText(file, string.Concat(Enumerable.Repeat(Text, 30)));
        using var fromFile = Tiny().Steps(2).CorpusFile(file).Build().Train();
        using var fromText = Tiny().Steps(2).Build().Train();
        Assert.Equal(fromText.Losses, fromFile.Losses);

        Assert.Throws<FileNotFoundException>(() => Tiny().CorpusFile(Path.Combine(folder, "missing.txt")).Build().Train());
        Assert.Throws<InvalidOperationException>(() => Tiny().SequenceLength(5000).CorpusText("short").Build().Train());
    }
}
