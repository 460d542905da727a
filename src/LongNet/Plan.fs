/// The plan of dilated attention: pure index math for a configuration, a sequence length N and H
/// heads — which positions each head of each group keeps, attended (query, key) pairs, FLOPs, a
/// memory estimate, and the attention graph with its diameter (by BFS). No tensors.
///
/// Definitions: group (w, r) splits 0 … N−1 into segments [k·w, (k+1)·w); head j keeps
/// local positions s_j, s_j + r, … < w that are < N. The kept positions of one (group, head, segment)
/// form a block: each kept query attends to each kept key of its block (causal: keys ≤ the query).
module LongNet.Plan

open System

let private checkPositive (name: string) (value: int) =
    if value < 1 then
        raise (ArgumentOutOfRangeException(name, value, $"{name} must be ≥ 1, got {value}."))

/// The number of positions kept in a segment of real length `length` by a head with offset `offset`, rate `r`.
let keptIn (length: int64) (offset: int) (r: int) : int64 =
    if int64 offset >= length then
        0L
    else
        (length - int64 offset + int64 r - 1L) / int64 r

/// The number of segments ceil(n / w) of a group.
let segmentCount (g: Group) (n: int) : int64 =
    (int64 n + int64 g.SegmentLength - 1L) / int64 g.SegmentLength

/// The offset of each head for a group (`[h]`), as the attention uses it.
let offsets (config: DilatedConfig) (heads: int) (g: Group) : int[] =
    Array.init heads (HeadOffsets.offset config.Offsets heads g.DilationRate)

/// The segments of group `g` over n positions as (count, real length) pairs: the full segments, then the last.
let private segmentLengths (g: Group) (n: int) =
    let w = int64 g.SegmentLength
    let s = segmentCount g n
    let lastLength = int64 n - (s - 1L) * w
    // (number of segments, real length) pairs
    if s = 1L then
        [ 1L, lastLength ]
    else
        [ s - 1L, w; 1L, lastLength ]

let private pairsOfBlock (causal: bool) (m: int64) =
    if causal then m * (m + 1L) / 2L else m * m

/// Attended (query, key) pairs of one group over all heads and segments.
let groupPairs (config: DilatedConfig) (heads: int) (n: int) (g: Group) : int64 =
    offsets config heads g
    |> Array.sumBy (fun s ->
        segmentLengths g n
        |> List.sumBy (fun (count, length) -> count * pairsOfBlock config.Causal (keptIn length s g.DilationRate)))

/// (head, position) pairs one group covers.
let groupCovered (config: DilatedConfig) (heads: int) (n: int) (g: Group) : int64 =
    offsets config heads g
    |> Array.sumBy (fun s ->
        segmentLengths g n
        |> List.sumBy (fun (count, length) -> count * keptIn length s g.DilationRate))

/// Whether head `head` of group `g` keeps position `p`.
let covers (config: DilatedConfig) (heads: int) (g: Group) (head: int) (p: int64) : bool =
    let local = p % int64 g.SegmentLength
    let s = int64 (HeadOffsets.offset config.Offsets heads g.DilationRate head)
    local >= s && (local - s) % int64 g.DilationRate = 0L

/// The number of (head, position) pairs that no group covers (their outputs are 0).
let uncoveredPairs (config: DilatedConfig) (heads: int) (n: int) : int64 =
    // Coverage of p depends on p mod w_g only, so it repeats with period lcm(w_g): count one period.
    let rec gcd a b = if b = 0L then a else gcd b (a % b)

    // Stops growing once past n (then one pass over 0 … n−1 is the count), so it cannot overflow.
    let period =
        config.Groups
        |> List.fold
            (fun acc g ->
                let w = int64 g.SegmentLength
                if acc > int64 n then acc else acc / gcd acc w * w)
            1L

    let countIn (upTo: int64) (head: int) =
        let mutable uncovered = 0L

        for p in 0L .. upTo - 1L do
            if not (config.Groups |> List.exists (fun g -> covers config heads g head p)) then
                uncovered <- uncovered + 1L

        uncovered

    let n = int64 n

    [ 0 .. heads - 1 ]
    |> List.sumBy (fun h ->
        if period >= n || period > 50_000_000L then
            countIn n h
        else
            countIn period h * (n / period) + countIn (n % period) h)

/// A pattern of attention whose graph the diameter is computed on.
type Pattern =
    /// Dilated attention with a configuration and a head count.
    | Dilated of config: DilatedConfig * heads: int
    /// Query q sees keys k with |q − k| < width (non-causal) or 0 ≤ q − k < width (causal).
    | SlidingWindow of width: int * causal: bool

