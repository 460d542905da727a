/// CASM select-and-merge attention as tensor combinators, one step each:
/// split into blocks → block summaries → correlation scores → selection → merge → attention.
/// Notation: tensors `[batch, heads, seq, headDim]` = `[B, H, n, d]`; b block size, nb blocks,
/// m merge factor, ng query groups, S selected blocks per group (padded to the largest), R = m·b rows.
/// Explicit (masked softmax) and differentiable in q, k and v; which blocks are chosen is discrete, and the
/// trainable selection's weights on the chosen blocks are differentiable.
module LongNet.Casm.SelectMerge

open System
open TorchSharp
open LongNet
open LongNet.Modules

/// The dtype scores are computed in for inputs of `dtype`: float64 stays float64, anything else float32.
let scoreType (dtype: torch.ScalarType) : torch.ScalarType =
    if dtype = torch.ScalarType.Float64 then
        torch.ScalarType.Float64
    else
        torch.ScalarType.Float32

/// Splits `x` `[B, H, n, d]` into blocks `[B, H, nb, b, d]` (the last one zero-padded) and returns
/// them with the validity of each slot `[nb, b]` (bool; false = padding).
let splitBlocks (blockSize: int) (x: torch.Tensor) : torch.Tensor * torch.Tensor =
    let n = x.shape.[2]
    let b = int64 blockSize
    let blocks = (n + b - 1L) / b
    let pad = blocks * b - n

    let padded =
        if pad = 0L then
            x.alias ()
        else
            torch.cat (
                [|
                    x
                    torch.zeros ([| x.shape.[0]; x.shape.[1]; pad; x.shape.[3] |], dtype = x.dtype, device = x.device)
                |],
                2L
            )

    let valid =
        torch.tensor(Array.init (int (blocks * b)) (fun i -> int64 i < n), device = x.device).reshape(blocks, b)

    padded.reshape (x.shape.[0], x.shape.[1], blocks, b, x.shape.[3]), valid

/// Mean of the real rows: `x` `[…, rows, d]`, `valid` `[…, rows]` (bool, broadcastable; ≥ 1 real row
/// each) → `[…, d]`.
let maskedMean (x: torch.Tensor) (valid: torch.Tensor) : torch.Tensor =
    let w = valid.to_type(x.dtype).unsqueeze -1L
    (x * w).sum(-2L) / w.sum (-2L)

/// Block summaries: the mean of each key block's real keys, `[B, H, nb, b, d]`, `[nb, b]` → `[B, H, nb, d]`.
let blockSummaries (blocks: torch.Tensor) (valid: torch.Tensor) : torch.Tensor = maskedMean blocks valid

/// Groups m adjacent query blocks: `[B, H, nb, b, d]`, `[nb, b]` → `[B, H, ng, m·b, d]` and `[ng, m·b]`
/// (missing blocks of the last group are zero padding).
let groupBlocks (mergeFactor: int) (blocks: torch.Tensor) (valid: torch.Tensor) : torch.Tensor * torch.Tensor =
    let s = blocks.shape
    let nb, b, m = s.[2], s.[3], int64 mergeFactor
    let groups = (nb + m - 1L) / m
    let extra = groups * m - nb

    let blocks, valid =
        if extra = 0L then
            blocks.alias (), valid.alias ()
        else
            torch.cat (
                [|
                    blocks
                    torch.zeros ([| s.[0]; s.[1]; extra; b; s.[4] |], dtype = blocks.dtype, device = blocks.device)
                |],
                2L
            ),
            torch.cat (
                [|
                    valid
                    torch.zeros ([| extra; b |], dtype = torch.ScalarType.Bool, device = valid.device)
                |],
                0L
            )

    blocks.reshape (s.[0], s.[1], groups, m * b, s.[4]), valid.reshape (groups, m * b)

