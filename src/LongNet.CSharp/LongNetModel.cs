using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;
using FsCheckpoint = global::LongNet.Training.Checkpoint;
using FsModel = global::LongNet.Modules.LongNetModel;

namespace LongNet.CSharp;

/// <summary>
/// A LongNet language model (Ding et al. 2023, §4): token embedding, pre-LN Transformer blocks whose
/// attention is multi-head dilated attention, a final LayerNorm and an output head. Token ids
/// <c>[batch, seq]</c> (int64) → logits <c>[batch, seq, vocabulary]</c>.
/// </summary>
/// <remarks>
/// Create one with <see cref="Create"/>, load a trained one with <see cref="Load"/>, or take the one a
/// <see cref="Trainer"/> returns. It owns its weights (native memory): dispose it when done.
/// <see cref="Module"/> exposes the TorchSharp module (parameters, <c>train()</c>/<c>eval()</c>, devices).
/// </remarks>
public sealed class LongNetModel : IDisposable
{
    private bool disposed;

    internal LongNetModel(FsModel inner, Tokenizer? tokenizer)
    {
        Inner = inner;
        Tokenizer = tokenizer;
        SegmentLengths = Interop.ReadOnly(inner.Config.Groups.Select(g => g.SegmentLength));
        Rates = Interop.ReadOnly(inner.Config.Groups.Select(g => g.DilationRate));
    }

    internal FsModel Inner { get; }

    /// <summary>Starts a builder with the core's defaults (see <see cref="LongNetModelBuilder"/>).</summary>
    /// <returns>A new <see cref="LongNetModelBuilder"/>.</returns>
    public static LongNetModelBuilder Create() => new();