/// The blocks (sorted position arrays) of a dilated configuration, one per distinct (group, offset, segment).
let blocks (config: DilatedConfig) (heads: int) (n: int) : int[] list =
    [
        for g in config.Groups do
            let w = g.SegmentLength

            for s in offsets config heads g |> Array.distinct do
                for segment in 0L .. segmentCount g n - 1L do
                    let start = segment * int64 w
                    let stop = min (start + int64 w) (int64 n)

                    let members =
                        [| for p in start + int64 s .. int64 g.DilationRate .. stop - 1L -> int p |]

                    if members.Length > 0 then
                        yield members
    ]

// One BFS level for 64 sources at once: next[p] = OR of frontier[k] over the keys k that p sees.
let private propagate (pattern: Pattern) (blockList: int[] list) (n: int) (frontier: uint64[]) (next: uint64[]) =
    Array.Clear next

    match pattern with
    | Dilated(config, _) ->
        for block in blockList do
            if config.Causal then
                let mutable acc = 0UL

                for p in block do
                    acc <- acc ||| frontier.[p]
                    next.[p] <- next.[p] ||| acc
            else
                let mutable acc = 0UL

                for p in block do
                    acc <- acc ||| frontier.[p]

                if acc <> 0UL then
                    for p in block do
                        next.[p] <- next.[p] ||| acc
    | SlidingWindow(width, causal) ->
        // Information flows from key k to query q: q ∈ [k, k + width) causal, |q − k| < width otherwise.
        let before = width - 1
        let after = if causal then 0 else width - 1
        // prefix sums of "frontier set" are not possible for OR, so use blocked prefix/suffix ORs.
        let len = before + after + 1
        let prefix = Array.zeroCreate<uint64> n
        let suffix = Array.zeroCreate<uint64> n

        for i in 0 .. n - 1 do
            prefix.[i] <-
                if i % len = 0 then
                    frontier.[i]
                else
                    prefix.[i - 1] ||| frontier.[i]

        for i in n - 1 .. -1 .. 0 do
            suffix.[i] <-
                if i = n - 1 || (i + 1) % len = 0 then
                    frontier.[i]
                else
                    suffix.[i + 1] ||| frontier.[i]

        for q in 0 .. n - 1 do
            // keys k with q − before ≤ k ≤ q + after
            let lo = max 0 (q - before)
            let hi = min (n - 1) (q + after)

            next.[q] <-
                if lo / len = hi / len then
                    let mutable acc = 0UL

                    for k in lo..hi do
                        acc <- acc ||| frontier.[k]

                    acc
                else
                    suffix.[lo] ||| prefix.[hi]

/// The diameter of the attention graph (hops): None when some pair is not connected. Non-causal:
/// the largest shortest-path length over all pairs; causal: over pairs k ≤ q, along edges k → q.
/// Computed by breadth-first search from every position (64 sources at a time).
let diameter (pattern: Pattern) (n: int) : int option =
    checkPositive "n" n

    match pattern with
    | Dilated(_, heads) -> checkPositive "heads" heads
    | SlidingWindow(width, _) -> checkPositive "width" width

    let causal =
        match pattern with
        | Dilated(config, _) -> config.Causal
        | SlidingWindow(_, causal) -> causal

    let blockList =
        match pattern with
        | Dilated(config, heads) -> blocks config heads n
        | SlidingWindow _ -> []

    let reach = Array.zeroCreate<uint64> n
    let frontier = Array.zeroCreate<uint64> n
    let next = Array.zeroCreate<uint64> n
    let mutable result = Some 0
    let mutable batch = 0

    while result.IsSome && batch * 64 < n do
        let first = batch * 64
        let count = min 64 (n - first)
        Array.Clear reach
        Array.Clear frontier

        for i in 0 .. count - 1 do
            reach.[first + i] <- 1UL <<< i
            frontier.[first + i] <- 1UL <<< i

        let eccentricity = Array.zeroCreate<int> count
        let mutable level = 0
        let mutable advancing = true

        while advancing do
            propagate pattern blockList n frontier next
            level <- level + 1
            let mutable advanced = 0UL

            for p in 0 .. n - 1 do
                let fresh = next.[p] &&& ~~~reach.[p]
                reach.[p] <- reach.[p] ||| fresh
                frontier.[p] <- fresh
                advanced <- advanced ||| fresh

            advancing <- advanced <> 0UL

            for i in 0 .. count - 1 do
                if advanced &&& (1UL <<< i) <> 0UL then
                    eccentricity.[i] <- level

        // Every source must reach every position (causal: every later position).
        for i in 0 .. count - 1 do
            let source = first + i
            let mask = 1UL <<< i

            let targets =
                if causal then
                    seq { source .. n - 1 }
                else
                    seq { 0 .. n - 1 }

            if targets |> Seq.exists (fun p -> reach.[p] &&& mask = 0UL) then
                result <- None

        match result with
        | Some d -> result <- Some(max d (Array.max eccentricity))
        | None -> ()

        batch <- batch + 1

    result

/// One group's line of a plan.
type GroupSummary =
    {
        SegmentLength: int
        DilationRate: int
        Segments: int64
        CoveredPairs: int64
        AttendedPairs: int64
    }

