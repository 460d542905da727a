/// Exact incremental decoding for dilated attention: a per-layer cache of keys and values and the
/// attention of one new query over it, equal to the full forward at every position and any length.
/// Notation: b batch, h heads, d head dim, p the new query's position, (w, r) a group, s_j head j's offset.
///
/// For a new query at position p, group (w, r) and head j: u = p mod w, start = p − u. The query is
/// covered iff u ≥ s_j and (u − s_j) mod r = 0; it then attends to the cached keys at positions
/// start + s_j, start + s_j + r, …, p of its own segment. The groups' (out, lse) are mixed with `Mix.mix`
/// (an uncovered group contributes nothing; a position no group covers outputs 0), exactly as the full
/// forward does. Future queries q ≥ p only need keys at positions ≥ min_g (p − p mod w_g), so older
/// keys are dropped: the cache never holds more than the largest segment.
namespace LongNet.Modules

open System
open TorchSharp
open LongNet

/// Scalars held for the process: a temporary could be freed by a GC during the native call.
module internal CacheScalars =
    /// −∞, created on first use (after the native library is loaded).
    let negativeInfinity = lazy (System.Double.NegativeInfinity.ToScalar())

/// The keys and values one attention layer keeps for decoding: positions [Start, Start + rows),
/// keys already position-encoded. Mutable; owned (and disposed) by its `KvCache`.
[<Sealed>]
type LayerCache() =
    let mutable keys: torch.Tensor option = None
    let mutable values: torch.Tensor option = None
    let mutable previousKey: torch.Tensor option = None
    let mutable start = 0L

    /// Cached keys `[b, kvHeads, rows, d]` (one per key/value head), if any.
    member _.Keys = keys
    /// Cached values `[b, kvHeads, rows, d]`, if any.
    member _.Values = values
    /// The position of row 0.
    member _.Start = start

    /// The raw (unsmeared, unrotated) key `[b, 1, e]` of the last position seen, for smeared keys.
    member _.PreviousKey = previousKey

    /// Keeps a copy of the raw key `[b, 1, e]` of the last position seen (smeared keys).
    member _.SetPreviousKey(k: torch.Tensor) =
        previousKey |> Option.iter _.Dispose()
        previousKey <- Some(k.detach().contiguous().clone().DetachFromDisposeScope())

    /// The number of cached rows.
    member _.Rows =
        match keys with
        | Some k -> k.shape.[2]
        | None -> 0L

    /// The position the next appended row will have.
    member c.Next = start + c.Rows

    /// Replaces the contents by rows for positions [first, first + rows) (the tensors are copied).
    member _.Reset(first: int64, k: torch.Tensor, v: torch.Tensor) =
        keys |> Option.iter _.Dispose()
        values |> Option.iter _.Dispose()
        keys <- Some(k.detach().contiguous().clone().DetachFromDisposeScope())
        values <- Some(v.detach().contiguous().clone().DetachFromDisposeScope())
        start <- first

    /// Appends rows `[b, kvHeads, m, d]` at positions Next … Next + m − 1.
    member c.Append(k: torch.Tensor, v: torch.Tensor) =
        match keys, values with
        | Some oldK, Some oldV ->
            let newK = torch.cat([| oldK; k.detach () |], 2L).DetachFromDisposeScope()
            let newV = torch.cat([| oldV; v.detach () |], 2L).DetachFromDisposeScope()
            oldK.Dispose()
            oldV.Dispose()
            keys <- Some newK
            values <- Some newV
        | _ -> c.Reset(start, k, v)

    /// Drops the rows of positions below `first` (no-op when none are cached there).
    member _.DropBefore(first: int64) =
        match keys, values with
        | Some k, Some v when first > start ->
            let drop = min (first - start) k.shape.[2]
            let keep = k.shape.[2] - drop

            let newK = k.narrow(2L, drop, keep).contiguous().clone().DetachFromDisposeScope()
            let newV = v.narrow(2L, drop, keep).contiguous().clone().DetachFromDisposeScope()
            k.Dispose()
            v.Dispose()
            keys <- Some newK
            values <- Some newV
            start <- start + drop
        | _ -> ()

    /// Frees the cached tensors.
    member _.Clear() =
        keys |> Option.iter _.Dispose()
        values |> Option.iter _.Dispose()
        previousKey |> Option.iter _.Dispose()
        keys <- None
        values <- None
        previousKey <- None
        start <- 0L

    interface IDisposable with
        member c.Dispose() = c.Clear()

/// The decoding state of a whole model: one `LayerCache` per layer and the next position to decode.
[<Sealed>]
type KvCache(layers: int) =
    let caches = Array.init layers (fun _ -> new LayerCache())
    let mutable position = 0L

    /// The cache of layer `i`.
    member _.Layer(i: int) : LayerCache = caches.[i]

    /// The number of layers.
    member _.Layers = layers

    /// The position of the next token to decode (the number of tokens seen so far).
    member _.Position
        with get () = position
        and set value = position <- value

    /// The largest number of rows any layer holds (bounded by the largest segment length).
    member _.MaxRows = caches |> Array.map _.Rows |> Array.fold max 0L

    /// Empties every layer and restarts at position 0.
    member _.Clear() =
        for c in caches do
            c.Clear()

        position <- 0L

    interface IDisposable with
        member c.Dispose() = c.Clear()