    /// <summary>Imports a Hugging Face Llama or Mistral folder (config.json with model.safetensors, or an index and its shards; float32, float16 or bfloat16) as a model with dense attention that computes what the original does, in eval mode. The folder's tokenizer is not read: <see cref="Tokenizer"/> is null, so give token ids.</summary>
    /// <param name="folder">The Hugging Face folder.</param>
    /// <returns>The model; dispose it when done.</returns>
    /// <exception cref="ArgumentException"><paramref name="folder"/> is null or empty.</exception>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidDataException">The folder is not a supported checkpoint (the message names the file and the field or tensor).</exception>
    public static LongNetModel FromPretrained(string folder)
    {
        Checks.NotBlank(folder, nameof(folder));
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"folder '{folder}' does not exist.");
        }

        var loaded = global::LongNet.Interop.HuggingFace.load(folder, Microsoft.FSharp.Core.FuncConvert.FromFunc<global::LongNet.Modules.ModelConfig, global::LongNet.Modules.ModelConfig>(c => c));
        if (loaded.IsError)
        {
            throw new InvalidDataException(loaded.ErrorValue);
        }

        return new LongNetModel(loaded.ResultValue.Item1, null);
    }

    /// <summary>Writes this model as a Hugging Face folder (config.json as <c>LlamaForCausalLM</c> and model.safetensors with Hugging Face names) that Python tools load unchanged; the model must have the Llama layout (RMSNorm, SwiGLU, RoPE, no biases), as imported ones do.</summary>
    /// <param name="folder">The folder to write (created if missing; each file written atomically).</param>
    /// <param name="dtype">The stored dtype: float32 (default), float16 or bfloat16.</param>
    /// <exception cref="ArgumentException"><paramref name="folder"/> is null or empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dtype"/> is not float32, float16 or bfloat16.</exception>
    /// <exception cref="InvalidOperationException">The model does not have the Llama layout (the message names the setting).</exception>
    /// <exception cref="IOException">The folder or a file cannot be written.</exception>
    public void SavePretrained(string folder, ScalarType dtype = ScalarType.Float32)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        Checks.NotBlank(folder, nameof(folder));
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "dtype must be Float32, Float16 or BFloat16.");
        }

        var saved = global::LongNet.Interop.HuggingFace.save(Inner, folder, dtype);
        if (saved.IsError)
        {
            throw saved.ErrorValue.StartsWith("model.", StringComparison.Ordinal)
                ? new InvalidOperationException(saved.ErrorValue)
                : new IOException(saved.ErrorValue);
        }
    }

    /// <summary>Loads the model and tokenizer stored in a checkpoint (written by a <see cref="Trainer"/> or <c>longnet train</c>), in eval mode.</summary>
    /// <param name="checkpointPath">The checkpoint file.</param>
    /// <returns>The model, with its <see cref="Tokenizer"/>; dispose it when done.</returns>
    /// <exception cref="ArgumentException"><paramref name="checkpointPath"/> is null or empty.</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid checkpoint.</exception>
    public static LongNetModel Load(string checkpointPath)
    {
        Checks.NotBlank(checkpointPath, nameof(checkpointPath));
        if (!File.Exists(checkpointPath))
        {
            throw new FileNotFoundException($"checkpoint '{checkpointPath}' does not exist.", checkpointPath);
        }

        var loaded = FsCheckpoint.loadModel(checkpointPath);
        if (loaded.IsError)
        {
            throw new InvalidDataException(loaded.ErrorValue);
        }

        return new LongNetModel(loaded.ResultValue.Item1, new Tokenizer(loaded.ResultValue.Item2));
    }

    /// <summary>The tokenizer the model reads, or null for a model built without one (then only token ids can be generated).</summary>
    public Tokenizer? Tokenizer { get; }

    /// <summary>The vocabulary size V.</summary>
    public int VocabularySize => Inner.Config.VocabSize;

    /// <summary>The embedding width e.</summary>
    public int EmbeddingDim => Inner.Config.EmbedDim;

    /// <summary>The number of Transformer blocks.</summary>
    public int Layers => Inner.Config.Layers;

    /// <summary>Attention heads per block.</summary>
    public int Heads => Inner.Config.Heads;

    /// <summary>The hidden width of the feed-forward networks.</summary>
    public int FeedForwardDim => Inner.Config.FeedForwardDim;

    /// <summary>The segment length of each dilated-attention group.</summary>
    public IReadOnlyList<int> SegmentLengths { get; }

    /// <summary>The dilation rate of each group.</summary>
    public IReadOnlyList<int> Rates { get; }

    /// <summary>Whether the model is a causal decoder (true) or a non-causal encoder.</summary>
    public bool IsCausal => Inner.Config.Architecture.IsDecoder;

    /// <summary>The longest sequence the model accepts.</summary>
    public int MaxPositions => Inner.Config.MaxPositions;

    /// <summary>The number of trainable parameters (tied weights counted once).</summary>
    public long ParameterCount => Inner.ParameterCount;

    /// <summary>The TorchSharp module (parameters, train/eval mode, device moves); owned by this object.</summary>
    public nn.Module<Tensor, Tensor> Module => Inner;

    /// <summary>A builder holding this model's configuration and tokenizer (not its weights), to build a fresh variant.</summary>
    /// <returns>A <see cref="LongNetModelBuilder"/>.</returns>
    public LongNetModelBuilder ToBuilder() => new(LongNetModelBuilder.FromFSharp(Inner.Config, Tokenizer));

    /// <summary>Logits for every position: token ids <c>[batch, seq]</c> → <c>[batch, seq, vocabulary]</c>. Differentiable.</summary>
    /// <param name="tokens">Token ids <c>[batch, seq]</c>, int64, each in [0, <see cref="VocabularySize"/>), seq ≤ <see cref="MaxPositions"/>.</param>
    /// <returns>A new tensor, owned by the caller; the input is not disposed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tokens"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="tokens"/> is not 2-D int64, is empty or longer than <see cref="MaxPositions"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public Tensor Forward(Tensor tokens)
    {
        CheckTokens(tokens);
        return Inner.forward(tokens);
    }

    /// <summary>The representation after the final LayerNorm: token ids <c>[batch, seq]</c> → <c>[batch, seq, embed]</c> (an encoder's output).</summary>
    /// <param name="tokens">Token ids, as for <see cref="Forward"/>.</param>
    /// <returns>A new tensor, owned by the caller.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tokens"/> is null.</exception>
    /// <exception cref="ArgumentException">As for <see cref="Forward"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public Tensor Hidden(Tensor tokens)
    {
        CheckTokens(tokens);
        return Inner.Hidden(tokens, null);
    }

    /// <summary>A one-line description: widths, groups, architecture and parameter count.</summary>
    /// <returns>The description.</returns>
    public override string ToString()
    {
        var groups = string.Join(" ", SegmentLengths.Zip(Rates, (w, r) => $"({w},{r})"));
        return $"LongNetModel({(IsCausal ? "decoder" : "encoder")}, vocabulary {VocabularySize}, embed {EmbeddingDim}, {Layers} layers, "
            + $"{Heads} heads, feed-forward {FeedForwardDim}, groups {groups}, {ParameterCount:N0} parameters)";
    }

    /// <summary>Frees the model's weights.</summary>
    public void Dispose()
    {
        disposed = true;
        Inner.Dispose();
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);

    private void CheckTokens(Tensor? tokens)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(tokens);
        if (tokens.Dimensions != 2 || tokens.dtype != ScalarType.Int64)
        {
            throw new ArgumentException($"tokens must be 2-D [batch, seq] int64; got {tokens.Dimensions}-D {tokens.dtype}.", nameof(tokens));
        }

        if (tokens.shape[0] < 1 || tokens.shape[1] < 1)
        {
            throw new ArgumentException("tokens must hold at least one batch item and one position.", nameof(tokens));
        }

        if (tokens.shape[1] > MaxPositions)
        {
            throw new ArgumentException($"tokens has {tokens.shape[1]} positions, more than the model's MaxPositions {MaxPositions}.", nameof(tokens));
        }

        using var scope = NewDisposeScope();
        var low = tokens.min().item<long>();
        var high = tokens.max().item<long>();
        if (low < 0 || high >= VocabularySize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(tokens), low < 0 ? low : high, $"tokens must be ids in [0, {VocabularySize}), got {(low < 0 ? low : high)}.");
        }
    }
}
