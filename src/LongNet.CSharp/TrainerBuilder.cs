using System;
using System.IO;
using FsPasskey = global::LongNet.Text.Passkey;
using FsPrecision = global::LongNet.Training.Precision;
using FsTrainConfig = global::LongNet.Training.TrainConfig;
using FsTrainTask = global::LongNet.Training.TrainTask;

namespace LongNet.CSharp;

/// <summary>
/// Builds a <see cref="Trainer"/>: start with <see cref="Trainer.Create"/> (the <see cref="CSharp.Preset.Tiny"/>
/// preset's model and training settings, byte-level tokens), name the text with <see cref="CorpusText"/>,
/// <see cref="CorpusFile"/> or <see cref="DefaultCorpus"/> (or train on generated passkey samples with
/// <see cref="PasskeySamples"/>), change what you need, end with <see cref="Build"/>.
/// </summary>
/// <remarks>
/// Immutable: every method returns a new builder. Each method checks its own argument at once
/// (<see cref="ArgumentException"/> or <see cref="ArgumentOutOfRangeException"/> naming the parameter).
/// Training draws batches and dropout from one seeded generator whose state the checkpoint keeps, so a
/// resumed run gives the same losses as an uninterrupted one.
/// <code>
/// var trainer = Trainer.Create()
///     .Model(LongNetModel.Create().Preset(Preset.Tiny).Embedding(48))
///     .CorpusFile("corpus.txt")
///     .Steps(200).SequenceLength(64).BatchSize(8).LearningRate(3e-3).WarmupSteps(20).Seed(1)
///     .CheckpointDirectory("run")
///     .OnProgress(p => Console.WriteLine($"step {p.Step}: loss {p.Loss:F3}"))
///     .Build();
/// using var result = trainer.Train();
///
/// // Fine-tune that model on passkey retrieval with CRD NTK positions (no corpus needed):
/// var finetune = Trainer.Create()
///     .Model(LongNetModel.Create().Preset(Preset.Tiny).Embedding(48).CrdNtkScaling(1, 4, 50, 128, 112))
///     .PasskeySamples().InitialWeights("run/checkpoint.ckpt")
///     .Steps(100).SequenceLength(128).BatchSize(4)
///     .Build();
/// </code>
/// </remarks>
public sealed class TrainerBuilder
{
    private readonly Settings settings;

    internal TrainerBuilder()
        : this(FromPreset(CSharp.Preset.Tiny)) { }

    private TrainerBuilder(Settings settings) => this.settings = settings;

    internal Settings Current => settings;

    private static Settings FromPreset(Preset preset)
    {
        var run = Interop.PresetRun(preset);
        var modelBuilder = new LongNetModelBuilder(LongNetModelBuilder.FromFSharp(run.Model, null));
        return new Settings(modelBuilder, run.Train, null, null, null, null, false, null);
    }

    /// <summary>Starts from a preset's model and training settings (keeping the corpus or passkey task, tokenizer, checkpoint, initial weights and progress settings).</summary>
    /// <param name="preset">Tiny, Demo or Small.</param>
    /// <returns>A builder with the preset's settings.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="preset"/> is not a defined value.</exception>
    public TrainerBuilder Preset(Preset preset)
    {
        var basis = FromPreset(Checks.Defined(preset, nameof(preset)));
        return new(settings with { Model = basis.Model, Train = Train(basis.Train, task: settings.Train.Task) });
    }

    /// <summary>The model to train, described by a model builder (its seed is not used: the trainer seeds initialisation with <see cref="Seed"/>; its vocabulary comes from the tokenizer).</summary>
    /// <param name="model">A model builder.</param>
    /// <returns>A builder training this model.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
    public TrainerBuilder Model(LongNetModelBuilder model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new(settings with { Model = model });
    }

    /// <summary>The tokenizer (default: byte-level); when resuming, the checkpoint's tokenizer is used instead.</summary>
    /// <param name="tokenizer">A tokenizer.</param>
    /// <returns>A builder with this tokenizer.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tokenizer"/> is null.</exception>
    public TrainerBuilder Tokenizer(Tokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return new(settings with { Tokenizer = tokenizer });
    }

    /// <summary>Trains on this text (the last 10% of its tokens are held out for validation).</summary>
    /// <param name="text">A non-empty text.</param>
    /// <returns>A builder with this corpus.</returns>
    /// <exception cref="ArgumentException"><paramref name="text"/> is null or empty.</exception>
    public TrainerBuilder CorpusText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
        {
            throw new ArgumentException("text must not be empty.", nameof(text));
        }

