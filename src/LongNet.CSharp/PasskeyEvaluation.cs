using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Core;
using FsPasskey = global::LongNet.Text.Passkey;
using FsPasskeyCell = global::LongNet.Training.PasskeyCell;
using FsPasskeyEvaluation = global::LongNet.Training.PasskeyEvaluation;

namespace LongNet.CSharp;

/// <summary>
/// Passkey retrieval over a grid of prompt lengths × depths (the CASM paper's evaluation): per cell,
/// prompts of filler text with a random 5-digit pass key hidden at that depth, ending "What is the pass
/// key? The pass key is"; the model continues greedily and a trial counts when the generated digits
/// equal the pass key exactly. Build one with <see cref="Create"/>.
/// </summary>
/// <remarks>Immutable and holds no native memory; the same seed gives the same pass keys.</remarks>
public sealed class PasskeyEvaluation
{
    private readonly PasskeyEvaluationBuilder.Settings settings;

    internal PasskeyEvaluation(PasskeyEvaluationBuilder.Settings settings)
    {
        this.settings = settings;
        Lengths = Interop.ReadOnly(settings.Lengths!);
        Depths = Interop.ReadOnly(settings.Depths);
    }

    /// <summary>Starts a builder with depths 0, 0.25, 0.5, 0.75, 1, five trials per cell and seed 1; call <c>Lengths</c> before <c>Build</c>.</summary>
    /// <returns>A new <see cref="PasskeyEvaluationBuilder"/>.</returns>
    public static PasskeyEvaluationBuilder Create() => new();

    /// <summary>The prompt lengths in tokens (columns).</summary>
    public IReadOnlyList<int> Lengths { get; }

    /// <summary>The depths of the pass key in [0, 1] (rows).</summary>
    public IReadOnlyList<double> Depths { get; }

    /// <summary>Prompts per cell.</summary>
    public int Trials => settings.Trials;

    /// <summary>The seed of the pass keys.</summary>
    public int Seed => settings.Seed;

    /// <summary>Runs the grid on a model with a tokenizer.</summary>
    /// <param name="model">A causal model with a <see cref="LongNetModel.Tokenizer"/>.</param>
    /// <param name="onCell">Called as each cell completes (optional).</param>
    /// <returns>The accuracy grid.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
    /// <exception cref="ArgumentException">The model has no tokenizer or is an encoder (parameter <c>model</c>).</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// A length is shorter than the pass-key sentence and the question, or too long for the model's
    /// MaxPositions with the generated digits (parameter <c>lengths</c>).
    /// </exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public PasskeyResult Run(LongNetModel model, Action<PasskeyCell>? onCell = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.ThrowIfDisposed();
        var tokenizer = model.Tokenizer
            ?? throw new ArgumentException("model has no tokenizer; passkey prompts are text.", nameof(model));
        if (!model.IsCausal)
        {
            throw new ArgumentException("model is an encoder (non-causal); passkey retrieval generates text and needs a decoder.", nameof(model));
        }

        var frame = FsPasskey.frameLength(tokenizer.Inner, "00000");
        var longest = model.MaxPositions - FsPasskeyEvaluation.generatedTokens;
        foreach (var length in settings.Lengths!)
        {
            if (length < frame || length > longest)
            {
                throw new ArgumentOutOfRangeException(
                    "lengths", length, $"lengths must be in [{frame}, {longest}] (the pass-key sentence and question; the model's MaxPositions less {FsPasskeyEvaluation.generatedTokens} generated tokens), got {length}.");
            }
        }

        var cells = new List<PasskeyCell>();
        var callback = FuncConvert.FromAction<FsPasskeyCell>(c =>
        {
            var cell = new PasskeyCell(c.Length, c.Depth, c.Correct, c.Trials);
            cells.Add(cell);
            onCell?.Invoke(cell);
        });
        FSharpResult<Microsoft.FSharp.Collections.FSharpList<FsPasskeyCell>, string> result;
        try
        {
            result = FsPasskeyEvaluation.evaluate(
                model.Inner,
                tokenizer.Inner,
                Interop.ToFSharpList(settings.Lengths!),
                Interop.ToFSharpList(settings.Depths),
                settings.Trials,
                settings.Seed,
                callback);
        }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == "targetLength")
        {
            // A BPE tokenizer can spell some pass keys longer than the probe above.
            throw new ArgumentOutOfRangeException("lengths", e.ActualValue, e.Message);
        }

        return result.IsError ? throw new InvalidOperationException(result.ErrorValue) : new PasskeyResult(Lengths, Depths, cells.AsReadOnly());
    }

    /// <summary>Runs the grid on the model stored in a checkpoint (loaded, used and freed).</summary>
    /// <param name="checkpointPath">A checkpoint written by a <see cref="Trainer"/> or <c>longnet train</c>.</param>
    /// <param name="onCell">Called as each cell completes (optional).</param>
    /// <returns>The accuracy grid.</returns>
    /// <exception cref="ArgumentException">As for <see cref="LongNetModel.Load"/> and <see cref="Run(LongNetModel, Action{PasskeyCell})"/>.</exception>
    /// <exception cref="System.IO.FileNotFoundException">The checkpoint does not exist.</exception>
    /// <exception cref="System.IO.InvalidDataException">The file is not a valid checkpoint.</exception>
    public PasskeyResult Run(string checkpointPath, Action<PasskeyCell>? onCell = null)
    {
        using var model = LongNetModel.Load(checkpointPath);
        return Run(model, onCell);
    }
}

