/// The layout of one group (w, r) over a sequence: its clipped segment length and rate, each head's
/// offset, which slots hold real positions, and the gather/scatter between positions and blocks.
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

/// Scatters blocks back: `[b, h, s, m, e]` → `[b, h, n, e]`, zero where the group has no slot.
let scatter (layout: Layout) (y: torch.Tensor) : torch.Tensor =
    Scatter.rows layout.W layout.R layout.N layout.Offsets (torch.zeros (1L, dtype = y.dtype, device = y.device)) y

/// Flattens blocks `[b, h, s, m, e]` to `[b, h·s, m, e]`, the 4-D layout fused kernels take.
let flatten (blocks: torch.Tensor) : torch.Tensor =
    blocks.reshape (blocks.shape.[0], blocks.shape.[1] * blocks.shape.[2], blocks.shape.[3], blocks.shape.[4])

/// Undoes `flatten` for a layout with `heads` heads: `[b, h·s, m, e]` → `[b, h, s, m, e]`.
let unflatten (heads: int64) (blocks: torch.Tensor) : torch.Tensor =
    blocks.reshape (blocks.shape.[0], heads, blocks.shape.[1] / heads, blocks.shape.[2], blocks.shape.[3])

/// The additive key mask `[1, h·s, 1, m]` (0 for real keys, −∞ for padding), or None when every slot is real.
let keyMask (layout: Layout) (dtype: torch.ScalarType) : torch.Tensor option =
    if layout.AllReal then
        None
    else
        let real = layout.Real.reshape (1L, -1L, 1L, layout.Real.shape.[2])
        let zeros = torch.zeros (real.shape, dtype = dtype, device = real.device)
        use fill = System.Double.NegativeInfinity.ToScalar()
        Some(zeros.masked_fill (real.logical_not (), fill))
