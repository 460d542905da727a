/// The oracle: plain softmax attention over full score matrices, slow and obviously correct.
/// Every fast path is compared with it. Notation: b batch, h heads, n length, d head dim.
module LongNet.Dense

open TorchSharp

/// Dense attention `[b, h, n, d]` → (out `[b, h, n, d]`, lse `[b, h, n]`); causal: key ≤ query.
let attend
    (scale: float)
    (causal: bool)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    Attend.attend scale causal None q k v

/// Attention where key k counts `counts[h, q, k]` times in query q's softmax (0 = not seen):
/// out = Σ_k c·exp(s)·v / Σ_k c·exp(s). Rows with no key give 0. `counts`: `[h, n, n]` or `[n, n]`.
let attendWithCounts
    (scale: float)
    (counts: torch.Tensor)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor =
    let dtype =
        if q.dtype = torch.ScalarType.Float64 then
            torch.ScalarType.Float64
        else
            torch.ScalarType.Float32

    let qc, kc, vc = q.to_type dtype, k.to_type dtype, v.to_type dtype
    let counts = counts.to_type(dtype).``to`` q.device
    use scaleScalar = scale.ToScalar()
    let scores = qc.matmul(kc.transpose (-2L, -1L)).mul scaleScalar
    use zero = 0.0.ToScalar()
    let seen = counts.gt zero

    let logCounts =
        torch.where (seen, counts.clamp_min(1e-300).log(), torch.zeros_like counts)

    use fill = Attend.maskedScore.ToScalar()
    let scores = (scores + logCounts).masked_fill(seen.logical_not (), fill)

    let peak = scores.amax([| -1L |], true).detach()
    let weights = (scores - peak).exp() * seen.to_type dtype
    let total = weights.sum (-1L, true)
    let anySeen = total.gt zero
    let out = weights.matmul vc / torch.where (anySeen, total, torch.ones_like total)
    out.to_type q.dtype
