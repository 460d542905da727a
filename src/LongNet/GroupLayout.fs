/// The layout of one group (w, r) over a sequence: its clipped segment length and rate, each head's
/// offset, which slots hold real positions, and the gather from positions to blocks.
/// Notation: b batch, h heads, n length, s segments, m slots per segment, e any trailing size.
module LongNet.GroupLayout

open TorchSharp

/// One group's layout for a given head count, sequence length and device.
type Layout =
    {
        /// Segment length, clipped to n (a longer segment is n plus masked padding).
        W: int
        /// Dilation rate as configured (it may exceed W when the sequence is short).
        R: int
        /// Sequence length.
        N: int64
        /// Head offsets `[h]` (int64).
        Offsets: torch.Tensor
        /// Real slots `[h, s, m]` (bool): local position < w and global position < n.
        Real: torch.Tensor
        /// Whether every slot is real (no padding to mask).
        AllReal: bool
    }

/// Builds the layout of group `g` for `heads` heads over `n` positions on `device`.
let create (offsets: HeadOffsets) (g: Group) (heads: int) (n: int64) (device: torch.Device) : Layout =
    let w = int (min (int64 g.SegmentLength) n)
    // r stays as configured even when r > n: head j's offset is j mod r (or its block) for the
    // configured r, and a head whose offset lands at or past n keeps no position in this group.
    let r = g.DilationRate
    let headOffsets = Dilate.offsets offsets heads r device
    let _, real = Dilate.positions w r n headOffsets

    {
        W = w
        R = r
        N = n
        Offsets = headOffsets
        Real = real
        AllReal = real.all().item<bool>()
    }

/// Gathers the group's blocks: `[b, h, n, e]` → `[b, h, s, m, e]` (padding slots are zero).
let gather (layout: Layout) (x: torch.Tensor) : torch.Tensor =
    Dilate.gather layout.R layout.Offsets (Segment.split layout.W x)
