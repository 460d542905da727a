/// The test-side oracle: who sees whom under dilated attention, computed straight from the definition
/// in docs/concepts.md with plain loops over groups, heads, segments and positions — independently
/// of the library's Segment / Dilate / Scatter code and of `HeadOffsets.offset`.
module LongNet.Tests.Oracle

open TorchSharp
open LongNet

/// The offset s_j of head j (of H) for dilation r: j mod r (paper) or j / ceil(H / r) (blocks).
let offset (mode: HeadOffsets) (heads: int) (rate: int) (head: int) : int =
    match mode with
    | Paper -> head % rate
    | Blocks ->
        let blockSize = (heads + rate - 1) / rate
        head / blockSize

/// The real positions head j keeps in each segment of group (w, r) for a sequence of length n:
/// segment k covers [k·w, (k+1)·w); the head keeps local positions s_j, s_j + r, … < w; positions ≥ n
/// are padding and are dropped.
let keptPerSegment (mode: HeadOffsets) (heads: int) (n: int) (w: int) (r: int) (head: int) : int list list =
    let s = offset mode heads r head
    let segments = (n + w - 1) / w

    [
        for segment in 0 .. segments - 1 do
            [
                for local in s..r .. w - 1 do
                    let p = segment * w + local

                    if p < n then
                        p
            ]
    ]

/// counts[h, q, k] = the number of groups in which head h lets query q see key k (causal: k ≤ q).
let countsArray (config: DilatedConfig) (heads: int) (n: int) : float[,,] =
    let counts = Array3D.zeroCreate heads n n

    for g in config.Groups do
        for h in 0 .. heads - 1 do
            for kept in keptPerSegment config.Offsets heads n g.SegmentLength g.DilationRate h do
                for q in kept do
                    for k in kept do
                        if not config.Causal || k <= q then
                            counts.[h, q, k] <- counts.[h, q, k] + 1.0

    counts

/// The multiplicities as a float64 tensor `[h, n, n]` for `Dense.attendWithCounts`.
let counts (config: DilatedConfig) (heads: int) (n: int) : torch.Tensor =
    let a = countsArray config heads n
    let flat = Array.init (heads * n * n) (fun i -> a.[i / (n * n), (i / n) % n, i % n])
    torch.tensor (flat, int64 heads, int64 n, int64 n, dtype = torch.float64)

/// covered[h, p] = whether some group lets head h see position p as a query.
let covered (config: DilatedConfig) (heads: int) (n: int) : bool[,] =
    let result = Array2D.zeroCreate heads n

    for g in config.Groups do
        for h in 0 .. heads - 1 do
            for kept in keptPerSegment config.Offsets heads n g.SegmentLength g.DilationRate h do
                for p in kept do
                    result.[h, p] <- true

    result
