using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using Microsoft.FSharp.Core;
using FsCheckpoint = global::LongNet.Training.Checkpoint;
using FsCorpus = global::LongNet.Text.Corpus;
using FsCorpusModule = global::LongNet.Text.CorpusModule;
using FsPasskey = global::LongNet.Text.Passkey;
using FsRunConfig = global::LongNet.Training.RunConfig;
using FsRunConfigModule = global::LongNet.Training.RunConfigModule;
using FsTokenizerChoice = global::LongNet.Training.TokenizerChoice;
using FsTrainSession = global::LongNet.Training.TrainSession;

namespace LongNet.CSharp;

/// <summary>
/// Trains a LongNet language model on a corpus (or on generated passkey samples): seeded initialisation
/// (or a checkpoint's weights), random windows of the training tokens, AdamW with linear warm-up and cosine decay, gradient clipping, atomic checkpoints and exact
/// resumption. Build one with <see cref="Create"/>; <see cref="Train"/> runs it.
/// </summary>
/// <remarks>Immutable and holds no native memory; each <see cref="Train"/> call is a run of its own.</remarks>
public sealed class Trainer
{
    /// <summary>The file name of the checkpoint inside the checkpoint folder (as <c>longnet train --out</c> writes it).</summary>
    public const string CheckpointFileName = "checkpoint.ckpt";

    private readonly TrainerBuilder.Settings settings;

    internal Trainer(TrainerBuilder.Settings settings) => this.settings = settings;

    /// <summary>Starts a builder with the <see cref="Preset.Tiny"/> preset and byte-level tokens.</summary>
    /// <returns>A new <see cref="TrainerBuilder"/>; name a corpus before <c>Build</c>.</returns>
    public static TrainerBuilder Create() => new();

    /// <summary>The run's total optimizer steps.</summary>
    public int Steps => settings.Train.Steps;

    /// <summary>Tokens per training sequence.</summary>
    public int SequenceLength => settings.Train.SeqLen;

    /// <summary>Sequences per micro-batch.</summary>
    public int BatchSize => settings.Train.BatchSize;

    /// <summary>The peak learning rate.</summary>
    public double LearningRate => settings.Train.LearningRate;

    /// <summary>Linear warm-up steps.</summary>
    public int WarmupSteps => settings.Train.WarmupSteps;

    /// <summary>The seed of initialisation, batches and dropout.</summary>
    public long Seed => settings.Train.Seed;

    /// <summary>Where the training sequences come from: windows of the corpus or generated passkey samples.</summary>
    public TrainingTask Task => settings.Train.Task.IsPasskeySamples ? TrainingTask.PasskeySamples : TrainingTask.TextWindows;

    /// <summary>The checkpoint whose weights a new run starts from, or null for freshly initialised weights.</summary>
    public string? InitialWeightsPath => settings.InitialWeights;

    /// <summary>The checkpoint file, or null without a checkpoint folder.</summary>
    public string? CheckpointPath => settings.CheckpointDirectory is { } d ? Path.Combine(d, CheckpointFileName) : null;

    /// <summary>Whether <see cref="Train"/> continues the run stored at <see cref="CheckpointPath"/>.</summary>
    public bool Resumes => settings.Resume;

    /// <summary>
    /// Trains until the run's total steps are done or <paramref name="cancellationToken"/> is cancelled
    /// (checked between steps), reporting every step to the progress callback; then measures the
    /// validation loss, saves the checkpoint (with a checkpoint folder) and returns the trained model.
    /// </summary>
    /// <param name="cancellationToken">Stops the run after the current step; the checkpoint is still saved.</param>
    /// <returns>The losses and the trained model; dispose the result to free the model.</returns>
    /// <exception cref="FileNotFoundException">The corpus, the checkpoint to resume or the initial weights do not exist.</exception>
    /// <exception cref="InvalidDataException">The corpus holds no text, or a checkpoint is damaged.</exception>
    /// <exception cref="InvalidOperationException">
    /// A checkpoint exists but <see cref="TrainerBuilder.Resume"/> was not asked for; the settings differ from
    /// the checkpoint's; the initial weights do not fit the model; the stored run is already complete; the
    /// corpus is shorter than one sequence; the core refuses the run (e.g. a CRD trained length longer
    /// than the sequences); or the loss became NaN (lower the learning rate) — the last good checkpoint is kept.
    /// </exception>
    public TrainingResult Train(CancellationToken cancellationToken = default)
    {
        LongNetRuntime.EnsureLoaded();
        var tokenizer = settings.Tokenizer ?? Tokenizer.ByteLevel();
        var run = new FsRunConfig(
            settings.Model.Tokenizer(tokenizer).ToFSharp(),
            settings.Train,
            tokenizer.VocabPath is { } v && tokenizer.MergesPath is { } m ? FsTokenizerChoice.NewBpeFiles(v, m) : FsTokenizerChoice.ByteTokens);
        var checkpoint = CheckpointPath;
        if (settings.InitialWeights is { } initial && !File.Exists(initial))
        {
            throw new FileNotFoundException($"the initial weights '{initial}' do not exist; give a checkpoint file.", initial);
        }

        if (checkpoint is not null)
        {
            Directory.CreateDirectory(settings.CheckpointDirectory!);
        }

        using var session = settings.Resume ? ResumeSession(run, checkpoint!) : StartSession(run, tokenizer, checkpoint, settings.InitialWeights);
        var corpus = session.Config.Train.Task.IsPasskeySamples
            ? FsPasskey.corpus(session.Tokenizer, session.Config.Train.SeqLen)
            : LoadCorpus(session.Tokenizer);
        var startStep = session.Step;
        var steps = new List<TrainingProgress>();
        var every = session.Config.Train.CheckpointEvery;

        while (!session.Finished && !cancellationToken.IsCancellationRequested)
        {
            var step = session.TrainStep(corpus.Train);
            if (step.IsError)
            {
                throw new InvalidOperationException(step.ErrorValue);
            }

            double? validation = null;
            if (every > 0 && step.ResultValue.Step % every == 0 && !session.Finished)
            {
                validation = ValidationLoss(session, corpus);
                if (checkpoint is not null)
                {
                    session.Save(checkpoint);
                }
            }

            var progress = new TrainingProgress(step.ResultValue, session.Config.Train.Steps, validation);
            steps.Add(progress);
            settings.Progress?.Invoke(progress);
        }

        var finalValidation = ValidationLoss(session, corpus);
        if (checkpoint is not null && session.Step > startStep)
        {
            session.Save(checkpoint);
        }

        var total = session.Config.Train.Steps;
        var model = new LongNetModel(session.DetachModel(), new Tokenizer(session.Tokenizer, tokenizer.VocabPath, tokenizer.MergesPath));
        return new TrainingResult(model, steps.AsReadOnly(), startStep, total, finalValidation, !session.Finished, checkpoint);
    }

