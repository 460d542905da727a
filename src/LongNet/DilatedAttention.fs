/// Dilated attention (LongNet: Ding et al. 2023, arXiv 2307.02486, §2.2): for every group (w, r) — segment, dilate, attend,
/// scatter — then mix the groups by their log-sum-exps.
/// Notation: b batch, h heads, n length, d head dim, w segment length, r dilation rate.
module LongNet.DilatedAttention

open TorchSharp

/// Which implementation computes the attention inside the blocks.
type Kernel =
    /// libtorch's fused kernels (no score matrices; exact custom backward). The default where supported.
    | Fused
    /// Explicit score matrices and autograd: the reference path, differentiable through the lse too.
    | Explicit

/// The kernel `forward` uses for these inputs: fused where libtorch has it for the dtype and device.
let defaultKernel (q: torch.Tensor) : Kernel =
    if Kernels.supports q then Fused else Explicit

/// One group's contribution with explicit attention: out `[b, h, n, d]` (0 where uncovered) and
/// lse `[b, h, n]` (−∞ where uncovered), both differentiable.
let group
    (config: DilatedConfig)
    (g: Group)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let layout =
        GroupLayout.create config.Offsets g (int q.shape.[1]) q.shape.[2] q.device

    let blocks = GroupLayout.gather layout
    let keyValid = if layout.AllReal then None else Some layout.Real
    let scale = DilatedConfig.scaleFor config (int q.shape.[3])

    let qBlocks = blocks q
    let rows = qBlocks.shape.[qBlocks.shape.Length - 2]

    // [h, 1, m, m]: broadcast over batch and segments of the `[b, h, s, m, m]` scores
    let bias =
        config.Bias
        |> Option.map (fun b ->
            BiasTables.blocks b (Array.init (int q.shape.[1]) int64) rows (int64 layout.R) q.dtype q.device)

    let out, lse =
        Attend.attendBiased scale config.Causal keyValid bias qBlocks (blocks k) (blocks v)

    Scatter.scatter layout.W layout.R layout.N layout.Offsets layout.Real out lse

/// Dilated attention with its global log-sum-exp, on the chosen kernel: `[b, h, n, d]` q, k, v →
/// (out `[b, h, n, d]`, lse `[b, h, n]`). Validates the inputs first (NaN/Inf too when `checkInputs`).
/// The output is differentiable on both kernels; the lse only on `Explicit`.
let forwardUsing
    (kernel: Kernel)
    (checkInputs: bool)
    (config: DilatedConfig)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    =
    Native.ensureLoaded () |> ignore
    Inputs.validateQkv checkInputs q k v

    match config.Bias with
    | Some bias ->
        match DistanceBias.validate (Some(int q.shape.[1])) bias with
        | Error e -> invalidArg "config" e.Message
        | Ok _ -> ()
    | None -> ()

    use scope = torch.NewDisposeScope()

    let out, lse =
        match kernel with
        | Fused when not (Kernels.supports q) ->
            invalidArg "kernel" $"the fused kernels do not serve {q.dtype} on {q.device}; use Explicit."
        | Fused -> FusedDilated.apply config q k v
        | Explicit -> config.Groups |> List.map (fun g -> group config g q k v) |> Mix.mix

    scope.MoveToOuter(out, lse) |> ignore
    out, lse

/// The kernel for these inputs and configuration: fused where libtorch has it, except for a distance
/// bias on CUDA, whose memory-efficient kernel wants a full-size, aligned bias of the query's dtype
/// (not yet validated on a GPU): the explicit path computes it exactly there.
let kernelFor (config: DilatedConfig) (q: torch.Tensor) : Kernel =
    if config.Bias.IsSome && q.device_type = DeviceType.CUDA then
        Explicit
    else
        defaultKernel q

/// Dilated attention with its global log-sum-exp on the default kernel (see `forwardUsing`, `kernelFor`).
let forwardWithLse (checkInputs: bool) (config: DilatedConfig) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) =
    forwardUsing (kernelFor config q) checkInputs config q k v

/// Dilated attention: `[b, h, n, d]` q, k, v → `[b, h, n, d]`. Differentiable (true gradient through the mixing).
let forward (config: DilatedConfig) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) : torch.Tensor =
    let out, lse = forwardWithLse false config q k v
    lse.Dispose()
    out