/// Causal query-group summaries `[B, H, n, d]` → `[B, H, ng, d]`: for group g starting at position
/// s = g·m·b, the mean of the queries at positions max(0, s − b + 1) … s — the b queries ending at the
/// group's first row, which every row of the group may see. (The mean over the group's own rows would let
/// later rows' queries steer the selection of earlier rows: a leak from the future in a causal model.)
let causalGroupSummaries (blockSize: int) (mergeFactor: int) (groups: int) (q: torch.Tensor) : torch.Tensor =
    let s = q.shape
    let b, width = int64 blockSize, int64 (blockSize * mergeFactor)

    let prefix =
        torch.cat (
            [|
                torch.zeros ([| s.[0]; s.[1]; 1L; s.[3] |], dtype = q.dtype, device = q.device)
                q.cumsum 2L
            |],
            2L
        )

    let first = Array.init groups (fun g -> int64 g * width)
    let ends = first |> Array.map (fun f -> f + 1L)
    let starts = first |> Array.map (fun f -> max 0L (f - b + 1L))
    let index (a: int64[]) = torch.tensor (a, device = q.device)

    let counts =
        torch.tensor(Array.map2 (fun e st -> float (e - st)) ends starts, dtype = q.dtype, device = q.device).unsqueeze
            -1L

    (prefix.index_select (2L, index ends) - prefix.index_select (2L, index starts))
    / counts

/// Correlation scores: each query group's mean query · each key-block summary,
/// `[B, H, ng, d]` × `[B, H, nb, d]` → `[B, H, ng, nb]`.
let correlationScores (groupQueries: torch.Tensor) (keySummaries: torch.Tensor) : torch.Tensor =
    groupQueries.matmul (keySummaries.transpose (-2L, -1L))

/// The selected key blocks of every (batch, head, group), from scores `[B, H, ng, nb]`:
/// `result.[((β·H)+η)·ng + g]` = `SelectMergePlan.select` of that row (ascending block indices).
let selectBlocks (config: SelectMergeConfig) (scores: torch.Tensor) : int[][] =
    let s = scores.shape
    let nb = int s.[3]
    let rows = int (s.[0] * s.[1] * s.[2])
    let groups = int s.[2]

    let values =
        scores.detach().to_type(torch.ScalarType.Float64).cpu().contiguous().data<float>().ToArray()

    Array.init rows (fun r -> SelectMergePlan.select config nb (r % groups) (Array.sub values (r * nb) nb))

/// The selection of `selectBlocks` computed from the summaries a chunk of query groups at a time, so
/// memory stays linear in the length: each chunk's scores `[B, H, c, nb]` (at most `maxScores`
/// entries) are masked to the candidates (causal: earlier blocks; not own, local or the sink) and ranked with
/// `topk` on the tensor. NaN and −∞ scores rank last but stay candidates, as in `selectBlocks`; exact
/// ties may be broken differently.
let selectInChunks
    (config: SelectMergeConfig)
    (maxScores: int64)
    (groupQueries: torch.Tensor)
    (keySummaries: torch.Tensor)
    : int[][] =
    let s = groupQueries.shape
    let bsz, heads, groups = s.[0], s.[1], int s.[2]
    let nb = int keySummaries.shape.[2]
    let m = config.MergeFactor
    let result = Array.zeroCreate<int[]>(int (bsz * heads) * groups)

    let chunk =
        int (max 1L (min (int64 groups) (maxScores / max 1L (bsz * heads * int64 nb))))

    let take = min config.TopK nb
    let keys = keySummaries.transpose (-2L, -1L)

    for g0 in 0..chunk .. groups - 1 do
        use scope = torch.NewDisposeScope()
        let c = min chunk (groups - g0)
        let device = groupQueries.device
        // causal: no group of the chunk may pick a block at or after its last group's first own block
        let width = if config.Causal then min nb ((g0 + c - 1) * m) else nb

        let scores =
            groupQueries.narrow(2L, int64 g0, int64 c).matmul(keys.narrow (-1L, 0L, int64 width))

        // ranked in float32 at least, whose lowest finite value float16 and bfloat16 cannot hold
        let scores = scores.to_type (scoreType scores.dtype)

        // NaN and −∞ become the lowest finite score of the dtype: still candidates, ranked last
        let lowest =
            if scores.dtype = torch.ScalarType.Float64 then
                Double.MinValue
            else
                float Single.MinValue

        let scores = scores.nan_to_num (lowest, Double.PositiveInfinity, lowest)
        let j = torch.arange(int64 width, device = device).view(1L, -1L)
        let g = torch.arange(int64 g0, int64 (g0 + c), device = device).view(-1L, 1L)
        let firstOwn = g * int64 m
        // own and local blocks: kept whatever the scores
        let nearby =
            j.ge(firstOwn - int64 config.LocalBlocks).logical_and(j.lt (firstOwn + int64 m))

        let allowed =
            if config.Causal then
                j.lt firstOwn
            else
                torch.ones_like (nearby)

        use zero = 0L.ToScalar()

        let sinkTaken =
            if config.Sink then
                j.eq(zero).logical_and(g.gt zero)
            else
                torch.zeros_like (nearby)

        let candidate =
            allowed.logical_and(nearby.logical_not ()).logical_and(sinkTaken.logical_not ())

        use negativeInfinity = Double.NegativeInfinity.ToScalar()
        let masked = scores.masked_fill (candidate.logical_not (), negativeInfinity)
        let take = min take width

        let chosen, chosenValues =
            if take = 0 then
                [||], [||]
            else
                let struct (values, indices) = masked.topk (take, -1, true, true)

                indices.cpu().contiguous().data<int64>().ToArray(),
                values.to_type(torch.ScalarType.Float64).cpu().contiguous().data<float>().ToArray()

        for b in 0 .. int bsz - 1 do
            for h in 0 .. int heads - 1 do
                for i in 0 .. c - 1 do
                    let group = g0 + i
                    let row = ((b * int heads) + h) * c + i

                    let picked =
                        [|
                            for t in 0 .. take - 1 do
                                if not (Double.IsNegativeInfinity chosenValues.[row * take + t]) then
                                    int chosen.[row * take + t]
                        |]

                    result.[((b * int heads) + h) * groups + group] <-
                        Array.concat [ SelectMergePlan.keptBlocks config nb group; picked ]
                        |> Array.sort

    result

