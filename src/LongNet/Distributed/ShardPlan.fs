/// The index math of sequence-parallel dilated attention (pure: arrays, no tensors, no communication).
/// The sequence `0 … n−1` is split into P contiguous slices, balanced: rank p holds
/// `[p·⌊n/P⌋ + min(p, n mod P), …)`, the first `n mod P` ranks one position more (n ≥ P).
/// For every group (w, r), segments stay aligned to global position 0 exactly as in the single-process
/// semantics, so a slice boundary may cut a segment anywhere. Rank p attends, for every segment that
/// meets its slice, its own kept queries to *all* kept keys of the segment (causal: the keys before its
/// slice end); the kept keys held by other ranks are the only rows it receives — dilated rows (1/r of a
/// segment per head), and only for the heads it holds a query of there — so the volume per rank is at
/// most about w/r rows per head and group, whatever P is.
/// Row order of every message: group (config order), segment, head, position — the same on both sides;
/// a row that several groups need (same head and position) travels once, at its first occurrence.
/// Notation: n length, P ranks, p this rank, h heads, w segment length, r dilation rate, s segments met
/// by the slice, m key slots per segment (⌈min(w, n)/r⌉), mq query slots.
module LongNet.Distributed.ShardPlan

open System.Collections.Generic
open LongNet

/// Rank `rank`'s slice of `n` positions over `ranks` ranks: (start, length), balanced within one position.
let slice (n: int64) (ranks: int) (rank: int) : int64 * int64 =
    let q, rem = n / int64 ranks, n % int64 ranks
    let rank = int64 rank
    rank * q + min rank rem, q + (if rank < rem then 1L else 0L)

/// The rank whose slice holds global position `position` (0 ≤ position < n).
let owner (n: int64) (ranks: int) (position: int64) : int =
    let q, rem = n / int64 ranks, n % int64 ranks
    let wide = rem * (q + 1L)

    if position < wide then
        int (position / (q + 1L))
    else
        int (rem + (position - wide) / q)

/// Checks n, ranks and rank, raising `ArgumentException` naming the parameter.
let validate (n: int64) (ranks: int) (rank: int) : unit =
    if ranks < 1 then
        invalidArg "ranks" $"ranks must be ≥ 1, got {ranks}."

    if n < int64 ranks then
        invalidArg
            "n"
            $"the sequence length n = {n} must be ≥ the number of ranks ({ranks}): every rank holds ≥ 1 position."

    if rank < 0 || rank >= ranks then
        invalidArg "rank" $"rank must be in [0, {ranks}), got {rank}."

/// Whether some segment of `group` crosses a slice boundary, i.e. the group needs communication
/// (the same answer on every rank).
let crossesRanks (n: int64) (ranks: int) (group: Group) : bool =
    let w = int64 group.SegmentLength

    seq { 1 .. ranks - 1 }
    |> Seq.exists (fun p -> (fst (slice n ranks p)) % w <> 0L)

/// The layout of one group on one rank: query and key slots per segment met by the slice.
type GroupShard =
    {
        /// The group (w, r).
        Group: Group
        /// Index of the first segment the slice meets.
        FirstSegment: int64
        /// s: the number of segments the slice meets.
        Segments: int
        /// mq: query slots per (head, segment) — the most kept positions any head has there.
        QuerySlots: int
        /// m: key slots per (head, segment), ⌈min(w, n)/r⌉.
        KeySlots: int
        /// `[h, s, mq]`: local position (global − start) of each query slot, −1 for an empty slot.
        QueryIndex: int64[]
        /// `[h, s, mq]`: global position of each query slot, −1 for an empty slot.
        QueryPosition: int64[]
        /// `[h, s, m]`: row of the key/value source (see `Shard`) of each key slot, −1 for an empty slot.
        KeySource: int64[]
        /// `[h, s, m]`: global position of each key slot, −1 for an empty slot.
        KeyPosition: int64[]
    }

/// Everything rank p needs for one forward/backward pass of sequence-parallel dilated attention.
/// The key/value *source* rows are the local rows `[h·length]` (row j·length + i is head j, local position
/// i) followed by the received rows in rank order.
type Shard =
    {
        /// Sequence length n.
        N: int64
        /// The number of ranks P.
        Ranks: int
        /// This rank p.
        Rank: int
        /// First global position of this rank's slice.
        Start: int64
        /// Length of this rank's slice.
        Length: int64
        /// Number of heads h.
        Heads: int
        /// Whether attention is causal.
        Causal: bool
        /// One layout per group, in config order.
        Groups: GroupShard list
        /// Local rows (j·length + i) to send, to rank 0 first, then rank 1, ….
        SendRows: int64[]
        /// Rows sent to each rank.
        SendCounts: int[]
        /// Rows received from each rank.
        ReceiveCounts: int[]
        /// Whether the ranks exchange rows at all (the same on every rank; false when no segment crosses a slice boundary).
        Exchanges: bool
    }

let private ceilDiv (a: int64) (b: int64) = (a + b - 1L) / b

/// Whether the slice `[first, stop)` holds a kept position `segmentStart + o + r·t` (o + r·t < wc) of a
/// segment: a rank without one has no query of that head there and needs none of its keys.
let private keepsPosition (segmentStart: int64) (wc: int64) (o: int64) (r: int64) (first: int64) (stop: int64) =
    let local = o + r * ceilDiv (max 0L (first - segmentStart - o)) r
    local < wc && segmentStart + local < stop

