/// Step 5 of dilated attention: put each slot's output and log-sum-exp back at its original position.
/// Notation: b batch, h heads, s segments, m slots, w segment length, r dilation, n length, d head dim.
module LongNet.Scatter

open TorchSharp

/// Scatters slot rows `[b, h, s, m, e]` to positions `[b, h, n, e]` (slot t of head j → local position
/// s_j + r·t of its segment), writing `fill` (broadcastable to one element) where no slot lands.
let rows (w: int) (r: int) (n: int64) (offsets: torch.Tensor) (fill: torch.Tensor) (y: torch.Tensor) =
    let b, h, s, m, e = y.shape.[0], y.shape.[1], y.shape.[2], y.shape.[3], y.shape.[4]

    let segmented =
        if r = 1 then
            y
        else
            let index = offsets.view(1L, -1L, 1L, 1L, 1L, 1L).expand(b, h, s, m, 1L, e)
            let canvas = fill.expand(b, h, s, m, int64 r, e).contiguous()
            canvas.scatter(4L, index, y.unsqueeze 4L).view(b, h, s, m * int64 r, e)

    segmented.narrow(3L, 0L, int64 w).reshape(b, h, s * int64 w, e).narrow(2L, 0L, n)

/// Scatters a group's block outputs `[b, h, s, m, d]` and lse `[b, h, s, m]` back to `[b, h, n, d]` and
/// `[b, h, n]`. Positions the group does not cover get output 0 and lse −∞ (no contribution when mixing).
/// `real` (`[h, s, m]` bool) marks slots holding real positions; the others are dropped.
let scatter
    (w: int)
    (r: int)
    (n: int64)
    (offsets: torch.Tensor)
    (real: torch.Tensor)
    (out: torch.Tensor)
    (lse: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let negInf =
        torch.tensor (System.Double.NegativeInfinity, dtype = lse.dtype, device = lse.device)

    let zero = torch.zeros (1L, dtype = out.dtype, device = out.device)
    let lse = torch.where (real.unsqueeze 0L, lse, negInf)
    let out = rows w r n offsets zero out
    let lse = rows w r n offsets negInf (lse.unsqueeze -1L)
    out, lse.squeeze -1L