/// The merged key/value sequences: for each group, its selected blocks (ascending) concatenated.
/// Inputs: blocks `[B, H, nb, b, d]`, the selection, and the slot count S (≥ every selection's length).
/// Output `[B, H, ng, S·b, d]`; unused slots repeat block 0 and must be masked (see `mergedKeyLayout`).
let merge (selection: int[][]) (slots: int) (blocks: torch.Tensor) : torch.Tensor =
    let s = blocks.shape
    let bsz, heads, nb, b, d = s.[0], s.[1], s.[2], s.[3], s.[4]
    let groups = int64 selection.Length / (bsz * heads)

    let index =
        Array.init (selection.Length * slots) (fun i ->
            let sel = selection.[i / slots]
            let slot = i % slots
            if slot < sel.Length then int64 sel.[slot] else 0L)

    let index =
        torch
            .tensor(index, device = blocks.device)
            .reshape(bsz, heads, groups * int64 slots, 1L)
            .expand(bsz, heads, groups * int64 slots, b * d)

    let flat = blocks.reshape (bsz, heads, nb, b * d)
    torch.gather(flat, 2L, index).reshape(bsz, heads, groups, int64 slots * b, d)

/// The score bias of the trainable selection on the merged keys of groups firstGroup … firstGroup+c−1,
/// `[B, H, c, S·b]` (`selection` and `groupQueries` hold those groups only): a slot holding a block
/// that group g chose by score gets log-softmax, over the blocks g chose, of (Q̄_g · K̄_j)·`scale`; slots
/// of kept blocks (own, local, sink) and padding get 0. Inputs: the group summaries `[B, H, ng, d]`, the
/// key-block summaries `[B, H, nb, d]`, the selection and the slot count S. Differentiable in both
/// summaries, so the loss trains the scores that rank the blocks.
let selectionBias
    (config: SelectMergeConfig)
    (firstGroup: int)
    (scale: float)
    (selection: int[][])
    (slots: int)
    (groupQueries: torch.Tensor)
    (keySummaries: torch.Tensor)
    : torch.Tensor =
    let s = groupQueries.shape
    let bsz, heads, groups, d = s.[0], s.[1], s.[2], s.[3]
    let nb = int keySummaries.shape.[2]
    let cells = selection.Length * slots

    let blockAt i =
        let sel = selection.[i / slots]
        if i % slots < sel.Length then sel.[i % slots] else -1

    let index =
        torch
            .tensor(Array.init cells (fun i -> int64 (max 0 (blockAt i))), device = groupQueries.device)
            .reshape(bsz, heads, groups * int64 slots, 1L)
            .expand(bsz, heads, groups * int64 slots, d)

    let chosen =
        torch
            .tensor(
                Array.init cells (fun i ->
                    let block = blockAt i

                    block >= 0
                    && not (SelectMergePlan.isKept config nb (firstGroup + (i / slots) % int groups) block)),
                device = groupQueries.device
            )
            .reshape(bsz, heads, groups, int64 slots)

    let summaries =
        torch.gather(keySummaries, 2L, index).reshape(bsz, heads, groups, int64 slots, d)

    use scaleScalar = scale.ToScalar()
    // a finite floor, so a group that chose nothing gets no NaN in the backward of logsumexp
    use floor = -1e30.ToScalar()

    // float32 at least: the floor and the log-softmax need its range (float16 would overflow)
    let wide = scoreType groupQueries.dtype

    let scores =
        (groupQueries.unsqueeze (-2L) * summaries)
            .sum(-1L)
            .to_type(wide)
            .mul(scaleScalar)
            .masked_fill(chosen.logical_not (), floor)

    let logWeights = scores - scores.logsumexp (-1L, true)
    let bias = torch.where (chosen, logWeights, torch.zeros_like logWeights)
    let b = int64 config.BlockSize

    bias.unsqueeze(-1L).expand(bsz, heads, groups, int64 slots, b).reshape(bsz, heads, groups, int64 slots * b)