/// Rows rank `rank` sends to every rank, in message order, with their counts: for each receiver q ≠ p
/// (causal: only q > p), for each group, segment met by both slices, head with a kept query in q's slice
/// there, and kept position in p's slice, each distinct row once.
let sendRows (config: DilatedConfig) (heads: int) (n: int64) (ranks: int) (rank: int) : int64[] * int[] =
    validate n ranks rank
    let start, length = slice n ranks rank
    let stop = start + length
    let rows = ResizeArray<int64>()
    let counts = Array.zeroCreate<int> ranks

    for dest in 0 .. ranks - 1 do
        if dest <> rank && not (config.Causal && dest < rank) then
            let before = rows.Count
            // A row two groups need travels once.
            let seen = HashSet<int64>()
            let dStart, dLength = slice n ranks dest
            let dStop = dStart + dLength

            for g in config.Groups do
                let w = int64 g.SegmentLength
                let r = int64 g.DilationRate
                let wc = min w n
                let first = max (dStart / w) (start / w)
                let last = min ((dStop - 1L) / w) ((stop - 1L) / w)

                for k in first..last do
                    let segmentStart = k * w

                    for j in 0 .. heads - 1 do
                        let o = int64 (HeadOffsets.offset config.Offsets heads g.DilationRate j)
                        // Kept local positions o + r·t < wc, global positions in [start, stop).
                        let mutable t = ceilDiv (max 0L (start - segmentStart - o)) r
                        let mutable local = o + r * t
                        // A receiver without a query of this head here needs none of its keys.
                        let needed = keepsPosition segmentStart wc o r dStart dStop

                        while needed && local < wc && segmentStart + local < stop do
                            let row = int64 j * length + (segmentStart + local - start)

                            if seen.Add row then
                                rows.Add row

                            t <- t + 1L
                            local <- o + r * t

            counts.[dest] <- rows.Count - before

    rows.ToArray(), counts

/// The rows each rank sends to each other rank: `[from].[to]` (analytic communication volume).
let trafficMatrix (config: DilatedConfig) (heads: int) (n: int64) (ranks: int) : int[][] =
    Array.init ranks (fun p -> snd (sendRows config heads n ranks p))

/// Builds rank `rank`'s plan for `heads` heads over `n` positions split over `ranks` ranks.
let create (config: DilatedConfig) (heads: int) (n: int64) (ranks: int) (rank: int) : Shard =
    validate n ranks rank

    if heads < 1 then
        invalidArg "heads" $"heads must be ≥ 1, got {heads}."

    let start, length = slice n ranks rank
    let stop = start + length
    let received = Array.zeroCreate<int> ranks
    // Per owner: global row (head·n + position) → index in that owner's message (first occurrence).
    let arrivals = Array.init ranks (fun _ -> Dictionary<int64, int>())
    // Key slots held elsewhere: (array, slot, owner, index within the owner's message), resolved at the end.
    let pending = ResizeArray<int64[] * int * int * int>()

    let groups =
        config.Groups
        |> List.map (fun g ->
            let w = int64 g.SegmentLength
            let r = int64 g.DilationRate
            let wc = min w n
            let m = int (ceilDiv wc r)
            let first = start / w
            let s = int ((stop - 1L) / w - first + 1L)
            let keySource = Array.create (heads * s * m) -1L
            let keyPosition = Array.create (heads * s * m) -1L
            let queries = Array.init (heads * s) (fun _ -> ResizeArray<int64>())

            for si in 0 .. s - 1 do
                let segmentStart = (first + int64 si) * w

                for j in 0 .. heads - 1 do
                    let o = int64 (HeadOffsets.offset config.Offsets heads g.DilationRate j)
                    // Without a query of this head here, no key of it is needed (none is received).
                    let attends = keepsPosition segmentStart wc o r start stop

                    for t in 0 .. m - 1 do
                        let local = o + r * int64 t
                        let position = segmentStart + local

                        if local < wc && position < n then
                            let slot = (j * s + si) * m + t

                            if position >= start && position < stop then
                                keyPosition.[slot] <- position
                                keySource.[slot] <- int64 j * length + (position - start)
                                queries.[j * s + si].Add position
                            elif attends && not (config.Causal && position >= stop) then
                                let q = owner n ranks position
                                let row = int64 j * n + position
                                keyPosition.[slot] <- position

                                match arrivals.[q].TryGetValue row with
                                | true, index -> pending.Add((keySource, slot, q, index))
                                | _ ->
                                    arrivals.[q].[row] <- received.[q]
                                    pending.Add((keySource, slot, q, received.[q]))
                                    received.[q] <- received.[q] + 1

            let mq = queries |> Array.map (fun l -> l.Count) |> Array.fold max 0
            let queryPosition = Array.create (heads * s * mq) -1L
            let queryIndex = Array.create (heads * s * mq) -1L

            queries
            |> Array.iteri (fun js list ->
                list
                |> Seq.iteri (fun u position ->
                    queryPosition.[js * mq + u] <- position
                    queryIndex.[js * mq + u] <- position - start))

            {
                Group = g
                FirstSegment = first
                Segments = s
                QuerySlots = mq
                KeySlots = m
                QueryIndex = queryIndex
                QueryPosition = queryPosition
                KeySource = keySource
                KeyPosition = keyPosition
            })

    let displs = Communicator.displacements "ShardPlan.create" received
    let localRows = int64 heads * length

    for keySource, slot, q, index in pending do
        keySource.[slot] <- localRows + int64 displs.[q] + int64 index

    let rows, counts = sendRows config heads n ranks rank

    {
        N = n
        Ranks = ranks
        Rank = rank
        Start = start
        Length = length
        Heads = heads
        Causal = config.Causal
        Groups = groups
        SendRows = rows
        SendCounts = counts
        ReceiveCounts = received
        Exchanges = config.Groups |> List.exists (crossesRanks n ranks)
    }
