/// Sequence-parallel dilated attention (LongNet: Ding et al. 2023, arXiv 2307.02486, §3): each rank holds a contiguous slice of the
/// sequence (see `ShardPlan`); a group whose segments lie inside one slice is computed locally; for a
/// segment that spans ranks, each rank sends its *dilated* keys/values (the kept rows of each head) to
/// exactly the ranks the segment spans, attends its own queries to all kept keys of the segment, and
/// the groups are mixed by their log-sum-exps as in the single-process path. Causal attention keeps each
/// rank's own keys (and receives only earlier ranks' rows). The result equals
/// `DilatedAttention.forwardUsing Explicit` on the whole sequence, outputs and gradients.
/// Autograd: the whole pass is ordinary differentiable tensor code except one exchange node, whose
/// backward sends each received row's gradient back to its owner (which sums it into its keys/values).
/// Every rank must run the forward — and, when training, the backward — together, with the same config.
/// Notation: b batch, h heads, l local length, d head dim, s segments, mq query slots, m key slots.
module LongNet.Distributed.SequenceParallel

open System.Collections.Generic
open TorchSharp
open LongNet

// A Scalar held for the process: a temporary could be freed by a GC during the native call.
let private negativeInfinity = lazy (System.Double.NegativeInfinity.ToScalar())

/// The autograd node of the row exchange: forward all-to-all of rows, backward the reverse all-to-all
/// of their gradients. Inputs: rows `[Σ sendCounts, e]`, the communicator, send counts, receive counts.
type ExchangeFunction() =
    inherit torch.autograd.MultiTensorFunction<ExchangeFunction>()

    /// The node's name in autograd graphs.
    override _.Name = "SequenceParallelExchange"

    /// Sends the rows to their ranks and returns the rows received.
    override _.forward(ctx, vars) =
        let rows = vars.[0] :?> torch.Tensor
        let comm = vars.[1] :?> ICommunicator
        let sendCounts = vars.[2] :?> int[]
        let receiveCounts = vars.[3] :?> int[]
        ctx.save_data ("comm", comm)
        ctx.save_data ("sendCounts", sendCounts)
        ctx.save_data ("receiveCounts", receiveCounts)
        List [ Collectives.allToAllRows comm rows sendCounts receiveCounts ]

    /// Sends every received row's gradient back to the rank that sent the row.
    override _.backward(ctx, grads) =
        let comm = ctx.get_data "comm" :?> ICommunicator
        let sendCounts = ctx.get_data "sendCounts" :?> int[]
        let receiveCounts = ctx.get_data "receiveCounts" :?> int[]
        let back = Collectives.allToAllRows comm grads.[0] receiveCounts sendCounts
        List [ back; null; null; null ]

let private longs (values: int64[]) (shape: int64[]) (device: torch.Device) =
    torch.tensor(values, device = device).view shape