/// Positions of the merged keys, each `[B, H, ng, S·b]`: (original position (int64), valid = a real key in a
/// used slot (bool)). A key's renumbered position is its slot index in the merged sequence, 0 … S·b−1.
let mergedKeyLayout
    (selection: int[][])
    (slots: int)
    (blockSize: int)
    (length: int)
    (shape: int64[])
    (device: torch.Device)
    : torch.Tensor * torch.Tensor =
    let width = slots * blockSize
    let total = selection.Length * width

    let original =
        Array.init total (fun i ->
            let sel = selection.[i / width]
            let slot = (i % width) / blockSize
            let block = if slot < sel.Length then sel.[slot] else 0
            int64 (block * blockSize + i % blockSize))

    let valid =
        Array.init total (fun i ->
            let slot = (i % width) / blockSize
            slot < selection.[i / width].Length && original.[i] < int64 length)

    torch.tensor(original, device = device).reshape shape, torch.tensor(valid, device = device).reshape shape

/// `groupQueryLayout` for the selection rows of groups firstGroup … firstGroup+groups−1 (`selection` ordered
/// by (batch, head), then group).
let groupQueryLayoutFrom
    (config: SelectMergeConfig)
    (selection: int[][])
    (firstGroup: int)
    (groups: int)
    (shape: int64[])
    (device: torch.Device)
    : torch.Tensor * torch.Tensor =
    let b, m = config.BlockSize, config.MergeFactor
    let width = m * b
    let total = selection.Length * width

    let original =
        Array.init total (fun i -> int64 ((firstGroup + (i / width) % groups) * width + i % width))

    let renumbered =
        Array.init total (fun i ->
            let block = int original.[i] / b
            let slot = Array.IndexOf(selection.[i / width], block)
            if slot < 0 then 0L else int64 (slot * b + i % b))

    let make (a: int64[]) =
        torch.tensor(a, device = device).reshape shape

    make original, make renumbered

/// Positions of the grouped queries `[B, H, ng, m·b]` (int64): (original position, renumbered
/// position = where the query's own block sits in its group's merged sequence, plus its offset).
let groupQueryLayout
    (config: SelectMergeConfig)
    (selection: int[][])
    (groups: int)
    (shape: int64[])
    (device: torch.Device)
    : torch.Tensor * torch.Tensor =
    groupQueryLayoutFrom config selection 0 groups shape device

/// The rotation applied to queries and keys: inverse frequencies f_i `[d/2]` (any RoPE scaling) and an
/// amplitude that multiplies both (YaRN's temperature; 1 otherwise).
type Rotation =
    {
        /// The inverse frequency of each interleaved pair, f_i (angle = position · f_i).
        Frequencies: float[]
        /// The factor multiplying the rotated q and k.
        Amplitude: float
    }

/// The rotation of plain RoPE with `settings` for head dimension d.
let ropeRotation (settings: RopeSettings) (headDim: int) : Rotation =
    {
        Frequencies = Rope.inverseFrequencies settings.Base headDim
        Amplitude = 1.0
    }

