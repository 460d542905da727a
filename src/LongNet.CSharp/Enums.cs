namespace LongNet.CSharp;

/// <summary>An attention projection that can carry a low-rank adapter (LoRA).</summary>
public enum LoraProjection
{
    /// <summary>The query projection.</summary>
    Query,

    /// <summary>The key projection.</summary>
    Key,

    /// <summary>The value projection.</summary>
    Value,

    /// <summary>The output projection.</summary>
    Output,
}

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

/// <summary>The feed-forward network of each Transformer block.</summary>
public enum FeedForwardKind
{
    /// <summary>w₂(SiLU(w₁x) ⊙ w₃x) (Shazeer 2020, LLaMA): three projections. The default.</summary>
    SwiGlu = 0,

    /// <summary>fc₂(GELU(fc₁x)) (GPT-2, torchscale): two projections.</summary>
    Gelu = 1,
}

/// <summary>Which relative-position scheme attention applies to queries and keys.</summary>
public enum PositionEncoding
{
    /// <summary>No position information beyond the causal mask.</summary>
    None = 0,

    /// <summary>Rotary position embeddings (RoPE) with base θ (default 10000).</summary>
    Rope = 1,

    /// <summary>xPos: rotary embeddings whose amplitude decays with distance (scale base γ, default 512).</summary>
    XPos = 2,

    /// <summary>No rotation: an additive score bias −slopeₕ·f(distance) favouring nearer keys (see <see cref="DistanceBiasForm"/>).</summary>
    DistanceBias = 3,
}

/// <summary>How a distance bias grows with the distance δ between a query and a key.</summary>
public enum DistanceBiasForm
{
    /// <summary>−slope·ln(1 + δ): nearer keys favoured, far keys still reachable by content. The default.</summary>
    Logarithmic = 0,

    /// <summary>−slope·δ (ALiBi).</summary>
    Linear = 1,
}

/// <summary>A named starting configuration of a model and its training run.</summary>
public enum Preset
{
    /// <summary>e = 32, 2 layers, 2 heads, groups (16,1) (32,2) (64,4), 60 steps of 4 × 64 tokens: seconds to train.</summary>
    Tiny = 0,

    /// <summary>e = 128, 3 layers, 4 heads, groups (64,1) (128,2) (256,4), up to 1200 steps of 16 × 256 tokens.</summary>
    Demo = 1,

    /// <summary>e = 384, 6 layers, 6 heads, groups (128,1) … (1024,8), 5000 steps of 16 × 1024 tokens (a GPU run).</summary>
    Small = 2,
}

/// <summary>The number format of weights and activations during training.</summary>
public enum TrainingPrecision
{
    /// <summary>float32 everywhere. The default.</summary>
    Float32 = 0,

    /// <summary>bfloat16 weights and activations; float32 master weights, optimizer moments and loss.</summary>
    BFloat16 = 1,
}

/// <summary>Where a <see cref="Trainer"/>'s training sequences come from.</summary>
public enum TrainingTask
{
    /// <summary>Random windows of a text corpus: language modelling. The default.</summary>
    TextWindows = 0,

    /// <summary>Freshly generated passkey prompts followed by their answers: retrieval practice; no corpus needed.</summary>
    PasskeySamples = 1,
}

/// <summary>What a benchmark cell times.</summary>
public enum BenchmarkMode
{
    /// <summary>The forward pass ("fwd" in the JSON).</summary>
    Forward = 0,

    /// <summary>The forward and the backward pass ("fwdbwd" in the JSON).</summary>
    ForwardBackward = 1,
}

/// <summary>How select-and-merge attention ranks and weights the candidate key blocks.</summary>
public enum BlockSelectionRule
{
    /// <summary>The paper's rule: the top-k blocks by mean query · mean key; the choice carries no gradient.</summary>
    Correlation,

    /// <summary>The same ranking, and the chosen blocks' scores also weight them, so training shapes the scores.</summary>
    Trainable,
}
