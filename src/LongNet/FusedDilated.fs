/// Dilated attention on libtorch's fused kernels, with the exact gradient of the mixture.
/// Forward: each group's blocks, as strided views of the inputs (`BlockViews`), go through fused calls
/// that return (out, lse), merged into running (out, lse) — the `Mix.mix` rule, applied online. Backward: for each group, the fused backward is called with the upstream
/// gradient, the *mixed* output and the *global* log-sum-exp, so the kernel's softmax is the union
/// softmax over all groups' keys; summing the groups' dq (and scattering dk, dv) is the true gradient,
/// mixing weights included. No score matrix is materialised in either direction.
/// Notation: b batch, h heads, n length, d head dim.
module LongNet.FusedDilated

open System.Collections.Generic
open TorchSharp

/// The dtype running outputs and log-sum-exps are kept in: float64 for float64 inputs, else float32.
let private accumulatorDtype (q: torch.Tensor) =
    if q.dtype = torch.ScalarType.Float64 then
        torch.ScalarType.Float64
    else
        torch.ScalarType.Float32

/// The additive distance bias of a part's blocks `[heads, 1, rows, rows]`, or none.
let private partBias (config: DilatedConfig) (part: BlockViews.Part) (q: torch.Tensor) =
    config.Bias
    |> Option.map (fun bias ->
        let heads =
            Array.init (int part.HeadCount) (fun i -> part.HeadStart + int64 i * part.HeadStep)

        BiasTables.blocks bias heads part.Rows part.Rate q.dtype q.device)

/// Every (part, batch item) of every group: the unit one fused kernel call handles.
let private calls (config: DilatedConfig) (q: torch.Tensor) =
    let heads, n = int q.shape.[1], q.shape.[2]

    [
        for g in config.Groups do
            for part in BlockViews.parts config.Offsets g heads n do
                for item in 0L .. q.shape.[0] - 1L -> part, item
    ]

/// The forward pass without autograd: `[b, h, n, d]` q, k, v → (out `[b, h, n, d]`, lse `[b, h, n]`).
/// Each block family is attended through strided views of the inputs and merged in place into running
/// (out, lse): lse ← logaddexp(lse, lse_part); out ← out·exp(lse_old − lse) + out_part·exp(lse_part − lse).
let forwardNoGrad
    (config: DilatedConfig)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let scale = DilatedConfig.scaleFor config (int q.shape.[3])
    let q, k, v = q.contiguous (), k.contiguous (), v.contiguous ()
    let dtype = accumulatorDtype q
    let out = torch.zeros (q.shape, dtype = dtype, device = q.device)

    use negativeInfinity = System.Double.NegativeInfinity.ToScalar()

    let lse =
        torch.full ([| q.shape.[0]; q.shape.[1]; q.shape.[2] |], negativeInfinity, dtype = dtype, device = q.device)

    for part, item in calls config q do
        use _scope = torch.NewDisposeScope()
        let view = BlockViews.view part item

        let partOut, partLse =
            Kernels.forward scale config.Causal (partBias config part q) (view q) (view k) (view v)

        let runningOut, runningLse = view out, BlockViews.viewRows part item lse
        let merged = torch.logaddexp (runningLse, partLse)
        let keep = (runningLse - merged).exp_().unsqueeze -1L
        let add = (partLse - merged).exp_().unsqueeze -1L

        TensorOps.plusInPlace (runningOut.mul_ keep) (partOut.to_type dtype * add)
        |> ignore

        runningLse.copy_ merged |> ignore

    out.to_type q.dtype, lse

/// The exact backward: gradients of q, k, v for upstream gradient `dout`, given the mixed output and
/// global log-sum-exp of the forward pass. Each block family's fused backward runs on strided views
/// with the global (out, lse), and its gradients are added in place through the same views.
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

    let q, k, v, out =
        q.contiguous (), k.contiguous (), v.contiguous (), out.contiguous ()

    let dout = dout.to_type(q.dtype).contiguous()
    // Positions no group covers have lse −∞ and no gradient; any finite stand-in keeps the kernel finite.
    let lseFinite = torch.where(lse.isfinite (), lse, torch.zeros_like lse).contiguous()
    let dtype = accumulatorDtype q

    let dq, dk, dv =
        torch.zeros (q.shape, dtype = dtype, device = q.device),
        torch.zeros (q.shape, dtype = dtype, device = q.device),
        torch.zeros (q.shape, dtype = dtype, device = q.device)

    for part, item in calls config q do
        use _scope = torch.NewDisposeScope()
        let view = BlockViews.view part item

        let gq, gk, gv =
            Kernels.backward
                scale
                config.Causal
                (partBias config part q)
                (view dout)
                (view q)
                (view k)
                (view v)
                (view out)
                (BlockViews.viewRows part item lseFinite)

        TensorOps.plusInPlace (view dq) (gq.to_type dtype) |> ignore
        TensorOps.plusInPlace (view dk) (gk.to_type dtype) |> ignore
        TensorOps.plusInPlace (view dv) (gv.to_type dtype) |> ignore

    dq.to_type q.dtype, dk.to_type q.dtype, dv.to_type q.dtype

/// The autograd node: inputs q, k, v, the config and a cell that receives the lse; output the mixed
/// output. The lse leaves through the cell, not as a second output: an unused second output needs either
/// materialised zero gradients (TorchSharp then reads the disposed output and fails inside the native
/// callback) or `set_materialize_grads false` (TorchSharp then leaves one tensor per backward undisposed).
type DilatedAttentionFunction() =
    inherit torch.autograd.SingleTensorFunction<DilatedAttentionFunction>()

    /// The node's name in autograd graphs.
    override _.Name = "DilatedAttention"

    /// Runs the fused forward, hands the lse to the cell and saves what the backward needs.
    override _.forward(ctx, vars) =
        let q, k, v =
            vars.[0] :?> torch.Tensor, vars.[1] :?> torch.Tensor, vars.[2] :?> torch.Tensor

        let config = vars.[3] :?> DilatedConfig
        let lseCell = vars.[4] :?> torch.Tensor ref
        let out, lse = forwardNoGrad config q k v
        ctx.save_data ("config", config)
        ctx.save_for_backward (List [ q.detach (); k.detach (); v.detach (); out.detach (); lse.detach () ])
        // Not `ctx.mark_non_differentiable`: with it, a garbage collection during `apply` (any thread)
        // crashes the process (segfault, reproduced with a thread calling GC.Collect beside the call).
        lseCell.Value <- lse.detach ()
        out

    /// Computes dq, dk, dv with the fused backward kernels.
    override _.backward(ctx, grad) =
        let saved = ctx.get_saved_variables ()
        let config = ctx.get_data "config" :?> DilatedConfig

        let dq, dk, dv =
            backward config saved.[0] saved.[1] saved.[2] saved.[3] saved.[4] grad

        List [ dq; dk; dv; null; null ]

/// Fused dilated attention with autograd: (out `[b, h, n, d]`, lse `[b, h, n]` without gradient).
let apply (config: DilatedConfig) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) : torch.Tensor * torch.Tensor =
    let lseCell = ref null
    let out = DilatedAttentionFunction.apply (q, k, v, box config, box lseCell)
    out, lseCell.Value