/// Rotates `x` `[…, n, d]` (interleaved pairs, as `Rope.rotate`) at per-row `positions` `[…, n]` (int64,
/// broadcastable to the leading dims of `x`): angles p·f_i in float64, times the amplitude, then x's dtype.
let rotateWith (rotation: Rotation) (positions: torch.Tensor) (x: torch.Tensor) : torch.Tensor =
    let d = int x.shape.[x.shape.Length - 1]

    if rotation.Frequencies.Length * 2 <> d then
        invalidArg "rotation" $"the rotation has {rotation.Frequencies.Length} frequencies; head dim {d} needs {d / 2}."

    let frequencies =
        torch.tensor (rotation.Frequencies, dtype = torch.float64, device = x.device)

    // one table row per position 0 … max (float64 angles, then x's dtype), gathered by position: the
    // renumbered positions repeat across groups, so the table stays small whatever the length
    let span =
        if positions.numel () = 0L then
            1L
        else
            positions.max().item<int64>() + 1L

    let angles =
        torch.arange(span, dtype = torch.float64, device = x.device).unsqueeze(-1L).mul frequencies

    let widen (a: torch.Tensor) (b: torch.Tensor) =
        torch.stack([| a; b |], -1L).flatten(-2L)

    use amplitude = rotation.Amplitude.ToScalar()

    let lookup (table: torch.Tensor) =
        table
            .to_type(x.dtype)
            .index_select(0L, positions.reshape (-1L))
            .reshape(Array.append positions.shape [| int64 d |])

    let cos = lookup (widen (angles.cos ()) (angles.cos ()) * amplitude)
    let sin = lookup (widen (angles.sin().neg()) (angles.sin ()) * amplitude)
    LongNet.TensorOps.plus (x * cos) (Rope.swapPairs x * sin)

/// RoPE (interleaved pairs, as `Rope.rotate`) at per-row `positions` `[…, n]` (int64, broadcastable to
/// the leading dims of `x`) for `x` `[…, n, d]`: angles p·θ^(−2i/d) in float64, then x's dtype.
let rotateAt (settings: RopeSettings) (positions: torch.Tensor) (x: torch.Tensor) : torch.Tensor =
    let d = int x.shape.[x.shape.Length - 1]
    rotateWith (ropeRotation settings d) positions x

/// Masked softmax attention of grouped queries over merged keys: q `[…, R, d]`, k/v `[…, K, d]`,
/// `allowed` `[…, R, K]` (bool), an optional score bias per key `[…, K]` → (out `[…, R, d]`, lse
/// `[…, R]`), Attend-style (float64 stays float64).
let attendMasked
    (scale: float)
    (bias: torch.Tensor option)
    (allowed: torch.Tensor)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let dtype = scoreType q.dtype
    use scaleScalar = scale.ToScalar()
    use fill = Attend.maskedScore.ToScalar()

    let scores =
        q.to_type(dtype).matmul(k.to_type(dtype).transpose(-2L, -1L)).mul(scaleScalar)

    let scores =
        match bias with
        | Some b -> scores + b.to_type(dtype).unsqueeze -2L
        | None -> scores

    let scores = scores.masked_fill (allowed.logical_not (), fill)

    let lse = scores.logsumexp (-1L, true)
    let out = (scores - lse).exp().matmul(v.to_type dtype)
    out.to_type q.dtype, lse.squeeze -1L

