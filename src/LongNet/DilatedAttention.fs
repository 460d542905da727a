/// Dilated attention (LongNet, seed 000 §2.2): for every group (w, r) — segment, dilate, attend,
/// scatter — then mix the groups by their log-sum-exps.
/// Notation: b batch, h heads, n length, d head dim, w segment length, r dilation rate.
module LongNet.DilatedAttention

open TorchSharp

/// One group's contribution: out `[b, h, n, d]` (0 where uncovered) and lse `[b, h, n]` (−∞ where uncovered).
let group
    (config: DilatedConfig)
    (g: Group)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let heads, n, d = int q.shape.[1], q.shape.[2], int q.shape.[3]
    // A segment longer than the sequence is the sequence itself plus masked padding: clip it.
    // Keep r as configured even when r > n: head j's offset is j mod r (or its block) for the
    // configured r, and a head whose offset lands at or past n keeps no position in this group.
    let w = int (min (int64 g.SegmentLength) n)
    let r = g.DilationRate
    let offsets = Dilate.offsets config.Offsets heads r q.device
    let _, real = Dilate.positions w r n offsets

    let dilated (x: torch.Tensor) =
        Dilate.gather r offsets (Segment.split w x)

    let keyValid = if real.all().item<bool>() then None else Some real
    let scale = DilatedConfig.scaleFor config d

    let out, lse =
        Attend.attend scale config.Causal keyValid (dilated q) (dilated k) (dilated v)

    Scatter.scatter w r n offsets real out lse

/// Dilated attention with its global log-sum-exp: `[b, h, n, d]` q, k, v → (out `[b, h, n, d]`, lse `[b, h, n]`).
/// Validates the inputs first (shapes, dtypes, devices; NaN/Inf too when `checkInputs`).
let forwardWithLse (checkInputs: bool) (config: DilatedConfig) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) =
    Native.ensureLoaded () |> ignore
    Inputs.validateQkv checkInputs q k v
    use scope = torch.NewDisposeScope()
    let out, lse = config.Groups |> List.map (fun g -> group config g q k v) |> Mix.mix
    scope.MoveToOuter(out, lse) |> ignore
    out, lse

/// Dilated attention: `[b, h, n, d]` q, k, v → `[b, h, n, d]`. Differentiable (true gradient through the mixing).
let forward (config: DilatedConfig) (q: torch.Tensor) (k: torch.Tensor) (v: torch.Tensor) : torch.Tensor =
    let out, lse = forwardWithLse false config q k v
    lse.Dispose()
    out
