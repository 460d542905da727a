/// This process's part of one sequence split over the ranks of a communicator (sequence parallelism):
/// the positions it holds and the dilated attention of its slice, computed together with the other ranks.
/// A model given a `SequenceSlice` runs its per-token layers on the local tokens only and its attention
/// through `SequenceParallel`, so P ranks together compute exactly what one process computes on the whole.
namespace LongNet.Distributed

open System.Collections.Generic
open TorchSharp
open LongNet

/// Rank `comm.Rank`'s contiguous slice (`ShardPlan.slice`) of a sequence of `total` positions split over
/// `comm.Size` ranks; plans of the sequence-parallel attention are built once per configuration and kept.
[<Sealed>]
type SequenceSlice(comm: ICommunicator, total: int64) =
    do ShardPlan.validate total comm.Size comm.Rank
    let start, length = ShardPlan.slice total comm.Size comm.Rank
    let plans = Dictionary<string, ShardPlan.Shard>()

    /// The communicator of the ranks sharing the sequence.
    member _.Communicator = comm

    /// The length of the whole sequence.
    member _.Total = total

    /// The global position of this rank's first token.
    member _.Start = start

    /// The number of positions this rank holds.
    member _.Length = length

    /// The global positions this rank holds, `Start … Start + Length − 1`.
    member _.Positions: int64[] = Array.init (int length) (fun i -> start + int64 i)

    /// Sequence-parallel dilated attention of this slice: q, k, v `[b, h, Length, d]` → out
    /// `[b, h, Length, d]`, differentiable. Collective: every rank calls it, and its backward, in the same order.
    member _.Attend(config: DilatedConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) : torch.Tensor =
        if q.Dimensions <> 4L then
            invalidArg "q" $"q must be 4-D [batch, heads, {length}, headDim]; got {q.Dimensions}-D."

        if config.Bias.IsSome then
            invalidArg
                "config"
                "sequence-parallel attention has no distance bias; use position \"none\", \"rope\" or \"xpos\" to split a sequence across ranks."

        let heads = int q.shape.[1]

        let groups =
            config.Groups
            |> List.map (fun g -> $"({g.SegmentLength},{g.DilationRate})")
            |> String.concat ""

        let key = $"{groups} {config.Offsets} {config.Causal} {heads}"

        let plan =
            match plans.TryGetValue key with
            | true, plan -> plan
            | _ ->
                let plan = ShardPlan.create config heads total comm.Size comm.Rank
                plans.[key] <- plan
                plan

        let out, lse = SequenceParallel.forwardWith plan comm config q k v
        lse.Dispose()
        out