/// Select-and-merge attention `[B, H, n, d]` → (out `[B, H, n, d]`, lse `[B, H, n]`): each group of m
/// query blocks attends over the concatenation of its kept and selected key blocks (scored against the
/// group's mean query; causal: `causalGroupSummaries`, so no row's selection depends on later rows), with
/// causal masking on original positions and padding masked; the trainable selection adds `selectionBias`;
/// `rotation` rotates q/k at original or renumbered positions. Without autograd the query groups go a
/// chunk of at most `maxScores` attention scores at a time.
let attendRotatedChunked
    (maxScores: int64)
    (config: SelectMergeConfig)
    (rotation: Rotation option)
    (scale: float)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let config = SelectMergeConfig.validate config

    if q.dim () <> 4L || k.dim () <> 4L || v.dim () <> 4L then
        invalidArg "q" "q, k and v must be [batch, heads, seq, headDim]."

    let n = q.shape.[2]

    let q, k =
        match rotation with
        | Some r when not config.RenumberPositions ->
            let positions = torch.arange (n, dtype = torch.int64, device = q.device)
            rotateWith r positions q, rotateWith r positions k
        | _ -> q.alias (), k.alias ()

    let qBlocks, valid = splitBlocks config.BlockSize q
    let kBlocks, _ = splitBlocks config.BlockSize k
    let vBlocks, _ = splitBlocks config.BlockSize v
    let qGroups, qValid = groupBlocks config.MergeFactor qBlocks valid

    let groupSummaries =
        if config.Causal then
            causalGroupSummaries config.BlockSize config.MergeFactor (int qGroups.shape.[2]) q
        else
            maskedMean qGroups qValid

    let keySummaries = blockSummaries kBlocks valid
    // scores a chunk of query groups at a time: memory linear in the length (16 M scores per chunk)
    let selection = selectInChunks config (1L <<< 24) groupSummaries keySummaries

    let slots = selection |> Array.map Array.length |> Array.max
    let bsz, heads, groups = q.shape.[0], q.shape.[1], int qGroups.shape.[2]
    let rowsPerGroup = qGroups.shape.[3]

    // attention for query groups g0 … g0+c−1 → (out `[B, H, c·m·b, d]`, lse `[B, H, c·m·b]`)
    let attendGroups (g0: int) (c: int) =
        let selection =
            Array.init (int (bsz * heads) * c) (fun i -> selection.[(i / c) * groups + g0 + i % c])

        let qGroups = qGroups.narrow (2L, int64 g0, int64 c)
        let kMerged = merge selection slots kBlocks
        let vMerged = merge selection slots vBlocks

        let keyOriginal, keyValid =
            mergedKeyLayout selection slots config.BlockSize (int n) kMerged.shape.[..3] q.device

        let queryOriginal, queryRenumbered =
            groupQueryLayoutFrom config selection g0 c qGroups.shape.[..3] q.device

        let qGroups, kMerged =
            match rotation with
            | Some r when config.RenumberPositions ->
                // every group's merged keys sit at slots 0 … S·b−1: one row of positions, broadcast
                let keySlots =
                    torch.arange(kMerged.shape.[3], dtype = torch.int64, device = q.device).view(1L, 1L, 1L, -1L)

                rotateWith r queryRenumbered qGroups, rotateWith r keySlots kMerged
            | _ -> qGroups, kMerged

        let allowed = keyValid.unsqueeze -2L

        let allowed =
            if config.Causal then
                allowed.logical_and (keyOriginal.unsqueeze(-2L).le(queryOriginal.unsqueeze -1L))
            else
                allowed

        let bias =
            match config.Selection with
            | BlockSelection.Correlation -> None
            | BlockSelection.Trainable ->
                Some(
                    selectionBias
                        config
                        g0
                        scale
                        selection
                        slots
                        (groupSummaries.narrow (2L, int64 g0, int64 c))
                        keySummaries
                )

        let out, lse = attendMasked scale bias allowed qGroups kMerged vMerged
        let rows = int64 c * rowsPerGroup
        out.reshape (bsz, heads, rows, q.shape.[3]), lse.reshape (bsz, heads, rows)

    // Without autograd the groups go a chunk at a time (at most 16 M scores each), each chunk's merged
    // keys and scores freed before the next: memory linear in the length with a small constant. With
    // autograd every group's tensors are kept for the backward anyway, so they go at once.
    let needsGrad =
        torch.is_grad_enabled ()
        && (q.requires_grad || k.requires_grad || v.requires_grad)

    let perGroup =
        max 1L (bsz * heads * rowsPerGroup * int64 slots * int64 config.BlockSize)

    let chunk =
        if needsGrad then
            groups
        else
            int (max 1L (min (int64 groups) (maxScores / perGroup)))

    let parts =
        [
            for g0 in 0..chunk .. groups - 1 do
                let c = min chunk (groups - g0)

                if needsGrad then
                    attendGroups g0 c
                else
                    use _chunkScope = torch.NewDisposeScope()
                    let out, lse = attendGroups g0 c
                    out.MoveToOuterDisposeScope(), lse.MoveToOuterDisposeScope()
        ]

    let join (tensors: torch.Tensor list) =
        match tensors with
        | [ single ] -> single
        | many -> torch.cat (Array.ofList many, 2L)

    (join (parts |> List.map fst)).narrow(2L, 0L, n), (join (parts |> List.map snd)).narrow(2L, 0L, n)

/// Select-and-merge attention `[B, H, n, d]` → (out, lse): `attendRotatedChunked` with at most 16 M
/// attention scores per chunk of query groups.
let attendRotated
    (config: SelectMergeConfig)
    (rotation: Rotation option)
    (scale: float)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    attendRotatedChunked (1L <<< 24) config rotation scale q k v

/// Select-and-merge attention with plain RoPE (`rope`) at original or renumbered positions: see `attendRotated`.
let attend
    (config: SelectMergeConfig)
    (rope: RopeSettings option)
    (scale: float)
    (q: torch.Tensor)
    (k: torch.Tensor)
    (v: torch.Tensor)
    : torch.Tensor * torch.Tensor =
    let rotation =
        rope |> Option.map (fun r -> ropeRotation r (int q.shape.[q.shape.Length - 1]))

    attendRotated config rotation scale q k v
