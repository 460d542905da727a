using System;
using System.Collections.Generic;

namespace LongNet.CSharp;

/// <summary>What one optimizer step of a <see cref="Trainer"/> did.</summary>
public sealed record TrainingProgress
{
    internal TrainingProgress(global::LongNet.Training.StepReport report, int totalSteps, double? validationLoss)
    {
        Step = report.Step;
        TotalSteps = totalSteps;
        Loss = report.Loss;
        LearningRate = report.LearningRate;
        GradientNorm = report.GradNorm;
        Tokens = report.Tokens;
        StepSeconds = report.StepSeconds;
        TokensSeen = report.TokensSeen;
        ElapsedSeconds = report.ElapsedSeconds;
        ValidationLoss = validationLoss;
    }

    /// <summary>The step just completed (1-based, counting the steps of a resumed run).</summary>
    public int Step { get; }

    /// <summary>The run's total steps.</summary>
    public int TotalSteps { get; }

    /// <summary>The mean training loss of the step (nats per token).</summary>
    public double Loss { get; }

    /// <summary>The learning rate the step used.</summary>
    public double LearningRate { get; }

    /// <summary>The global gradient norm before clipping.</summary>
    public double GradientNorm { get; }

    /// <summary>Tokens the step processed.</summary>
    public long Tokens { get; }

    /// <summary>Wall time of the step, in seconds.</summary>
    public double StepSeconds { get; }

    /// <summary>Training tokens so far (resumed steps included).</summary>
    public long TokensSeen { get; }

    /// <summary>Training wall time so far, in seconds (resumed steps included).</summary>
    public double ElapsedSeconds { get; }

    /// <summary>The validation loss measured after this step (at checkpoint steps), or null.</summary>
    public double? ValidationLoss { get; }
}

/// <summary>
/// What <see cref="Trainer.Train"/> did, and the trained model; disposing the result disposes the model.
/// </summary>
public sealed class TrainingResult : IDisposable
{
    internal TrainingResult(
        LongNetModel model, IReadOnlyList<TrainingProgress> steps, int startStep, int totalSteps, double? validationLoss, bool cancelled, string? checkpointPath)
    {
        Model = model;
        Steps = steps;
        StartStep = startStep;
        TotalSteps = totalSteps;
        ValidationLoss = validationLoss;
        Cancelled = cancelled;
        CheckpointPath = checkpointPath;
        var losses = new double[steps.Count];
        for (var i = 0; i < losses.Length; i++)
        {
            losses[i] = steps[i].Loss;
        }

        Losses = Array.AsReadOnly(losses);
    }

    /// <summary>The trained model (in eval mode) with its tokenizer; owned by this result.</summary>
    public LongNetModel Model { get; }

    /// <summary>The steps run by this call, in order.</summary>
    public IReadOnlyList<TrainingProgress> Steps { get; }

    /// <summary>The training loss of each step run by this call.</summary>
    public IReadOnlyList<double> Losses { get; }

    /// <summary>The step the run started from: 0, or the checkpoint's step when resuming.</summary>
    public int StartStep { get; }

    /// <summary>The step reached.</summary>
    public int FinalStep => StartStep + Steps.Count;

    /// <summary>The run's total steps.</summary>
    public int TotalSteps { get; }

    /// <summary>The validation loss at the end (nats per token), or null where the validation text was too short.</summary>
    public double? ValidationLoss { get; }

    /// <summary>Whether the cancellation token stopped the run before its total steps.</summary>
    public bool Cancelled { get; }

    /// <summary>The checkpoint written at the end, or null without a checkpoint directory.</summary>
    public string? CheckpointPath { get; }

    /// <summary>Disposes the model.</summary>
    public void Dispose() => Model.Dispose();
}
