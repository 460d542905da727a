/// CASM select-and-merge attention (the CASM paper, arXiv 2410.04211): the validated config and the pure index math —
/// blocks, query groups, which key blocks each group selects, and how many (query, key) scores that costs.
/// Notation: n sequence length, b block size, nb = ⌈n/b⌉ blocks, m merge factor, ng = ⌈nb/m⌉ query groups,
/// k top-k. Query group g holds the query blocks g·m … g·m+m−1 ("own blocks").
namespace LongNet.Casm

open System

/// How select-and-merge ranks and weights the candidate key blocks of a query group.
[<RequireQualifiedAccess>]
type BlockSelection =
    /// The paper's rule: the top-k candidates by mean query · mean key; the choice carries no gradient.
    | Correlation
    /// The same ranking, and the chosen blocks' scores (times the attention scale) also weight them: each
    /// chosen block's keys get the log-softmax of the scores over the chosen blocks added to their attention
    /// scores, so the loss trains the scores that pick the blocks (with top-k ≥ 2; over one block it is 0).
    | Trainable

/// Settings of select-and-merge attention; build with `SelectMergeConfig.create` (it validates).
type SelectMergeConfig =
    {
        /// Rows per block b (≥ 1).
        BlockSize: int
        /// How many key blocks besides the own (and sink) blocks each query group keeps (≥ 0).
        TopK: int
        /// How many adjacent query blocks share one selection m (≥ 1).
        MergeFactor: int
        /// Always keep key block 0 (an attention sink), in addition to the top-k.
        Sink: bool
        /// Queries see only keys at original positions ≤ their own; only earlier blocks are candidates.
        Causal: bool
        /// RoPE uses positions renumbered 0…len−1 over the merged sequence instead of original positions.
        RenumberPositions: bool
        /// How many blocks right before the group's first own block it always keeps (≥ 0): a local window.
        LocalBlocks: int
        /// How candidates are ranked and weighted.
        Selection: BlockSelection
    }

/// Validation and construction of `SelectMergeConfig`.
module SelectMergeConfig =
    /// Checks every field; raises ArgumentOutOfRangeException naming the parameter and its allowed range.
    let validate (config: SelectMergeConfig) : SelectMergeConfig =
        if config.BlockSize < 1 then
            raise (
                ArgumentOutOfRangeException(
                    "blockSize",
                    box config.BlockSize,
                    $"blockSize must be ≥ 1, got {config.BlockSize}."
                )
            )

        if config.TopK < 0 then
            raise (ArgumentOutOfRangeException("topK", box config.TopK, $"topK must be ≥ 0, got {config.TopK}."))

        if config.MergeFactor < 1 then
            raise (
                ArgumentOutOfRangeException(
                    "mergeFactor",
                    box config.MergeFactor,
                    $"mergeFactor must be ≥ 1, got {config.MergeFactor}."
                )
            )

        if config.LocalBlocks < 0 then
            raise (
                ArgumentOutOfRangeException(
                    "localBlocks",
                    box config.LocalBlocks,
                    $"localBlocks must be ≥ 0, got {config.LocalBlocks}."
                )
            )

        config

    /// A validated config from its fields, with no local blocks and the paper's correlation selection.
    let create
        (blockSize: int)
        (topK: int)
        (mergeFactor: int)
        (sink: bool)
        (causal: bool)
        (renumberPositions: bool)
        : SelectMergeConfig =
        validate
            {
                BlockSize = blockSize
                TopK = topK
                MergeFactor = mergeFactor
                Sink = sink
                Causal = causal
                RenumberPositions = renumberPositions
                LocalBlocks = 0
                Selection = BlockSelection.Correlation
            }

