using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.FSharp.Core;
using FsGenerate = global::LongNet.Training.Generate;
using FsGenerateSettings = global::LongNet.Training.GenerateSettings;
using FsRng = global::LongNet.Training.Rng;
using FsSamplingSettings = global::LongNet.Training.SamplingSettings;

namespace LongNet.CSharp;

/// <summary>
/// Continues a prompt with a LongNet decoder: the prompt runs once through the model (filling the exact
/// KV cache), then one token at a time is chosen — greedily, or by sampling with temperature, top-k and
/// top-p — and decoded incrementally. Build one with <see cref="Create"/>.
/// </summary>
/// <remarks>Immutable and holds no native memory. The same seed, model and prompt give the same tokens.</remarks>
public sealed class TextGenerator
{
    private readonly TextGeneratorBuilder.Settings settings;

    internal TextGenerator(TextGeneratorBuilder.Settings settings) => this.settings = settings;

    /// <summary>Starts a builder with the defaults: 64 new tokens, temperature 0.8, top-k 40, top-p 0.95, seed 1, stop at end of text.</summary>
    /// <returns>A new <see cref="TextGeneratorBuilder"/>.</returns>
    public static TextGeneratorBuilder Create() => new();

    /// <summary>The most tokens generated per call.</summary>
    public int MaxNewTokens => settings.MaxNewTokens;

    /// <summary>Whether the most likely token is always taken.</summary>
    public bool IsGreedy => settings.Greedy;

    /// <summary>The sampling temperature (unused when greedy).</summary>
    public double Temperature => settings.Temperature;

    /// <summary>Sampling keeps the k most likely tokens (0 = all; unused when greedy).</summary>
    public int TopK => settings.TopK;

    /// <summary>Sampling keeps the smallest set of tokens whose probability reaches p (1 = all; unused when greedy).</summary>
    public double TopP => settings.TopP;

    /// <summary>The seed of the sampler.</summary>
    public long Seed => settings.Seed;

    /// <summary>Whether generation stops at the tokenizer's end-of-text token.</summary>
    public bool StopsAtEndOfText => settings.StopAtEndOfText;

    /// <summary>Continues a text prompt with a model that has a tokenizer.</summary>
    /// <param name="model">A causal model with a <see cref="LongNetModel.Tokenizer"/>.</param>
    /// <param name="prompt">A non-empty prompt.</param>
    /// <param name="onToken">Called with each new token id as it is chosen (optional).</param>
    /// <returns>The continuation (the prompt excluded) as text and ids.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="prompt"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// The model has no tokenizer or is an encoder (parameter <c>model</c>); the prompt is empty or, with
    /// the new tokens, longer than the model's MaxPositions (parameter <c>prompt</c>).
    /// </exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public GenerationResult Generate(LongNetModel model, string prompt, Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompt);
        var tokenizer = model.Tokenizer
            ?? throw new ArgumentException("model has no tokenizer; build it with .Tokenizer(...) or use GenerateTokens with token ids.", nameof(model));
        var ids = tokenizer.Encode(prompt);
        var generated = GenerateTokens(model, ids, onToken);
        return new GenerationResult(prompt, tokenizer.Decode(generated), Interop.ReadOnly(ids), Interop.ReadOnly(generated));
    }

    /// <summary>Continues a text prompt with the model stored in a checkpoint (loaded, used and freed).</summary>
    /// <param name="checkpointPath">A checkpoint written by a <see cref="Trainer"/> or <c>longnet train</c>.</param>
    /// <param name="prompt">A non-empty prompt.</param>
    /// <param name="onToken">Called with each new token id (optional).</param>
    /// <returns>The continuation.</returns>
    /// <exception cref="ArgumentException">As for <see cref="LongNetModel.Load"/> and <see cref="Generate(LongNetModel, string, Action{int})"/>.</exception>
    /// <exception cref="System.IO.FileNotFoundException">The checkpoint does not exist.</exception>
    /// <exception cref="System.IO.InvalidDataException">The file is not a valid checkpoint.</exception>
    public GenerationResult Generate(string checkpointPath, string prompt, Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        using var model = LongNetModel.Load(checkpointPath);
        return Generate(model, prompt, onToken);
    }

    /// <summary>Continues a prompt of token ids (batch of one); stops early at the tokenizer's end-of-text id when the model has a tokenizer and <see cref="StopsAtEndOfText"/>.</summary>
    /// <param name="model">A causal model.</param>
    /// <param name="prompt">One or more ids, each in [0, vocabulary).</param>
    /// <param name="onToken">Called with each new token id (optional).</param>
    /// <returns>The new ids (the prompt excluded).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="prompt"/> is null.</exception>
    /// <exception cref="ArgumentException">The model is an encoder (parameter <c>model</c>); the prompt is empty or too long (parameter <c>prompt</c>).</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary (parameter <c>prompt</c>).</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public int[] GenerateTokens(LongNetModel model, IReadOnlyList<int> prompt, Action<int>? onToken = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompt);
        model.ThrowIfDisposed();
        if (!model.IsCausal)
        {
            throw new ArgumentException("model is an encoder (non-causal); generation needs a decoder.", nameof(model));
        }

        var ids = prompt.ToArray();
        if (ids.Length == 0)
        {
            throw new ArgumentException("prompt must hold at least one token.", nameof(prompt));
        }

        if ((long)ids.Length + settings.MaxNewTokens > model.MaxPositions)
        {
            throw new ArgumentException(
                $"prompt has {ids.Length} tokens and {settings.MaxNewTokens} more were asked for, past the model's MaxPositions {model.MaxPositions}; shorten the prompt or lower MaxNewTokens.",
                nameof(prompt));
        }

        foreach (var id in ids)
        {
            if (id < 0 || id >= model.VocabularySize)
            {
                throw new ArgumentOutOfRangeException(nameof(prompt), id, $"prompt ids must be in [0, {model.VocabularySize}), got {id}.");
            }
        }

        var generateSettings = new FsGenerateSettings(
            settings.MaxNewTokens,
            new FsSamplingSettings(settings.Greedy, settings.Temperature, settings.TopK, settings.TopP),
            settings.StopAtEndOfText);
        var endOfText = model.Tokenizer?.EndOfText is { } eot ? FSharpOption<int>.Some(eot) : FSharpOption<int>.None;
        var callback = FuncConvert.FromAction<int>(id => onToken?.Invoke(id));
        var result = FsGenerate.tokens(model.Inner, ids, generateSettings, endOfText, FsRng.Create(settings.Seed), callback);

        // The checks above cover the core's; an error here means the core grew a new rule.
        return result.IsError ? throw new InvalidOperationException(result.ErrorValue) : result.ResultValue;
    }
}