/// The attention of one group on this rank: out `[b, h, l, d]` (0 where the group has no query here)
/// and lse `[b, h, l]` (−∞ there), from q `[b, h, l, d]` and the key/value source `[b, rows, 2d]`.
let private attendGroup
    (plan: ShardPlan.Shard)
    (shard: ShardPlan.GroupShard)
    (scale: float)
    (q: torch.Tensor)
    (source: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let b, h, l, d = q.shape.[0], q.shape.[1], q.shape.[2], q.shape.[3]
    let s, mq, m = int64 shard.Segments, int64 shard.QuerySlots, int64 shard.KeySlots
    let device = q.device
    let queryIndex = longs shard.QueryIndex [| h; s; mq |] device
    let queryPosition = longs shard.QueryPosition [| h; s; mq |] device
    let keySource = longs shard.KeySource [| h; s; m |] device
    let keyPosition = longs shard.KeyPosition [| h; s; m |] device
    let queryValid = queryIndex.ge (torch.tensor 0L)
    let keyValid = keySource.ge (torch.tensor 0L)

    let allowed =
        let both = queryValid.unsqueeze(-1L).logical_and(keyValid.unsqueeze -2L)

        if plan.Causal then
            both.logical_and (keyPosition.unsqueeze(-2L).le(queryPosition.unsqueeze -1L))
        else
            both

    // Empty slots read row 0 and are masked (keys) or dropped (queries). An owned Scalar: a temporary
    // one may be freed by a concurrent collection during the call (see TensorOps).
    use zero = 0L.ToScalar()

    let qIndex =
        queryIndex.clamp_min(zero).view(1L, h, s * mq, 1L).expand(b, h, s * mq, d)

    let qBlocks = q.gather(2L, qIndex).view(b, h, s, mq, d)

    let kv =
        source.index_select(1L, keySource.clamp_min(zero).view -1L).view(b, h, s, m, 2L * d)

    let computeType =
        if q.dtype = torch.ScalarType.Float64 then
            torch.ScalarType.Float64
        else
            torch.ScalarType.Float32

    let qc = qBlocks.to_type computeType
    let kc = kv.narrow(-1L, 0L, d).to_type computeType
    let vc = kv.narrow(-1L, d, d).to_type computeType

    // Scalars held across the native calls (a temporary could be freed by a GC mid-call)
    use scaleScalar = scale.ToScalar()
    use fill = Attend.maskedScore.ToScalar()

    let scores =
        (qc.matmul(kc.transpose (-2L, -1L)).mul scaleScalar).masked_fill(allowed.logical_not (), fill)

    let lse = scores.logsumexp (-1L, true)
    let out = ((scores - lse).exp().matmul vc).to_type q.dtype
    // Scatter the query slots back to local positions; empty slots land on a spare row l, then dropped.
    let target = torch.where(queryValid, queryIndex, torch.tensor l).view(1L, h, s * mq)

    let outLocal =
        torch
            .zeros([| b; h; l + 1L; d |], dtype = out.dtype, device = device)
            .scatter(2L, target.unsqueeze(-1L).expand(b, h, s * mq, d), out.view (b, h, s * mq, d))
            .narrow(2L, 0L, l)

    let lseLocal =
        torch
            .full([| b; h; l + 1L |], negativeInfinity.Force(), dtype = lse.dtype, device = device)
            .scatter(2L, target.expand (b, h, s * mq), lse.view (b, h, s * mq))
            .narrow(2L, 0L, l)

    outLocal, lseLocal

/// A one-line description of everything the ranks must agree on (compared by `verifyAgreement`).
let describe (config: DilatedConfig) (n: int64) (ranks: int) (q: torch.Tensor) : string =
    let groups =
        config.Groups
        |> List.map (fun g -> $"({g.SegmentLength},{g.DilationRate})")
        |> String.concat ""

    let scale =
        config.Scale
        |> Option.map (fun s -> s.ToString "R")
        |> Option.defaultValue "1/sqrt(d)"

    $"groups={groups} offsets={config.Offsets} causal={config.Causal} scale={scale} n={n} ranks={ranks} batch={q.shape.[0]} heads={q.shape.[1]} headDim={q.shape.[3]} dtype={q.dtype} requiresGrad={q.requires_grad}"

/// Checks, collectively, that every rank runs the same config, n, batch, heads, head dim and dtype
/// (an all-gathered hash); raises a `CollectiveException` listing each rank's values when they differ.
/// `q` is this rank's `[b, h, l, d]` slice.
let verifyAgreement (comm: ICommunicator) (config: DilatedConfig) (n: int64) (q: torch.Tensor) : unit =
    Collectives.verifySame comm "the sequence-parallel attention configuration" (describe config n comm.Size q)

/// Sequence-parallel dilated attention with a prepared plan: this rank's q, k, v `[b, h, l, d]` (l =
/// plan.Length, positions plan.Start …) → (out `[b, h, l, d]`, lse `[b, h, l]`), both differentiable.
/// Collective: every rank calls it (and backward) in the same order.
let forwardWith
    (plan: ShardPlan.Shard)
    (comm: ICommunicator)
    (config: DilatedConfig)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    Native.ensureLoaded () |> ignore
    Inputs.validateQkv false q k v

    if comm.Size <> plan.Ranks || comm.Rank <> plan.Rank then
        invalidArg
            "plan"
            $"the plan is for rank {plan.Rank} of {plan.Ranks}, the communicator is rank {comm.Rank} of {comm.Size}."

    if q.shape.[1] <> int64 plan.Heads || q.shape.[2] <> plan.Length then
        let shape = System.String.Join(", ", q.shape)

        invalidArg
            "q"
            $"rank {plan.Rank} holds positions [{plan.Start}, {plan.Start + plan.Length}) of n = {plan.N} with {plan.Heads} heads: q must be [batch, {plan.Heads}, {plan.Length}, headDim]; got [{shape}]."

    if plan.Causal <> config.Causal then
        invalidArg "plan" "the plan was built for a different causal setting than the config."

    use scope = torch.NewDisposeScope()
    let b, h, l, d = q.shape.[0], q.shape.[1], q.shape.[2], q.shape.[3]
    let scale = DilatedConfig.scaleFor config (int d)
    let local = torch.cat([| k; v |], -1L).reshape(b, h * l, 2L * d)

    let source =
        if plan.Exchanges then
            let rows =
                local.index_select(1L, torch.tensor (plan.SendRows, device = q.device)).permute(1L, 0L, 2L)

            let received =
                ExchangeFunction.apply (rows, box comm, box plan.SendCounts, box plan.ReceiveCounts)

            torch.cat ([| local; received.[0].permute(1L, 0L, 2L) |], 1L)
        else
            local

    let out, lse =
        plan.Groups
        |> List.map (fun shard -> attendGroup plan shard scale q source)
        |> Mix.mix

    scope.MoveToOuter(out, lse) |> ignore
    out, lse

/// Sequence-parallel dilated attention (see `forwardWith`), building this rank's plan for a sequence of
/// `n` positions: this rank's q, k, v `[b, h, l, d]` → (out `[b, h, l, d]`, lse `[b, h, l]`).
let forward
    (comm: ICommunicator)
    (config: DilatedConfig)
    (n: int64)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let plan = ShardPlan.create config (int q.shape.[1]) n comm.Size comm.Rank
    forwardWith plan comm config q k v
