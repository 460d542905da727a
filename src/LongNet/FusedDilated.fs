/// Dilated attention on libtorch's fused kernels, with the exact gradient of the mixture.
/// Forward: each group's blocks go through one fused call that returns (out, lse); the groups are
/// mixed by `Mix.mix`. Backward: for each group, the fused backward is called with the upstream
/// gradient, the *mixed* output and the *global* log-sum-exp, so the kernel's softmax is the union
/// softmax over all groups' keys; summing the groups' dq (and scattering dk, dv) is the true gradient,
/// mixing weights included. No score matrix is materialised in either direction.
/// Notation: b batch, h heads, n length, d head dim.
module LongNet.FusedDilated

open System.Collections.Generic
open TorchSharp

let private layoutsOf (config: DilatedConfig) (q: torch.Tensor) =
    config.Groups
    |> List.map (fun g -> GroupLayout.create config.Offsets g (int q.shape.[1]) q.shape.[2] q.device)

// Non-causal groups need the padding keys masked; causal ones never see them (padding slots come last).
let private maskOf (config: DilatedConfig) (layout: GroupLayout.Layout) (q: torch.Tensor) =
    if config.Causal then
        None
    else
        GroupLayout.keyMask layout q.dtype

/// The forward pass without autograd: `[b, h, n, d]` q, k, v → (out `[b, h, n, d]`, lse `[b, h, n]`).
let forwardNoGrad
    (config: DilatedConfig)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let scale = DilatedConfig.scaleFor config (int q.shape.[3])
    let heads = q.shape.[1]

    layoutsOf config q
    |> List.map (fun layout ->
        let blocks x =
            GroupLayout.flatten (GroupLayout.gather layout x)

        let out, lse =
            Kernels.forward scale config.Causal (maskOf config layout q) (blocks q) (blocks k) (blocks v)

        let out = GroupLayout.unflatten heads out
        let lse = lse.reshape (out.shape.[0], out.shape.[1], out.shape.[2], out.shape.[3])
        Scatter.scatter layout.W layout.R layout.N layout.Offsets layout.Real out lse)
    |> Mix.mix

/// The exact backward: gradients of q, k, v for upstream gradient `dout`, given the mixed output and
/// global log-sum-exp of the forward pass.
let backward
    (config: DilatedConfig)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    (out: torch.Tensor)
    (lse: torch.Tensor)
    (dout: torch.Tensor)
    =
    let scale = DilatedConfig.scaleFor config (int q.shape.[3])
    let heads = q.shape.[1]
    // Positions no group covers have lse −∞ and no gradient; any finite stand-in keeps the kernel finite.
    let lseFinite =
        (torch.where (lse.isfinite (), lse, torch.zeros_like lse)).unsqueeze -1L

    let dout = dout.to_type q.dtype
    let zero () = torch.zeros_like q

    layoutsOf config q
    |> List.fold
        (fun (dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) layout ->
            let blocks x =
                GroupLayout.flatten (GroupLayout.gather layout x)

            let lseBlocks = (blocks lseFinite).squeeze -1L

            let gq, gk, gv =
                Kernels.backward
                    scale
                    config.Causal
                    (maskOf config layout q)
                    (blocks dout)
                    (blocks q)
                    (blocks k)
                    (blocks v)
                    (blocks out)
                    lseBlocks

            let back (g: torch.Tensor) =
                GroupLayout.scatter layout (GroupLayout.unflatten heads g)

            dq + back gq, dk + back gk, dv + back gv)
        (zero (), zero (), zero ())

/// The autograd node: inputs q, k, v and the config; outputs the mixed output and the lse (no gradient).
type DilatedAttentionFunction() =
    inherit torch.autograd.MultiTensorFunction<DilatedAttentionFunction>()

    /// The node's name in autograd graphs.
    override _.Name = "DilatedAttention"

    /// Runs the fused forward and saves what the backward needs.
    override _.forward(ctx, vars) =
        let q, k, v =
            vars.[0] :?> torch.Tensor, vars.[1] :?> torch.Tensor, vars.[2] :?> torch.Tensor

        let config = vars.[3] :?> DilatedConfig
        let out, lse = forwardNoGrad config q k v
        ctx.save_data ("config", config)
        // The lse gets no gradient; leaving undefined gradients undefined avoids placeholder tensors.
        ctx.set_materialize_grads false
        ctx.save_for_backward (List [ q.detach (); k.detach (); v.detach (); out.detach (); lse.detach () ])
        // Not `ctx.mark_non_differentiable`: with it, a garbage collection during `apply` (any thread)
        // crashes the process (segfault, reproduced with a thread calling GC.Collect beside the call).
        // The backward ignores the lse's gradient and `apply` detaches the lse it returns instead.
        List [ out; lse ]

    /// Computes dq, dk, dv with the fused backward kernels.
    override _.backward(ctx, grads) =
        let saved = ctx.get_saved_variables ()
        let config = ctx.get_data "config" :?> DilatedConfig

        let dq, dk, dv =
            backward config saved.[0] saved.[1] saved.[2] saved.[3] saved.[4] grads.[0]

        List [ dq; dk; dv; null ]

/// Fused dilated attention with autograd: (out `[b, h, n, d]`, lse `[b, h, n]` without gradient).
let apply (config: DilatedConfig) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) : torch.Tensor * torch.Tensor =
    let results = DilatedAttentionFunction.apply (q, k, v, box config)
    results.[0], results.[1].detach()
