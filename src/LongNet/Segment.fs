/// Step 1 of dilated attention: split the sequence into segments of length w, padding the last.
/// Notation: b batch, h heads, n sequence length, d head dim, w segment length, s segments.
module LongNet.Segment

open TorchSharp

/// The number of segments s = ceil(n / w).
let count (w: int) (n: int64) : int64 = (n + int64 w - 1L) / int64 w

/// Splits `[b, h, n, d]` into `[b, h, s, w, d]`, zero-padding positions n … s·w−1 (a view when n = s·w).
let split (w: int) (x: torch.Tensor) : torch.Tensor =
    let b, h, n, d = x.shape.[0], x.shape.[1], x.shape.[2], x.shape.[3]
    let s = count w n

    let padded =
        if s * int64 w = n then
            x
        else
            torch.nn.functional.pad (x, [| 0L; 0L; 0L; s * int64 w - n |])

    padded.view (b, h, s, int64 w, d)