/// Pure index math of select-and-merge attention.
module SelectMergePlan =
    /// The number of blocks nb = ⌈n/b⌉ of a sequence of length n (≥ 0).
    let blockCount (config: SelectMergeConfig) (length: int) : int =
        if length < 0 then
            raise (ArgumentOutOfRangeException("length", box length, $"length must be ≥ 0, got {length}."))

        (length + config.BlockSize - 1) / config.BlockSize

    /// The number of query groups ng = ⌈nb/m⌉ for nb blocks.
    let groupCount (config: SelectMergeConfig) (blocks: int) : int =
        (blocks + config.MergeFactor - 1) / config.MergeFactor

    /// The own (query) blocks of group g: g·m … min(nb, g·m+m)−1, ascending.
    let ownBlocks (config: SelectMergeConfig) (blocks: int) (group: int) : int[] =
        [|
            group * config.MergeFactor .. min blocks (group * config.MergeFactor + config.MergeFactor) - 1
        |]

    /// Whether group g always keeps block 0 as a sink (sink on, and block 0 not already an own block).
    let private hasSink (config: SelectMergeConfig) (blocks: int) (group: int) =
        config.Sink
        && blocks > 0
        && not (Array.contains 0 (ownBlocks config blocks group))

    /// The local blocks group g always keeps: the `LocalBlocks` blocks right before its first own block.
    let localBlocks (config: SelectMergeConfig) (blocks: int) (group: int) : int[] =
        let first = min blocks (group * config.MergeFactor)
        [| max 0 (first - config.LocalBlocks) .. first - 1 |]

    /// Whether block j is one that group g keeps whatever the scores: own, local or the sink.
    let isKept (config: SelectMergeConfig) (blocks: int) (group: int) (j: int) : bool =
        let first = group * config.MergeFactor

        (j >= first && j < first + config.MergeFactor)
        || (j < first && j >= first - config.LocalBlocks)
        || (j = 0 && hasSink config blocks group)

    /// The blocks group g keeps whatever the scores, ascending and distinct: own, local and the sink.
    let keptBlocks (config: SelectMergeConfig) (blocks: int) (group: int) : int[] =
        let sink = if hasSink config blocks group then [| 0 |] else [||]

        Array.concat [ sink; localBlocks config blocks group; ownBlocks config blocks group ]
        |> Array.distinct
        |> Array.sort

    /// The key blocks group g may pick by score: not own, local or the sink, and (causal) before its
    /// first own block.
    let candidates (config: SelectMergeConfig) (blocks: int) (group: int) : int[] =
        let limit = if config.Causal then group * config.MergeFactor else blocks

        [| 0 .. limit - 1 |]
        |> Array.filter (fun j -> not (isKept config blocks group j))

    /// The key blocks group g keeps, ascending: own ∪ local blocks ∪ {0 if sink} ∪ the top-k candidates by
    /// `scores` (`scores.[j]` = score of key block j, length nb). Ties go to the lower block index;
    /// NaN scores rank last.
    let select (config: SelectMergeConfig) (blocks: int) (group: int) (scores: float[]) : int[] =
        if scores.Length <> blocks then
            invalidArg "scores" $"scores must have one entry per block ({blocks}), got {scores.Length}."

        let key j =
            if Double.IsNaN scores.[j] then
                Double.NegativeInfinity
            else
                scores.[j]

        let chosen =
            candidates config blocks group
            |> Array.sortWith (fun a b ->
                let c = compare (key b) (key a)
                if c <> 0 then c else compare a b)
            |> Array.truncate config.TopK

        Array.concat [ keptBlocks config blocks group; chosen ] |> Array.sort

    /// How many key blocks group g keeps: own + local + sink + min(k, candidates).
    let selectedCount (config: SelectMergeConfig) (blocks: int) (group: int) : int =
        (keptBlocks config blocks group).Length
        + min config.TopK (candidates config blocks group).Length

    /// The (query, key) scores computed for length n: Σ_g (m·b) · (selected_g · b) ≤ ng·m·b·(m+L+k+1)·b (L local blocks),
    /// linear in n for fixed b, k, m (per query block O(b·(k+1)·b) when m = 1).
    let pairCount (config: SelectMergeConfig) (length: int) : int64 =
        let blocks = blockCount config length
        let rows = int64 (config.MergeFactor * config.BlockSize)

        Seq.sumBy
            (fun g -> rows * int64 (selectedCount config blocks g * config.BlockSize))
            (seq { 0 .. groupCount config blocks - 1 })
