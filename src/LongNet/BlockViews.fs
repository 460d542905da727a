/// Dilated blocks as strided views: for one group, the heads that share an offset s attend inside
/// segments over rows s, s + r, … — in a contiguous `[b, h, n, e]` tensor those rows form, for a
/// batch item, a strided view `[heads, segments, rows, e]`. Full segments make one view, the last
/// (shorter) segment another, so every row of every view is a real position: no copies, no padding
/// and no masks. Notation: b batch, h heads, n length, e trailing size, w segment, r rate.
module LongNet.BlockViews

open TorchSharp

/// One strided family of blocks: heads `HeadStart + i·HeadStep` (i < HeadCount), segments starting at
/// `FirstPosition + k·SegmentStride` (k < Segments), rows `+ t·Rate` (t < Rows) inside each segment.
type Part =
    {
        HeadStart: int64
        HeadStep: int64
        HeadCount: int64
        FirstPosition: int64
        Segments: int64
        SegmentStride: int64
        Rows: int64
        Rate: int64
    }

/// The heads sharing each offset as (offset, first head, head step, head count), for both offset modes.
let private headClasses (mode: HeadOffsets) (heads: int) (r: int) =
    [ 0 .. r - 1 ]
    |> List.choose (fun s ->
        let members =
            [ 0 .. heads - 1 ]
            |> List.filter (fun j -> HeadOffsets.offset mode heads r j = s)

        match members with
        | [] -> None
        | [ j ] -> Some(s, int64 j, 1L, 1L)
        | a :: b :: _ ->
            let step = b - a
            // Both offset modes give arithmetic progressions (j ≡ s mod r, or a contiguous block).
            if members |> List.pairwise |> List.exists (fun (x, y) -> y - x <> step) then
                failwith $"heads with offset {s} are not an arithmetic progression"

            Some(s, int64 a, int64 step, int64 members.Length))

/// The parts of group `g` over `n` positions with `heads` heads: for each offset class, the full
/// segments and the shorter last segment (parts with no rows are left out).
let parts (mode: HeadOffsets) (g: Group) (heads: int) (n: int64) : Part list =
    let w, r = int64 g.SegmentLength, int64 g.DilationRate
    let full = n / w
    let tail = n - full * w

    let rowsIn (length: int64) (s: int64) =
        if s >= length then 0L else (length - s + r - 1L) / r

    [
        for s, h0, hs, hc in headClasses mode heads g.DilationRate do
            let s = int64 s

            if full > 0L && rowsIn w s > 0L then
                yield
                    {
                        HeadStart = h0
                        HeadStep = hs
                        HeadCount = hc
                        FirstPosition = s
                        Segments = full
                        SegmentStride = w
                        Rows = rowsIn w s
                        Rate = r
                    }

            if tail > 0L && rowsIn tail s > 0L then
                yield
                    {
                        HeadStart = h0
                        HeadStep = hs
                        HeadCount = hc
                        FirstPosition = full * w + s
                        Segments = 1L
                        SegmentStride = w
                        Rows = rowsIn tail s
                        Rate = r
                    }
    ]

/// The view of batch item `item` of a contiguous `[b, h, n, e]` tensor for a part: `[heads, segments, rows, e]`.
let view (part: Part) (item: int64) (x: torch.Tensor) : torch.Tensor =
    let h, n, e = x.shape.[1], x.shape.[2], x.shape.[3]

    x.as_strided (
        [| part.HeadCount; part.Segments; part.Rows; e |],
        [| part.HeadStep * n * e; part.SegmentStride * e; part.Rate * e; 1L |],
        x.storage_offset ()
        + item * h * n * e
        + part.HeadStart * n * e
        + part.FirstPosition * e
    )

/// The view of batch item `item` of a contiguous `[b, h, n]` tensor for a part: `[heads, segments, rows]`.
let viewRows (part: Part) (item: int64) (x: torch.Tensor) : torch.Tensor =
    let h, n = x.shape.[1], x.shape.[2]

    x.as_strided (
        [| part.HeadCount; part.Segments; part.Rows |],
        [| part.HeadStep * n; part.SegmentStride; part.Rate |],
        x.storage_offset () + item * h * n + part.HeadStart * n + part.FirstPosition
    )
