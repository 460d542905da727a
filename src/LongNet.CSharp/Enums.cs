namespace LongNet.CSharp;

/// <summary>Which local offset each head uses inside a segment of a group with dilation rate r.</summary>
public enum HeadOffsets
{
    /// <summary>Head j uses offset j mod r (the LongNet paper). The default.</summary>
    Paper = 0,

    /// <summary>Head j uses offset j / ceil(H / r): contiguous blocks of heads (torchscale's checkpoints).</summary>
    Blocks = 1,
}

/// <summary>Which implementation computes the attention inside the sparse blocks.</summary>
public enum AttentionKernel
{
    /// <summary>
    /// <see cref="Fused"/> where libtorch has fused kernels for the inputs' dtype and device, otherwise
    /// <see cref="Explicit"/>. The default.
    /// </summary>
    Auto = 0,

    /// <summary>
    /// libtorch's fused kernels: no score matrices, exact custom backward. The output is differentiable;
    /// the log-sum-exp is not.
    /// </summary>
    Fused = 1,

    /// <summary>
    /// Explicit score matrices and autograd: the reference path, differentiable through the log-sum-exp too.
    /// </summary>
    Explicit = 2,
}

/// <summary>Whether the attention graph of a plan was searched, and what was found.</summary>
public enum Connectivity
{
    /// <summary>The diameter was not computed (the plan was asked for without it).</summary>
    NotComputed = 0,

    /// <summary>Every position reaches every other (causal: every later) position; the diameter is finite.</summary>
    Connected = 1,

    /// <summary>Some position never reaches another; the diameter is infinite.</summary>
    Disconnected = 2,
}
