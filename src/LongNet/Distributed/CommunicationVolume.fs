/// Communication volume of sequence-parallel dilated attention per rank, for `longnet bench --dist`:
/// measured by running the key/value exchange of the plan on P simulated ranks (payload buffers, no
/// attention arithmetic) and reading each rank's byte counter, next to two baselines computed from the
/// plan. Units: float32 keys and values (2·headDim·4 bytes per row), batch 1, one forward pass
/// (the backward sends the same volume again, in reverse).
module LongNet.Distributed.CommunicationVolume

open System.Runtime.InteropServices
open LongNet

/// Per-rank communication of one forward pass for one rank count P.
type CommunicationRow =
    {
        /// The number of ranks P.
        Ranks: int
        /// The largest bytes sent + received by one rank, as counted by the simulated communicator.
        MaxBytes: int64
        /// The mean bytes sent + received per rank, as counted.
        MeanBytes: float
        /// The largest rows (one head's key and value at one position) sent + received by one rank, from the plan.
        MaxRows: int64
        /// The largest bytes received by one rank (the gathered dilated keys/values), as counted.
        MaxReceivedBytes: int64
        /// The groups whose segments cross a slice boundary (the only ones that communicate).
        CrossingGroups: int
        /// The same segments without dilation (every r = 1): the largest bytes per rank, from the plan.
        UndilatedBytes: int64
        /// All-gathering every rank's full keys and values (what dense sequence parallelism moves): largest bytes per rank.
        AllGatherBytes: int64
        /// The paper's constant: one segment's dilated keys/values per group, h·Σ_g ⌈min(w_g, n) / r_g⌉ rows,
        /// independent of P — what a rank receives, at most, when slices are aligned to segments.
        SegmentBytes: int64
        /// The same constant both ways, 2·h·Σ_g ⌈min(w_g, n) / r_g⌉ rows: the bound on sent + received per rank
        /// when slices are aligned to segments (n and every w divisible by P, or w by n/P).
        BoundBytes: int64
    }

/// Bytes of one row (key and value of one head at one position) in float32.
let rowBytes (headDim: int) : int64 = int64 (2 * headDim * 4)

let private perRank (matrix: int[][]) (p: int) =
    let sent = Array.sumBy int64 matrix.[p]
    let received = matrix |> Array.sumBy (fun row -> int64 row.[p])
    sent + received

/// The analytic rows sent + received by each rank (from `ShardPlan.trafficMatrix`).
let rowsPerRank (config: DilatedConfig) (n: int64) (heads: int) (ranks: int) : int64[] =
    let matrix = ShardPlan.trafficMatrix config heads n ranks
    Array.init ranks (perRank matrix)

/// Runs the exchange of the plan on `ranks` simulated ranks with float32 payloads and returns each rank's
/// traffic as counted by the communicator.
let measureTraffic (config: DilatedConfig) (n: int64) (heads: int) (headDim: int) (ranks: int) : TrafficSnapshot[] =
    let matrix = ShardPlan.trafficMatrix config heads n ranks
    let rowElements = 2 * headDim

    Simulated.run ranks (fun comm ->
        let p = comm.Rank
        let sendCounts = matrix.[p] |> Array.map (fun rows -> rows * rowElements)
        let recvCounts = Array.init ranks (fun q -> matrix.[q].[p] * rowElements)
        let send = Array.zeroCreate<float32>(Array.sum sendCounts)
        let recv = Array.zeroCreate<float32>(Array.sum recvCounts)
        let sendHandle = GCHandle.Alloc(send, GCHandleType.Pinned)
        let recvHandle = GCHandle.Alloc(recv, GCHandleType.Pinned)

        try
            comm.AllToAllV(
                sendHandle.AddrOfPinnedObject(),
                sendCounts,
                recvHandle.AddrOfPinnedObject(),
                recvCounts,
                ElementType.Float32
            )
        finally
            sendHandle.Free()
            recvHandle.Free()

        comm.Traffic.Snapshot())

/// Runs the exchange of the plan on `ranks` simulated ranks with float32 payloads and returns each rank's
/// counted bytes sent + received.
let measure (config: DilatedConfig) (n: int64) (heads: int) (headDim: int) (ranks: int) : int64[] =
    measureTraffic config n heads headDim ranks |> Array.map _.Total

/// Per-rank communication of one forward pass of `config` over `n` positions with `heads` heads of size
/// `headDim`, for each rank count in `ranksList` (each ≤ n): measured on simulated ranks, with the
/// undilated and all-gather baselines and the paper's per-group constant.
let communicationTable
    (config: DilatedConfig)
    (n: int64)
    (heads: int)
    (headDim: int)
    (ranksList: int list)
    : CommunicationRow list =
    let bytes = rowBytes headDim

    let undilated =
        { config with
            Groups =
                config.Groups
                |> List.map (fun g ->
                    match Group.Create(g.SegmentLength, 1) with
                    | Ok u -> u
                    | Error e -> e.Raise())
                |> List.distinct
        }

    let segmentRows =
        config.Groups
        |> List.sumBy (fun g ->
            let w = min (int64 g.SegmentLength) n
            int64 heads * ((w + int64 g.DilationRate - 1L) / int64 g.DilationRate))

    ranksList
    |> List.map (fun ranks ->
        let traffic = measureTraffic config n heads headDim ranks
        let counted = traffic |> Array.map _.Total
        let rows = rowsPerRank config n heads ranks

        let allGather =
            Array.init ranks (fun p ->
                let _, length = ShardPlan.slice n ranks p
                int64 heads * (int64 (ranks - 1) * length + (n - length)))

        {
            Ranks = ranks
            MaxBytes = Array.max counted
            MeanBytes = Array.averageBy float counted
            MaxRows = Array.max rows
            MaxReceivedBytes = traffic |> Array.map _.BytesReceived |> Array.max
            CrossingGroups = config.Groups |> List.filter (ShardPlan.crossesRanks n ranks) |> List.length
            UndilatedBytes = Array.max (rowsPerRank undilated n heads ranks) * bytes
            AllGatherBytes = Array.max allGather * bytes
            SegmentBytes = segmentRows * bytes
            BoundBytes = 2L * segmentRows * bytes
        })

/// The table as GitHub markdown, sizes in MiB.
let toMarkdown (rows: CommunicationRow list) : string =
    let mib (b: float) =
        (b / 1048576.0).ToString("0.00", System.Globalization.CultureInfo.InvariantCulture)

    [
        yield
            "| P | crossing groups | max sent + received per rank (MiB) | mean per rank (MiB) | max received (MiB) | max rows per rank | bound 2·h·Σ w/r (MiB) | without dilation (MiB) | all-gather of K,V (MiB) |"
        yield "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

        for r in rows do
            yield
                $"| {r.Ranks} | {r.CrossingGroups} | {mib (float r.MaxBytes)} | {mib r.MeanBytes} | {mib (float r.MaxReceivedBytes)} | {r.MaxRows} | {mib (float r.BoundBytes)} | {mib (float r.UndilatedBytes)} | {mib (float r.AllGatherBytes)} |"
    ]
    |> String.concat "\n"
