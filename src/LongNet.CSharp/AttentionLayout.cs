using System;
using static TorchSharp.torch;
using FsInputs = global::LongNet.Inputs;

namespace LongNet.CSharp;

/// <summary>
/// Conversions between the two tensor layouts of attention: <c>[batch, seq, heads, headDim]</c> (files,
/// flash-attn, most model code) and <c>[batch, heads, seq, headDim]</c> (what <see cref="DilatedAttention"/> takes).
/// </summary>
public static class AttentionLayout
{
    /// <summary><c>[batch, seq, heads, headDim]</c> → <c>[batch, heads, seq, headDim]</c>, as a view (no copy).</summary>
    /// <param name="tensor">A 4-D tensor.</param>
    /// <returns>A new tensor object viewing the same storage; dispose it like any other.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tensor"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="tensor"/> is not 4-D.</exception>
    public static Tensor ToBatchHeadsSeq(Tensor tensor) => FsInputs.bshdToBhsd(Check(tensor));

    /// <summary><c>[batch, heads, seq, headDim]</c> → <c>[batch, seq, heads, headDim]</c>, as a view (no copy).</summary>
    /// <param name="tensor">A 4-D tensor.</param>
    /// <returns>A new tensor object viewing the same storage; dispose it like any other.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="tensor"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="tensor"/> is not 4-D.</exception>
    public static Tensor ToBatchSeqHeads(Tensor tensor) => FsInputs.bhsdToBshd(Check(tensor));

    private static Tensor Check(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (tensor.Dimensions != 4)
        {
            throw new ArgumentException($"tensor must be 4-D; got {tensor.Dimensions}-D.", nameof(tensor));
        }

        return tensor;
    }
}