/// <summary>A generated continuation.</summary>
public sealed record GenerationResult
{
    internal GenerationResult(string prompt, string text, IReadOnlyList<int> promptTokens, IReadOnlyList<int> tokens)
    {
        Prompt = prompt;
        Text = text;
        PromptTokens = promptTokens;
        Tokens = tokens;
    }

    /// <summary>The prompt text.</summary>
    public string Prompt { get; }

    /// <summary>The continuation as text (the prompt excluded).</summary>
    public string Text { get; }

    /// <summary>The prompt's token ids.</summary>
    public IReadOnlyList<int> PromptTokens { get; }

    /// <summary>The generated token ids.</summary>
    public IReadOnlyList<int> Tokens { get; }
}

/// <summary>
/// Builds a <see cref="TextGenerator"/>. Immutable; each method checks its argument at once. Sampling
/// options (<see cref="Temperature"/>, <see cref="TopK"/>, <see cref="TopP"/>) switch to sampling and
/// <see cref="Greedy"/> switches to greedy decoding: the last call wins.
/// <code>
/// var generator = TextGenerator.Create().MaxNewTokens(80).Temperature(0.7).TopK(20).Seed(3).Build();
/// var continuation = generator.Generate(model, "The river").Text;
/// </code>
/// </summary>
public sealed class TextGeneratorBuilder
{
    private readonly Settings settings;

    internal TextGeneratorBuilder()
        : this(new Settings(
            64,
            global::LongNet.Training.Sampling.defaults.Greedy,
            global::LongNet.Training.Sampling.defaults.Temperature,
            global::LongNet.Training.Sampling.defaults.TopK,
            global::LongNet.Training.Sampling.defaults.TopP,
            1,
            true)) { }

    private TextGeneratorBuilder(Settings settings) => this.settings = settings;

    /// <summary>The most tokens to generate per call (default 64).</summary>
    /// <param name="maxNewTokens">The count, ≥ 1.</param>
    /// <returns>A builder with this count.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxNewTokens"/> is &lt; 1.</exception>
    public TextGeneratorBuilder MaxNewTokens(int maxNewTokens) => new(settings with { MaxNewTokens = Checks.AtLeast(maxNewTokens, 1, nameof(maxNewTokens)) });

    /// <summary>Always take the most likely token.</summary>
    /// <returns>A greedy builder.</returns>
    public TextGeneratorBuilder Greedy() => new(settings with { Greedy = true });

    /// <summary>Sample with this temperature (logits are divided by it; default 0.8).</summary>
    /// <param name="temperature">A finite number &gt; 0.</param>
    /// <returns>A sampling builder with this temperature.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="temperature"/> is not a finite number &gt; 0.</exception>
    public TextGeneratorBuilder Temperature(double temperature) =>
        new(settings with { Temperature = Checks.Above(temperature, 0.0, nameof(temperature)), Greedy = false });

    /// <summary>Sample among the k most likely tokens only (default 40; 0 = all).</summary>
    /// <param name="topK">The count, ≥ 0.</param>
    /// <returns>A sampling builder with this filter.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="topK"/> is &lt; 0.</exception>
    public TextGeneratorBuilder TopK(int topK) => new(settings with { TopK = Checks.AtLeast(topK, 0, nameof(topK)), Greedy = false });

    /// <summary>Sample among the smallest set of most likely tokens whose probability reaches p (default 0.95; 1 = all).</summary>
    /// <param name="topP">A number in (0, 1].</param>
    /// <returns>A sampling builder with this filter.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="topP"/> is not in (0, 1].</exception>
    public TextGeneratorBuilder TopP(double topP) =>
        new(settings with { TopP = Checks.InRange(topP, 0.0, 1.0, nameof(topP), lowIncluded: false, highIncluded: true), Greedy = false });

    /// <summary>The seed of the sampler (default 1).</summary>
    /// <param name="seed">Any seed.</param>
    /// <returns>A builder with this seed.</returns>
    public TextGeneratorBuilder Seed(long seed) => new(settings with { Seed = seed });

    /// <summary>Whether to stop at the tokenizer's end-of-text token (default: yes).</summary>
    /// <param name="stop">True to stop there.</param>
    /// <returns>A builder with this setting.</returns>
    public TextGeneratorBuilder StopAtEndOfText(bool stop = true) => new(settings with { StopAtEndOfText = stop });

    /// <summary>Returns the generator these settings describe.</summary>
    /// <returns>The <see cref="TextGenerator"/>.</returns>
    public TextGenerator Build() => new(settings);

    internal sealed record Settings(int MaxNewTokens, bool Greedy, double Temperature, int TopK, double TopP, long Seed, bool StopAtEndOfText);
}
