using System;
using TorchSharp;
using static TorchSharp.torch;
using FsMultihead = global::LongNet.Modules.MultiheadDilatedAttention;

namespace LongNet.CSharp;

/// <summary>
/// Multi-head dilated self-attention over <c>[batch, seq, embed]</c>: query, key, value and output
/// projections around a <see cref="DilatedAttention"/>, with optional RoPE or xPos on queries and keys,
/// Magneto's sub-LN before the output projection and dropout on the output. A drop-in for
/// <c>torch.nn.MultiheadAttention(batch_first: true)</c> self-attention.
/// </summary>
/// <remarks>
/// Build one with <see cref="Create"/>. It owns the projection weights (native memory): dispose it when
/// done. <see cref="Module"/> exposes the TorchSharp module for parameters, <c>train()</c>/<c>eval()</c>,
/// devices and optimizers. Attention runs on the default kernel (fused where libtorch has it).
/// </remarks>
public sealed class MultiheadDilatedAttention : IDisposable
{
    private readonly FsMultihead inner;

    internal MultiheadDilatedAttention(FsMultihead inner, MultiheadDilatedAttentionBuilder.Settings settings, DilatedAttention attention)
    {
        this.inner = inner;
        Built = settings;
        Attention = attention;
    }

    internal MultiheadDilatedAttentionBuilder.Settings Built { get; }

    /// <summary>Starts a builder with the defaults: no positions, no sub-LN, no dropout, projections with biases.</summary>
    /// <returns>A new <see cref="MultiheadDilatedAttentionBuilder"/>; call <c>EmbeddingDim</c>, <c>Heads</c> and <c>Attention</c> before <c>Build</c>.</returns>
    public static MultiheadDilatedAttentionBuilder Create() => new();

    /// <summary>The embedding width e.</summary>
    public int EmbeddingDim => Built.EmbeddingDim!.Value;

    /// <summary>The number of heads h.</summary>
    public int Heads => Built.Heads!.Value;

    /// <summary>The width of one head, e / h.</summary>
    public int HeadDim => inner.HeadDim;

    /// <summary>The dilated attention between the projections.</summary>
    public DilatedAttention Attention { get; }

    /// <summary>The position scheme applied to queries and keys.</summary>
    public PositionEncoding Position => Built.Position;

    /// <summary>The dropout probability on the output (training mode only).</summary>
    public double Dropout => Built.Dropout;

    /// <summary>The TorchSharp module (parameters, train/eval mode, device moves); owned by this object.</summary>
    public nn.Module<Tensor, Tensor> Module => inner;

    /// <summary>A builder that starts from this layer's settings (without its weights).</summary>
    /// <returns>A <see cref="MultiheadDilatedAttentionBuilder"/>.</returns>
    public MultiheadDilatedAttentionBuilder ToBuilder() => new(Built);

    /// <summary>Self-attention: <c>[batch, seq, embed]</c> → <c>[batch, seq, embed]</c> at positions 0 … seq−1. Differentiable.</summary>
    /// <param name="input">The sequence <c>[batch, seq, embed]</c> (floating point, on the module's device).</param>
    /// <returns>A new tensor <c>[batch, seq, embed]</c>, owned by the caller; the input is not disposed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="input"/> is not 3-D with last dimension <see cref="EmbeddingDim"/>, or is empty.</exception>
    /// <exception cref="ObjectDisposedException">The layer was disposed.</exception>
    public Tensor Forward(Tensor input)
    {
        CheckInput(input, nameof(input));
        return inner.forward(input);
    }

    /// <summary>
    /// Attention with separate query, key and value inputs of one shape <c>[batch, seq, embed]</c> (the
    /// <c>torch.nn.MultiheadAttention</c> call) → <c>[batch, seq, embed]</c>.
    /// </summary>
    /// <param name="query">Queries <c>[batch, seq, embed]</c>.</param>
    /// <param name="key">Keys, of the query's shape.</param>
    /// <param name="value">Values, of the query's shape.</param>
    /// <returns>A new tensor <c>[batch, seq, embed]</c>, owned by the caller.</returns>
    /// <exception cref="ArgumentNullException">An input is null.</exception>
    /// <exception cref="ArgumentException">An input is not 3-D with last dimension <see cref="EmbeddingDim"/>, or differs from the query in shape.</exception>
    /// <exception cref="ObjectDisposedException">The layer was disposed.</exception>
    public Tensor Forward(Tensor query, Tensor key, Tensor value)
    {
        CheckInput(query, nameof(query));
        CheckInput(key, nameof(key));
        CheckInput(value, nameof(value));
        if (!key.shape.AsSpan().SequenceEqual(query.shape))
        {
            throw new ArgumentException($"key must have the query's shape [{string.Join(", ", query.shape)}]; got [{string.Join(", ", key.shape)}].", nameof(key));
        }

        if (!value.shape.AsSpan().SequenceEqual(query.shape))
        {
            throw new ArgumentException($"value must have the query's shape [{string.Join(", ", query.shape)}]; got [{string.Join(", ", value.shape)}].", nameof(value));
        }

        return inner.Forward(query, key, value);
    }

    /// <summary>Frees the layer's weights.</summary>
    public void Dispose()
    {
        disposed = true;
        inner.Dispose();
    }

    private bool disposed;

    private void CheckInput(Tensor? tensor, string parameter)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentNullException.ThrowIfNull(tensor, parameter);
        if (tensor.Dimensions != 3 || tensor.shape[2] != EmbeddingDim)
        {
            throw new ArgumentException(
                $"{parameter} must be [batch, seq, {EmbeddingDim}]; got [{string.Join(", ", tensor.shape)}].", parameter);
        }

        if (tensor.shape[0] < 1 || tensor.shape[1] < 1)
        {
            throw new ArgumentException($"{parameter} must hold at least one batch item and one position.", parameter);
        }

        if (!tensor.is_floating_point())
        {
            throw new ArgumentException($"{parameter} must be floating point; got {tensor.dtype}.", parameter);
        }
    }
}