/// The index arithmetic and attention of one decoding step.
module KvCache =
    /// The first position any query at position ≥ `p` can attend to: min over groups of p − p mod w.
    let firstNeeded (config: DilatedConfig) (p: int64) : int64 =
        config.Groups |> List.map (fun g -> p - p % int64 g.SegmentLength) |> List.min

    /// The positions head `head` (of `heads`) attends to for a query at `p` in group `g` (ascending,
    /// ending at p), or the empty array when the group does not cover p for that head.
    let keyPositions (config: DilatedConfig) (heads: int) (g: Group) (head: int) (p: int64) : int64[] =
        let w, r = int64 g.SegmentLength, int64 g.DilationRate
        let u = p % w
        let s = int64 (HeadOffsets.offset config.Offsets heads g.DilationRate head)

        if u < s || (u - s) % r <> 0L then
            [||]
        else
            let start = p - u
            Array.init (int ((u - s) / r) + 1) (fun t -> start + s + r * int64 t)

    /// Attention of the new queries `q` `[b, h, 1, d]` at position `p` over a layer's cache, which must
    /// already hold positions firstNeeded(p) … p: out `[b, h, 1, d]` and lse `[b, h, 1]`, mixed over
    /// the groups like `DilatedAttention.forwardWithLse`.
    let attendStep
        (config: DilatedConfig)
        (p: int64)
        (cache: LayerCache)
        (q: torch.Tensor)
        : torch.Tensor * torch.Tensor =
        match cache.Keys, cache.Values with
        | Some keys, Some values when cache.Start <= firstNeeded config p && cache.Next = p + 1L ->
            use scope = torch.NewDisposeScope()
            let b, heads, d = q.shape.[0], int q.shape.[1], q.shape.[3]
            let scale = DilatedConfig.scaleFor config (int d)
            let device = q.device

            let contributions =
                config.Groups
                |> List.map (fun g ->
                    let perHead = Array.init heads (fun j -> keyPositions config heads g j p)
                    let slots = perHead |> Array.map _.Length |> Array.max

                    if slots = 0 then
                        let lseType =
                            if q.dtype = torch.ScalarType.Float64 then
                                torch.ScalarType.Float64
                            else
                                torch.ScalarType.Float32

                        torch.zeros_like q,
                        torch.full (
                            [| b; int64 heads; 1L |],
                            CacheScalars.negativeInfinity.Force(),
                            dtype = lseType,
                            device = device
                        )
                    else
                        let rows =
                            Array.init (heads * slots) (fun k ->
                                let j, t = k / slots, k % slots
                                let ps = perHead.[j]
                                if t < ps.Length then ps.[t] - cache.Start else 0L)

                        let valid =
                            Array.init (heads * slots) (fun k -> k % slots < perHead.[k / slots].Length)

                        // the cache may hold fewer key/value heads than query heads (grouped-query
                        // attention): query head j reads key/value head j / g, gathered through a
                        // broadcast view, so the cache is never copied per query head
                        let kvHeads = keys.shape.[1]
                        let g = int64 heads / kvHeads
                        let cached = keys.shape.[2]

                        let gatherRows (source: torch.Tensor) =
                            let index =
                                torch
                                    .tensor(rows, device = device)
                                    .view(1L, kvHeads, g, int64 slots, 1L)
                                    .expand(b, kvHeads, g, int64 slots, d)

                            source
                                .unsqueeze(2L)
                                .expand(b, kvHeads, g, cached, d)
                                .gather(3L, index)
                                .reshape(b, int64 heads, int64 slots, d)

                        let keyValid =
                            torch.tensor(valid, device = device).view(1L, int64 heads, int64 slots)

                        let covered =
                            torch
                                .tensor(perHead |> Array.map (fun ps -> ps.Length > 0), device = device)
                                .view(1L, int64 heads, 1L)

                        let k = gatherRows keys
                        let v = gatherRows values

                        // [1, h, 1, slots]: −slope · f(p − key position) per head and slot
                        let bias =
                            config.Bias
                            |> Option.map (fun b ->
                                let distances =
                                    Array.init (heads * slots) (fun k ->
                                        let ps = perHead.[k / slots]
                                        let t = k % slots
                                        if t < ps.Length then p - ps.[t] else 0L)

                                use table = torch.tensor(distances, device = device).view(int64 heads, int64 slots)
                                BiasTables.step b table q.dtype)

                        let out, lse = Attend.attendBiased scale false (Some keyValid) bias q k v

                        let lse = torch.where (covered, lse, torch.full_like (lse, Double.NegativeInfinity))

                        let out = torch.where (covered.unsqueeze -1L, out, torch.zeros_like out)
                        out, lse)

            let out, lse = Mix.mix contributions
            scope.MoveToOuter(out, lse) |> ignore
            out, lse
        | _ ->
            invalidOp
                $"the KV cache must hold positions {firstNeeded config p} … {p} before attending at position {p}; it holds {cache.Start} … {cache.Next - 1L}."
