/// Step 2–3 of dilated attention: in each segment, head j keeps local positions s_j, s_j + r, s_j + 2r, … < w.
/// Notation: b batch, h heads, s segments, w segment length, r dilation, m = ceil(w / r) slots, d head dim.
module LongNet.Dilate

open TorchSharp

/// The number of slots m = ceil(w / r) a head keeps per segment (the last may be padding).
let slots (w: int) (r: int) : int64 = int64 ((w + r - 1) / r)

/// The offset s_j of every head as an int64 tensor `[h]` on `device`.
let offsets (mode: HeadOffsets) (heads: int) (r: int) (device: torch.Device) : torch.Tensor =
    let values = Array.init heads (fun j -> int64 (HeadOffsets.offset mode heads r j))
    torch.tensor (values, device = device)

let private slotIndex (offsets: torch.Tensor) (shape: int64[]) =
    // [h] → [1, h, 1, 1, 1, 1] broadcast to shape with a size-1 dim 4
    offsets.view(1L, -1L, 1L, 1L, 1L, 1L).expand shape

/// Keeps each head's dilated rows: `[b, h, s, w, d]` → `[b, h, s, m, d]` (slot t of head j is local position s_j + r·t).
let gather (r: int) (offsets: torch.Tensor) (segmented: torch.Tensor) : torch.Tensor =
    if r = 1 then
        segmented
    else
        let b, h, s, w, d =
            segmented.shape.[0], segmented.shape.[1], segmented.shape.[2], segmented.shape.[3], segmented.shape.[4]

        let m = slots (int w) r
        let extra = m * int64 r - w

        let padded =
            if extra = 0L then
                segmented
            else
                torch.nn.functional.pad (segmented, [| 0L; 0L; 0L; extra |])

        let rows = padded.view (b, h, s, m, int64 r, d)
        rows.gather(4L, slotIndex offsets [| b; h; s; m; 1L; d |]).squeeze 4L

/// The original position of every slot, `[h, s, m]` int64, and whether it is real (`[h, s, m]` bool):
/// local position s_j + r·t < w and global position < n.
let positions (w: int) (r: int) (n: int64) (offsets: torch.Tensor) : torch.Tensor * torch.Tensor =
    let device = offsets.device
    let s = Segment.count w n
    let m = slots w r

    let segmentStart =
        (torch.arange (0L, s, 1L, dtype = torch.int64, device = device) * int64 w).view(1L, s, 1L)

    let local =
        offsets.view (-1L, 1L, 1L)
        + torch.arange(0L, m, 1L, dtype = torch.int64, device = device).view(1L, 1L, m)
          * int64 r

    let position = segmentStart + local

    let real =
        local.lt(torch.tensor (int64 w, device = device)).logical_and(position.lt (torch.tensor (n, device = device)))

    position, real
