/// Mixing the groups: out = Σ_g out_g · exp(lse_g) / Σ_g exp(lse_g), per position, over the groups
/// that cover it — exactly one softmax over the multiset union of the groups' keys.
/// Notation: b batch, h heads, n length, d head dim, g groups.
module LongNet.Mix

open TorchSharp

/// Mixes per-group outputs `[b, h, n, d]` by their log-sum-exps `[b, h, n]` (−∞ where a group does not
/// cover a position). Returns the mixed output `[b, h, n, d]` and the global log-sum-exp `[b, h, n]`.
/// A position no group covers gets output 0 and lse −∞, never NaN. Gradients flow through the weights.
let mix (groups: (torch.Tensor * torch.Tensor) list) : torch.Tensor * torch.Tensor =
    match groups with
    | [] -> invalidArg "groups" "mix needs at least one group."
    | _ ->
        let lses = torch.stack (groups |> List.map snd, 0L) // [g, b, h, n]
        let outs = torch.stack (groups |> List.map fst, 0L) // [g, b, h, n, d]
        // The stabiliser cancels in the ratio, so it carries no gradient.
        let peak = lses.detach().amax([| 0L |], false)
        let covered = peak.isfinite ()
        let peak = torch.where (covered, peak, torch.zeros_like peak)
        let weights = (lses - peak).exp() // [g, b, h, n]; 0 where a group does not cover
        let total = weights.sum 0L
        let safeTotal = torch.where (covered, total, torch.ones_like total)

        let mixed =
            (weights.unsqueeze(-1L).to_type outs.dtype * outs).sum 0L
            / safeTotal.unsqueeze(-1L).to_type outs.dtype

        let lse =
            torch.where (
                covered,
                TensorOps.plus (safeTotal.log ()) peak,
                torch.full_like (peak, System.Double.NegativeInfinity)
            )

        mixed, lse