/// <summary>One cell of a passkey grid.</summary>
public sealed record PasskeyCell
{
    internal PasskeyCell(int length, double depth, int correct, int trials)
    {
        Length = length;
        Depth = depth;
        Correct = correct;
        Trials = trials;
    }

    /// <summary>The prompt length in tokens.</summary>
    public int Length { get; }

    /// <summary>The depth of the pass key in [0, 1].</summary>
    public double Depth { get; }

    /// <summary>Trials whose generated digits matched.</summary>
    public int Correct { get; }

    /// <summary>Trials run.</summary>
    public int Trials { get; }

    /// <summary>Correct / Trials.</summary>
    public double Accuracy => (double)Correct / Trials;
}

/// <summary>The accuracy grid of a <see cref="PasskeyEvaluation"/>.</summary>
public sealed class PasskeyResult
{
    internal PasskeyResult(IReadOnlyList<int> lengths, IReadOnlyList<double> depths, IReadOnlyList<PasskeyCell> cells)
    {
        Lengths = lengths;
        Depths = depths;
        Cells = cells;
    }

    /// <summary>The prompt lengths (columns).</summary>
    public IReadOnlyList<int> Lengths { get; }

    /// <summary>The depths (rows).</summary>
    public IReadOnlyList<double> Depths { get; }

    /// <summary>Every cell, for each length, each depth.</summary>
    public IReadOnlyList<PasskeyCell> Cells { get; }

    /// <summary>The accuracy of one cell.</summary>
    /// <param name="length">One of <see cref="Lengths"/>.</param>
    /// <param name="depth">One of <see cref="Depths"/>.</param>
    /// <returns>Correct / Trials of that cell.</returns>
    /// <exception cref="ArgumentException">The grid has no such cell (parameter <c>length</c>).</exception>
    public double Accuracy(int length, double depth) =>
        Cells.FirstOrDefault(c => c.Length == length && c.Depth == depth)?.Accuracy
        ?? throw new ArgumentException($"the grid has no cell at length {length}, depth {depth}.", nameof(length));

    /// <summary>The accuracy table: one row per depth, one column per length (as <c>longnet passkey</c> prints it).</summary>
    /// <returns>The table.</returns>
    public string Format() =>
        FsPasskeyEvaluation.table(
            Interop.ToFSharpList(Lengths),
            Interop.ToFSharpList(Depths),
            Interop.ToFSharpList(Cells.Select(c => new FsPasskeyCell(c.Length, c.Depth, c.Correct, c.Trials))));

    /// <summary>The table of <see cref="Format"/>.</summary>
    /// <returns>The table.</returns>
    public override string ToString() => Format();
}

/// <summary>Builds a <see cref="PasskeyEvaluation"/>. Immutable; each method checks its argument at once.</summary>
public sealed class PasskeyEvaluationBuilder
{
    private readonly Settings settings;

    internal PasskeyEvaluationBuilder()
        : this(new Settings(null, FsPasskeyEvaluation.defaultDepths.ToArray(), 5, 1)) { }

    private PasskeyEvaluationBuilder(Settings settings) => this.settings = settings;

    /// <summary>The prompt lengths in tokens (columns of the grid).</summary>
    /// <param name="lengths">One or more lengths, each ≥ 1 (and, checked when run, at least the pass-key sentence and question).</param>
    /// <returns>A builder with these lengths.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="lengths"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="lengths"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A length is &lt; 1.</exception>
    public PasskeyEvaluationBuilder Lengths(params int[] lengths) =>
        new(settings with { Lengths = Checks.NonEmpty(lengths, nameof(lengths), (v, p) => Checks.AtLeast(v, 1, p)) });

    /// <summary>The depths of the pass key (rows of the grid; default 0, 0.25, 0.5, 0.75, 1): 0 = first, 1 = just before the question.</summary>
    /// <param name="depths">One or more numbers in [0, 1].</param>
    /// <returns>A builder with these depths.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="depths"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="depths"/> is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A depth is not in [0, 1].</exception>
    public PasskeyEvaluationBuilder Depths(params double[] depths) =>
        new(settings with { Depths = Checks.NonEmpty(depths, nameof(depths), (v, p) => Checks.InRange(v, 0.0, 1.0, p, highIncluded: true)) });

    /// <summary>Prompts per cell (default 5).</summary>
    /// <param name="trials">The count, ≥ 1.</param>
    /// <returns>A builder with this count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="trials"/> is &lt; 1.</exception>
    public PasskeyEvaluationBuilder Trials(int trials) => new(settings with { Trials = Checks.AtLeast(trials, 1, nameof(trials)) });

    /// <summary>The seed of the pass keys (default 1).</summary>
    /// <param name="seed">Any seed.</param>
    /// <returns>A builder with this seed.</returns>
    public PasskeyEvaluationBuilder Seed(int seed) => new(settings with { Seed = seed });

    /// <summary>Returns the evaluation these settings describe.</summary>
    /// <returns>The <see cref="PasskeyEvaluation"/>.</returns>
    /// <exception cref="InvalidOperationException"><see cref="Lengths"/> was not called.</exception>
    public PasskeyEvaluation Build() =>
        settings.Lengths is null
            ? throw new InvalidOperationException("Call Lengths(...) before Build(): the grid needs prompt lengths.")
            : new PasskeyEvaluation(settings);

    internal sealed record Settings(int[]? Lengths, double[] Depths, int Trials, int Seed);
}
