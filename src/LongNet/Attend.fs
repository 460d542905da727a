/// Step 4 of dilated attention: softmax attention inside each block, returning the output and the
/// log-sum-exp of the scores (needed to mix groups exactly).
/// Notation: `[…, m, d]` — any leading block dims, m rows per block, d head dim.
module LongNet.Attend

open TorchSharp

/// A large negative finite score for masked keys: keeps fully masked rows finite (they are discarded later).
let maskedScore = -1.0e30

let private computeDtype (dtype: torch.ScalarType) =
    if dtype = torch.ScalarType.Float64 then
        torch.ScalarType.Float64
    else
        torch.ScalarType.Float32

/// Attention of q over k, v inside each block with an additive score bias (broadcastable to the
/// `[…, m, m']` scores, added after scaling): out `[…, m, d]` and lse `[…, m]` = log Σ_k exp(score).
/// `keyValid` (bool, broadcastable to `[…, m']`) masks padding keys; `causal` lets slot t see slots ≤ t.
/// Scores are computed in float32 (float64 for float64 inputs); out has the inputs' dtype, lse the compute dtype.
/// Differentiable through both results (the log-sum-exp included).
let attendBiased
    (scale: float)
    (causal: bool)
    (keyValid: torch.Tensor option)
    (bias: torch.Tensor option)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let dtype = computeDtype q.dtype
    let qc, kc, vc = q.to_type dtype, k.to_type dtype, v.to_type dtype
    let m = q.shape.[q.shape.Length - 2]
    use scaleScalar = scale.ToScalar()
    let scores = qc.matmul(kc.transpose (-2L, -1L)).mul scaleScalar

    let scores =
        match bias with
        | Some b -> scores + b.to_type dtype
        | None -> scores

    let allowed =
        let causalMask =
            if causal then
                Some(torch.ones(m, m, dtype = torch.ScalarType.Bool, device = q.device).tril())
            else
                None

        match keyValid, causalMask with
        | None, None -> None
        | Some valid, None -> Some(valid.unsqueeze -2L)
        | None, Some c -> Some c
        | Some valid, Some c -> Some((valid.unsqueeze -2L).logical_and c)

    // the fill value held as a Scalar across the call (a temporary could be freed by a GC mid-call)
    use fill = maskedScore.ToScalar()

    let scores =
        match allowed with
        | Some a -> scores.masked_fill (a.logical_not (), fill)
        | None -> scores

    let lse = scores.logsumexp (-1L, true)
    let probabilities = (scores - lse).exp()
    let out = probabilities.matmul vc
    out.to_type q.dtype, lse.squeeze -1L

/// Attention of q over k, v inside each block (`attendBiased` without a bias).
let attend
    (scale: float)
    (causal: bool)
    (keyValid: torch.Tensor option)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    attendBiased scale causal keyValid None q k v