/// The plan of a configuration for N positions, H heads and head dimension d.
type PlanSummary =
    {
        N: int
        Heads: int
        HeadDim: int
        Causal: bool
        Groups: GroupSummary list
        /// Attended (query, key) pairs over all groups, heads and segments.
        Pairs: int64
        /// Pairs per position (bounded as N grows: the linear cost).
        PairsPerToken: float
        /// Forward FLOPs on the attended pairs: 4·pairs·d (QKᵀ and PV, two FLOPs per multiply-add).
        Flops: float
        /// Forward FLOPs of dense attention: 4·d·H·N² (causal: N(N+1)/2 pairs per head).
        DenseFlops: float
        /// Memory estimate of the fused forward in bytes for float32 and batch 1: q, k, v and the
        /// output (4·H·N·d·4), the largest group's gathered q, k, v and output blocks (4·H·S·m·d·4),
        /// and one log-sum-exp per group and position (G·H·N·4).
        MemoryBytes: float
        /// (head, position) pairs no group covers, and their share of H·N.
        UncoveredPairs: int64
        UncoveredShare: float
        /// The attention graph's diameter: None if not computed, Some None if disconnected.
        Diameter: int option option
    }

/// Builds the plan of `config` for `n` positions, `heads` heads and `headDim`; the diameter (a BFS
/// from every position) only when `computeDiameter`.
let summarise (config: DilatedConfig) (n: int) (heads: int) (headDim: int) (computeDiameter: bool) : PlanSummary =
    checkPositive "n" n
    checkPositive "heads" heads
    checkPositive "headDim" headDim

    let groups =
        config.Groups
        |> List.map (fun g ->
            {
                SegmentLength = g.SegmentLength
                DilationRate = g.DilationRate
                Segments = segmentCount g n
                CoveredPairs = groupCovered config heads n g
                AttendedPairs = groupPairs config heads n g
            })

    let pairs = groups |> List.sumBy _.AttendedPairs
    let nf, hf, df = float n, float heads, float headDim
    let densePairs = if config.Causal then nf * (nf + 1.0) / 2.0 else nf * nf
    let uncovered = uncoveredPairs config heads n

    let largestGroupBlocks =
        config.Groups
        |> List.map (fun g ->
            float (segmentCount g n)
            * float (keptIn (int64 g.SegmentLength) 0 g.DilationRate))
        |> List.max

    {
        N = n
        Heads = heads
        HeadDim = headDim
        Causal = config.Causal
        Groups = groups
        Pairs = pairs
        PairsPerToken = float pairs / nf
        Flops = 4.0 * float pairs * df
        DenseFlops = 4.0 * densePairs * hf * df
        MemoryBytes =
            4.0 * hf * nf * df * 4.0
            + 4.0 * hf * largestGroupBlocks * df * 4.0
            + float config.Groups.Length * hf * nf * 4.0
        UncoveredPairs = uncovered
        UncoveredShare = float uncovered / (hf * nf)
        Diameter =
            if computeDiameter then
                Some(diameter (Dilated(config, heads)) n)
            else
                None
    }

/// A readable multi-line table of a plan.
let format (plan: PlanSummary) : string =
    let lines = Collections.Generic.List<string>()

    let human (x: float) =
        if x >= 1e12 then $"{x / 1e12:F2} T"
        elif x >= 1e9 then $"{x / 1e9:F2} G"
        elif x >= 1e6 then $"{x / 1e6:F2} M"
        elif x >= 1e3 then $"{x / 1e3:F2} K"
        else $"{x:F0}"

    lines.Add(
        $"""N = {plan.N}, {plan.Heads} heads, head dim {plan.HeadDim}, {(if plan.Causal then "causal" else "non-causal")}"""
    )

    lines.Add $"""  {"w", 8} {"r", 5} {"segments", 9} {"covered (head,pos)", 19} {"attended pairs", 16}"""

    for g in plan.Groups do
        lines.Add
            $"  {g.SegmentLength, 8} {g.DilationRate, 5} {g.Segments, 9} {g.CoveredPairs, 19} {g.AttendedPairs, 16}"

    lines.Add $"  attended pairs      {plan.Pairs} ({plan.PairsPerToken:F1} per token)"

    lines.Add
        $"  forward FLOPs       {human plan.Flops} (dense: {human plan.DenseFlops}; ratio {plan.Flops / plan.DenseFlops:F4})"

    lines.Add $"  memory estimate     {human plan.MemoryBytes}B (fused forward, float32, batch 1)"
    lines.Add $"  uncovered           {plan.UncoveredPairs} (head, position) pairs ({100.0 * plan.UncoveredShare:F2}%%)"

    match plan.Diameter with
    | Some(Some d) -> lines.Add $"  diameter            {d} hops (BFS over the attention graph)"
    | Some None -> lines.Add "  diameter            ∞ (some positions never reach each other)"
    | None -> lines.Add "  diameter            not computed"

    String.Join("\n", lines)