    private static FsTrainSession StartSession(FsRunConfig run, Tokenizer tokenizer, string? checkpoint, string? initialWeights)
    {
        if (checkpoint is not null && File.Exists(checkpoint))
        {
            throw new InvalidOperationException(
                $"'{checkpoint}' already holds a run; call Resume() to continue it, or choose another CheckpointDirectory.");
        }

        var created = FsTrainSession.Create(run, tokenizer.Inner);
        var session = created.IsError ? throw new InvalidOperationException(created.ErrorValue) : created.ResultValue;
        if (initialWeights is not null)
        {
            try
            {
                LoadWeights(session, initialWeights);
            }
            catch
            {
                ((IDisposable)session).Dispose();
                throw;
            }
        }

        return session;
    }

    /// <summary>Copies a checkpoint's weights into a new session's model, as <c>longnet train --init</c> does.</summary>
    private static void LoadWeights(FsTrainSession session, string path)
    {
        var loaded = FsCheckpoint.load(path);
        if (loaded.IsError)
        {
            throw new InvalidDataException(loaded.ErrorValue);
        }

        try
        {
            var copied = session.LoadWeights(loaded.ResultValue.Tensors);
            if (copied.IsError)
            {
                throw new InvalidOperationException(
                    $"the initial weights '{path}' do not fit this model ({copied.ErrorValue}); give a checkpoint of a model with the same shape.");
            }
        }
        finally
        {
            foreach (var tensor in loaded.ResultValue.Tensors)
            {
                tensor.Value.Dispose();
            }
        }
    }

    private FsTrainSession ResumeSession(FsRunConfig run, string checkpoint)
    {
        if (!File.Exists(checkpoint))
        {
            throw new FileNotFoundException($"there is no run to resume: '{checkpoint}' does not exist.", checkpoint);
        }

        var loaded = FsCheckpoint.load(checkpoint);
        if (loaded.IsError)
        {
            throw new InvalidDataException(loaded.ErrorValue);
        }

        try
        {
            var header = loaded.ResultValue.Header;
            var differences = FsRunConfigModule.resumeDifferences(run, header.Model, header.Train).ToList();
            if (differences.Count > 0)
            {
                throw new InvalidOperationException(
                    $"the settings differ from the checkpoint's (given vs stored: {string.Join("; ", differences)}); resume with the run's own settings, or train into another CheckpointDirectory.");
            }

            var resumed = FsTrainSession.Resume(loaded.ResultValue, FSharpOption<int>.Some(settings.Train.Steps));
            return resumed.IsError ? throw new InvalidOperationException(resumed.ErrorValue) : resumed.ResultValue;
        }
        finally
        {
            foreach (var tensor in loaded.ResultValue.Tensors)
            {
                tensor.Value.Dispose();
            }
        }
    }

    private FsCorpus LoadCorpus(global::LongNet.Text.ITokenizer tokenizer)
    {
        var source = settings.Corpus!;
        global::Microsoft.FSharp.Core.FSharpResult<FsCorpus, string> corpus;
        if (source.Text is { } text)
        {
            corpus = FsCorpusModule.build(tokenizer, "text given in code", Interop.ToFSharpList(new[] { text }));
        }
        else if (source.Path is { } path)
        {
            if (!File.Exists(path) && !Directory.Exists(path))
            {
                throw new FileNotFoundException($"corpus '{path}' does not exist; give a text file or a folder of them.", path);
            }

            corpus = FsCorpusModule.load(tokenizer, path);
        }
        else
        {
            var found = FsCorpusModule.defaultDocuments(source.DefaultMaxCharacters!.Value);
            corpus = FsCorpusModule.build(tokenizer, found.Item2, found.Item1);
        }

        return corpus.IsError ? throw new InvalidDataException(corpus.ErrorValue) : corpus.ResultValue;
    }

    private static double? ValidationLoss(FsTrainSession session, FsCorpus corpus)
    {
        var loss = session.ValidationLoss(corpus.Validation);
        return loss.IsError ? null : loss.ResultValue;
    }
}