        return new(settings with { Corpus = new CorpusSource(text, null, null), Train = Train(settings.Train, task: FsTrainTask.TextWindows) });
    }

    /// <summary>Trains on a UTF-8 text file, or on every text file under a folder (one document per file; every 20th held out for validation when there are 20 or more).</summary>
    /// <param name="path">A file or folder (checked when training starts).</param>
    /// <returns>A builder with this corpus.</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    public TrainerBuilder CorpusFile(string path) =>
        new(settings with
        {
            Corpus = new CorpusSource(null, Checks.NotBlank(path, nameof(path)), null),
            Train = Train(settings.Train, task: FsTrainTask.TextWindows),
        });

    /// <summary>Trains on the default corpus: the documentation text of the newest .NET reference pack installed (else text bundled with LongNet).</summary>
    /// <param name="maxCharacters">About how many characters to read, ≥ 1000.</param>
    /// <returns>A builder with this corpus.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxCharacters"/> is &lt; 1000.</exception>
    public TrainerBuilder DefaultCorpus(long maxCharacters = 4_000_000) =>
        new(settings with
        {
            Corpus = new CorpusSource(null, null, Checks.AtLeast(maxCharacters, 1000L, nameof(maxCharacters))),
            Train = Train(settings.Train, task: FsTrainTask.TextWindows),
        });

    /// <summary>
    /// Trains on freshly generated passkey samples instead of a corpus (replacing one named before): each
    /// sequence is filler text with a random 5-digit pass key at a random depth, the question, and the answer.
    /// The validation loss is measured on 32 fixed samples; sequences need at least the length of the
    /// shortest sample (103 byte-level tokens; checked by <see cref="Build"/>).
    /// </summary>
    /// <returns>A builder with the passkey task.</returns>
    public TrainerBuilder PasskeySamples() => new(settings with { Corpus = null, Train = Train(settings.Train, task: FsTrainTask.PasskeySamples) });

    /// <summary>Starts a new run from the weights of a checkpoint (fine-tuning, as <c>longnet train --init</c>) instead of fresh ones; the model must have the same shape.</summary>
    /// <param name="checkpointPath">A checkpoint file written by a <see cref="Trainer"/> or <c>longnet train</c> (read when training starts).</param>
    /// <returns>A builder starting from these weights.</returns>
    /// <exception cref="ArgumentException"><paramref name="checkpointPath"/> is null or empty.</exception>
    public TrainerBuilder InitialWeights(string checkpointPath) =>
        new(settings with { InitialWeights = Checks.NotBlank(checkpointPath, nameof(checkpointPath)) });

    /// <summary>The run's total optimizer steps (when resuming, may extend or shorten the stored run).</summary>
    /// <param name="steps">The count, ≥ 1.</param>
    /// <returns>A builder with this count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="steps"/> is &lt; 1.</exception>
    public TrainerBuilder Steps(int steps) => WithTrain(t => Train(t, steps: Checks.AtLeast(steps, 1, nameof(steps))));

    /// <summary>Tokens per training sequence.</summary>
    /// <param name="sequenceLength">The length, ≥ 1 (at most the model's MaxPositions).</param>
    /// <returns>A builder with this length.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequenceLength"/> is &lt; 1.</exception>
    public TrainerBuilder SequenceLength(int sequenceLength) =>
        WithTrain(t => Train(t, seqLen: Checks.AtLeast(sequenceLength, 1, nameof(sequenceLength))));

    /// <summary>Sequences per micro-batch.</summary>
    /// <param name="batchSize">The count, ≥ 1.</param>
    /// <returns>A builder with this batch size.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="batchSize"/> is &lt; 1.</exception>
    public TrainerBuilder BatchSize(int batchSize) => WithTrain(t => Train(t, batchSize: Checks.AtLeast(batchSize, 1, nameof(batchSize))));

    /// <summary>Micro-batches whose gradients are summed into one optimizer step (default 1).</summary>
    /// <param name="accumulation">The count, ≥ 1.</param>
    /// <returns>A builder with this setting.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="accumulation"/> is &lt; 1.</exception>
    public TrainerBuilder Accumulation(int accumulation) =>
        WithTrain(t => Train(t, accumulation: Checks.AtLeast(accumulation, 1, nameof(accumulation))));

    /// <summary>The peak learning rate of the warm-up + cosine schedule.</summary>
    /// <param name="learningRate">A number in (0, 1).</param>
    /// <returns>A builder with this rate.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="learningRate"/> is not in (0, 1).</exception>
    public TrainerBuilder LearningRate(double learningRate) =>
        WithTrain(t => Train(t, learningRate: Checks.InRange(learningRate, 0.0, 1.0, nameof(learningRate), lowIncluded: false)));

    /// <summary>The final learning rate of the cosine as a fraction of the peak (default 0.1).</summary>
    /// <param name="ratio">A number in [0, 1].</param>
    /// <returns>A builder with this ratio.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ratio"/> is not in [0, 1].</exception>
    public TrainerBuilder MinLearningRateRatio(double ratio) =>
        WithTrain(t => Train(t, minRatio: Checks.InRange(ratio, 0.0, 1.0, nameof(ratio), highIncluded: true)));

    /// <summary>Steps of linear warm-up from 0 to the peak learning rate.</summary>
    /// <param name="warmupSteps">The count, ≥ 0.</param>
    /// <returns>A builder with this warm-up.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="warmupSteps"/> is &lt; 0.</exception>
    public TrainerBuilder WarmupSteps(int warmupSteps) => WithTrain(t => Train(t, warmup: Checks.AtLeast(warmupSteps, 0, nameof(warmupSteps))));

    /// <summary>AdamW's decoupled weight decay on matrices (default 0.1).</summary>
    /// <param name="weightDecay">A number in [0, 1).</param>
    /// <returns>A builder with this decay.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="weightDecay"/> is not in [0, 1).</exception>
    public TrainerBuilder WeightDecay(double weightDecay) =>
        WithTrain(t => Train(t, weightDecay: Checks.InRange(weightDecay, 0.0, 1.0, nameof(weightDecay))));

    /// <summary>The largest global gradient norm; larger gradients are scaled down (default 1; 0 = no clipping).</summary>
    /// <param name="gradientClip">A finite number ≥ 0.</param>
    /// <returns>A builder with this limit.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="gradientClip"/> is not a finite number ≥ 0.</exception>
    public TrainerBuilder GradientClip(double gradientClip) =>
        WithTrain(t => Train(t, gradClip: Checks.InRange(gradientClip, 0.0, double.MaxValue, nameof(gradientClip))));

    /// <summary>The number format of training (default float32).</summary>
    /// <param name="precision">Float32 or BFloat16.</param>
    /// <returns>A builder with this precision.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="precision"/> is not a defined value.</exception>
    public TrainerBuilder Precision(TrainingPrecision precision) =>
        WithTrain(t => Train(t, precision: Checks.Defined(precision, nameof(precision)) == TrainingPrecision.BFloat16 ? FsPrecision.Bf16 : FsPrecision.Fp32));

    /// <summary>The seed of initialisation, batch sampling and dropout (default 1).</summary>
    /// <param name="seed">Any seed.</param>
    /// <returns>A builder with this seed.</returns>
    public TrainerBuilder Seed(long seed) => WithTrain(t => Train(t, seed: seed));

    /// <summary>Validation tokens used for each validation loss (default: the preset's).</summary>
    /// <param name="evaluationTokens">The count, ≥ 1.</param>
    /// <returns>A builder with this count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="evaluationTokens"/> is &lt; 1.</exception>
    public TrainerBuilder EvaluationTokens(int evaluationTokens) =>
        WithTrain(t => Train(t, evalTokens: Checks.AtLeast(evaluationTokens, 1, nameof(evaluationTokens))));

    /// <summary>The folder for <c>checkpoint.ckpt</c>, written atomically at the end (and every <see cref="CheckpointEvery"/> steps); <c>longnet generate</c> reads it too.</summary>
    /// <param name="directory">A folder (created when needed).</param>
    /// <returns>A builder with this folder.</returns>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is null or empty.</exception>
    public TrainerBuilder CheckpointDirectory(string directory) =>
        new(settings with { CheckpointDirectory = Checks.NotBlank(directory, nameof(directory)) });

    /// <summary>Measures the validation loss, and saves a checkpoint where there is a folder, every this many steps (0 = only at the end).</summary>
    /// <param name="checkpointEvery">The interval, ≥ 0.</param>
    /// <returns>A builder with this interval.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="checkpointEvery"/> is &lt; 0.</exception>
    public TrainerBuilder CheckpointEvery(int checkpointEvery) =>
        WithTrain(t => Train(t, checkpointEvery: Checks.AtLeast(checkpointEvery, 0, nameof(checkpointEvery))));

    /// <summary>
    /// Whether to continue the run stored in the checkpoint folder (default: no, and an existing checkpoint
    /// there is an error). The model, tokenizer, seed and every training setting but the total steps come
    /// from the checkpoint; settings given here must match them.
    /// </summary>
    /// <param name="resume">True to resume.</param>
    /// <returns>A builder with this setting.</returns>
    public TrainerBuilder Resume(bool resume = true) => new(settings with { Resume = resume });

    /// <summary>Called on the training thread after every step (instead of a console progress bar).</summary>
    /// <param name="onProgress">The callback.</param>
    /// <returns>A builder with this callback.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="onProgress"/> is null.</exception>
    public TrainerBuilder OnProgress(Action<TrainingProgress> onProgress)
    {
        ArgumentNullException.ThrowIfNull(onProgress);
        return new(settings with { Progress = onProgress });
    }

    /// <summary>Reports every step to a progress sink (e.g. <see cref="Progress{T}"/>, which posts to the creating context).</summary>
    /// <param name="progress">The sink.</param>
    /// <returns>A builder reporting to it.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="progress"/> is null.</exception>
    public TrainerBuilder OnProgress(IProgress<TrainingProgress> progress)
    {
        ArgumentNullException.ThrowIfNull(progress);
        return new(settings with { Progress = progress.Report });
    }

    /// <summary>Checks the whole configuration and returns the trainer (nothing is read or trained yet).</summary>
    /// <returns>The <see cref="Trainer"/>.</returns>
    /// <exception cref="InvalidOperationException">
    /// No corpus was given (and no <see cref="PasskeySamples"/>), <see cref="Resume"/> without <see cref="CheckpointDirectory"/>,
    /// or <see cref="Resume"/> with <see cref="InitialWeights"/>.
    /// </exception>
    /// <exception cref="ArgumentException">
    /// The model's settings conflict (see <see cref="LongNetModelBuilder.Build"/>), or it is an encoder (parameter <c>model</c>);
    /// passkey sequences are shorter than the shortest passkey sample (parameter <c>sequenceLength</c>).
    /// </exception>
    public Trainer Build()
    {
        if (settings.Corpus is null && settings.Train.Task.IsTextWindows)
        {
            throw new InvalidOperationException(
                "Call CorpusText(...), CorpusFile(...) or DefaultCorpus() before Build(): training needs text (or PasskeySamples() to train on generated passkey samples).");
        }

        if (settings.Resume && settings.CheckpointDirectory is null)
        {
            throw new InvalidOperationException("Resume() needs CheckpointDirectory(...): the folder holding the run to continue.");
        }

        if (settings.Resume && settings.InitialWeights is not null)
        {
            throw new InvalidOperationException(
                "InitialWeights(...) starts a new run from a checkpoint's weights; a resumed run continues from its own checkpoint. Use one or the other.");
        }

        var model = settings.Model.ToFSharp();
        if (!model.Architecture.IsDecoder)
        {
            throw new ArgumentException(
                "model must be a causal decoder: training predicts the next token, which an encoder already sees.", "model");
        }

        var validated = global::LongNet.Training.TrainConfigModule.validate(settings.Train);
        if (validated.IsError)
        {
            throw Interop.ToException(validated.ErrorValue);
        }

        if (settings.Train.Task.IsPasskeySamples)
        {
            var shortest = FsPasskey.minimumSampleLength((settings.Tokenizer ?? CSharp.Tokenizer.ByteLevel()).Inner);
            if (settings.Train.SeqLen < shortest)
            {
                throw new ArgumentException(
                    $"sequenceLength must be ≥ {shortest} for passkey samples with this tokenizer (the pass-key sentence, the question and the answer), got {settings.Train.SeqLen}.",
                    "sequenceLength");
            }
        }

        return new Trainer(settings);
    }

    private TrainerBuilder WithTrain(Func<FsTrainConfig, FsTrainConfig> change) => new(settings with { Train = change(settings.Train) });

    private static FsTrainConfig Train(
        FsTrainConfig t,
        int? steps = null,
        int? batchSize = null,
        int? seqLen = null,
        int? accumulation = null,
        double? learningRate = null,
        double? minRatio = null,
        int? warmup = null,
        double? weightDecay = null,
        double? gradClip = null,
        FsPrecision? precision = null,
        long? seed = null,
        int? checkpointEvery = null,
        int? evalTokens = null,
        FsTrainTask? task = null) =>
        new(
            task ?? t.Task,
            steps ?? t.Steps,
            batchSize ?? t.BatchSize,
            seqLen ?? t.SeqLen,
            accumulation ?? t.Accumulation,
            learningRate ?? t.LearningRate,
            minRatio ?? t.MinLearningRateRatio,
            warmup ?? t.WarmupSteps,
            weightDecay ?? t.WeightDecay,
            t.Beta1,
            t.Beta2,
            t.Epsilon,
            gradClip ?? t.GradClip,
            precision ?? t.Precision,
            seed ?? t.Seed,
            t.LogEvery,
            checkpointEvery ?? t.CheckpointEvery,
            evalTokens ?? t.EvalTokens,
            t.CurriculumStartLength,
            t.CurriculumSteps,
            t.CopyWarmupShare,
            t.CopyWarmupSteps,
            t.CopyProblemSteps);

    /// <summary>Where the training text comes from: exactly one of the three is set.</summary>
    internal sealed record CorpusSource(string? Text, string? Path, long? DefaultMaxCharacters);

    internal sealed record Settings(
        LongNetModelBuilder Model,
        FsTrainConfig Train,
        Tokenizer? Tokenizer,
        CorpusSource? Corpus,
        string? CheckpointDirectory,
        Action<TrainingProgress>? Progress,
        bool Resume,
        string? InitialWeights);
}
