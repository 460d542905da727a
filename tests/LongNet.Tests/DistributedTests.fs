/// Sequence-parallel dilated attention on simulated ranks against the single-process explicit path
/// (float64, outputs, lse and true gradients within 1e-10), its plan and communication volume, the
/// simulated collectives, fault handling and the data-parallel gradient all-reduce.
module LongNet.Tests.DistributedTests

open System
open Xunit
open TorchSharp
open LongNet
open LongNet.Distributed

let private tolerance = 1e-10

let private full (shape: int64[]) (value: float) =
    torch.ones (shape, dtype = torch.float64) * value

/// A random valid case: config, sizes and rank count, drawn from `seed`.
type Case =
    {
        Seed: int
        Config: DilatedConfig
        Ranks: int
        N: int64
        Batch: int64
        Heads: int64
        HeadDim: int64
    }

    override c.ToString() =
        let groups = c.Config.Groups |> List.map string |> String.concat " "
        $"seed={c.Seed} P={c.Ranks} n={c.N} b={c.Batch} h={c.Heads} d={c.HeadDim} causal={c.Config.Causal} offsets={c.Config.Offsets} groups={groups}"

let private randomCase (seed: int) (causal: bool) =
    let rng = Random seed
    let ranks = rng.Next(1, 5)
    let groupCount = rng.Next(1, 4)

    let groups =
        List.init groupCount (fun _ ->
            let w = rng.Next(1, 25)
            w, rng.Next(1, min w 6 + 1))
        |> List.distinct

    // n ≥ P and, for the largest segment w, not a multiple of P·w (unless P·w = 1).
    let wMax = groups |> List.map fst |> List.max

    let n =
        let mutable n = int64 (rng.Next(ranks, 48))

        while ranks * wMax > 1 && n % int64 (ranks * wMax) = 0L do
            n <- n + 1L

        n

    let config =
        DilatedConfig.createOrRaise
            (List.map fst groups)
            (List.map snd groups)
            (if rng.Next 2 = 0 then Paper else Blocks)
            causal
            (if rng.Next 3 = 0 then Some 0.3 else None)

    {
        Seed = seed
        Config = config
        Ranks = ranks
        N = n
        Batch = int64 (rng.Next(1, 3))
        Heads = int64 (rng.Next(1, 5))
        HeadDim = [| 3L; 5L |].[rng.Next 2]
    }

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) =
    use scope = torch.NewDisposeScope()
    let finiteA, finiteB = a.isfinite (), b.isfinite ()

    if finiteA.logical_xor(finiteB).any().item<bool>() then
        Double.PositiveInfinity
    else
        let zero = torch.zeros_like a
        (torch.where (finiteA, a, zero) - torch.where (finiteB, b, zero)).abs().max().item<float>()

/// Output, lse and gradients of q, k, v for loss = Σ out·dout + Σ_finite lse·dlse.
type private Results =
    {
        Out: torch.Tensor
        Lse: torch.Tensor
        Dq: torch.Tensor
        Dk: torch.Tensor
        Dv: torch.Tensor
    }

let private loss (out: torch.Tensor) (lse: torch.Tensor) (dout: torch.Tensor) (dlse: torch.Tensor) =
    let finiteLse = torch.where (lse.isfinite (), lse, torch.zeros_like lse)
    (out * dout).sum() + (finiteLse * dlse).sum()

let private leaf (t: torch.Tensor) = t.detach().clone().requires_grad_ true

let private single (config: DilatedConfig) (q, k, v, dout, dlse) =
    let q, k, v = leaf q, leaf k, leaf v

    let out, lse =
        DilatedAttention.forwardUsing DilatedAttention.Explicit false config q k v

    (loss out lse dout dlse).backward()

    {
        Out = out.detach ()
        Lse = lse.detach ()
        Dq = q.grad
        Dk = k.grad
        Dv = v.grad
    }

let private distributed (ranks: int) (config: DilatedConfig) (n: int64) (q: torch.Tensor, k, v, dout, dlse) =
    let parts =
        Simulated.runWith (Some(TimeSpan.FromSeconds 60.0)) ranks (fun comm ->
            let start, length = ShardPlan.slice n comm.Size comm.Rank
            let part (t: torch.Tensor) = t.narrow (2L, start, length)
            let ql, kl, vl = leaf (part q), leaf (part k), leaf (part v)
            SequenceParallel.verifyAgreement comm config n ql
            let out, lse = SequenceParallel.forward comm config n ql kl vl
            (loss out lse (part dout) (part dlse)).backward()

            {
                Out = out.detach ()
                Lse = lse.detach ()
                Dq = ql.grad
                Dk = kl.grad
                Dv = vl.grad
            })

    let cat (f: Results -> torch.Tensor) = torch.cat (parts |> Array.map f, 2L)

    {
        Out = cat (fun r -> r.Out)
        Lse = cat (fun r -> r.Lse)
        Dq = cat (fun r -> r.Dq)
        Dk = cat (fun r -> r.Dk)
        Dv = cat (fun r -> r.Dv)
    }

let private inputs (case: Case) =
    torch.manual_seed (int64 case.Seed) |> ignore
    let shape = [| case.Batch; case.Heads; case.N; case.HeadDim |]

    let r () =
        torch.randn (shape, dtype = torch.float64)

    r (), r (), r (), r (), torch.randn ([| case.Batch; case.Heads; case.N |], dtype = torch.float64)

let private compare (case: Case) =
    Native.ensureLoaded () |> ignore
    use _scope = torch.NewDisposeScope()
    let data = inputs case
    let expected = single case.Config data
    let actual = distributed case.Ranks case.Config case.N data

    for name, e, a in
        [
            "out", expected.Out, actual.Out
            "lse", expected.Lse, actual.Lse
            "dq", expected.Dq, actual.Dq
            "dk", expected.Dk, actual.Dk
            "dv", expected.Dv, actual.Dv
        ] do
        let diff = maxDiff e a

        if not (diff <= tolerance) then
            failwith
                $"{name} differs by {diff} (> {tolerance}) for {case} (replay: randomCase {case.Seed} {case.Config.Causal})"

/// Seeds for the random cases, causal and not.
let seeds: obj[] seq =
    seq {
        for seed in 1..30 do
            for causal in [ false; true ] do
                yield [| box seed; box causal |]
    }

[<Theory>]
[<MemberData(nameof seeds)>]
let ``sequence-parallel outputs, lse and gradients equal the single-process explicit path within 1e-10``
    (seed: int, causal: bool)
    =
    compare (randomCase seed causal)

[<Theory>]
[<InlineData(false)>]
[<InlineData(true)>]
let ``a geometric config whose segments straddle rank boundaries matches on 1 to 5 ranks`` (causal: bool) =
    let config =
        DilatedConfig.createOrRaise [ 4; 8; 16; 32 ] [ 1; 2; 4; 8 ] Paper causal None

    for ranks in 1..5 do
        compare
            {
                Seed = 100 + ranks
                Config = config
                Ranks = ranks
                N = 53L
                Batch = 1L
                Heads = 8L
                HeadDim = 5L
            }

[<Fact>]
let ``slices are contiguous, cover the sequence and differ in length by at most one`` () =
    for n in 1L .. 40L do
        for ranks in 1 .. int (min n 9L) do
            let slices = Array.init ranks (ShardPlan.slice n ranks)
            Assert.Equal(0L, fst slices.[0])

            for p in 1 .. ranks - 1 do
                Assert.Equal(fst slices.[p - 1] + snd slices.[p - 1], fst slices.[p])

            Assert.Equal(n, fst slices.[ranks - 1] + snd slices.[ranks - 1])
            let lengths = slices |> Array.map snd
            Assert.True(Array.max lengths - Array.min lengths <= 1L)

            for position in 0L .. n - 1L do
                let owner = ShardPlan.owner n ranks position
                let start, length = slices.[owner]
                Assert.True(position >= start && position < start + length)

[<Fact>]
let ``every rank's plan receives exactly what the other ranks' plans send`` () =
    for seed in 1..40 do
        let case = randomCase seed (seed % 2 = 0)
        let heads = int case.Heads

        let plans =
            Array.init case.Ranks (ShardPlan.create case.Config heads case.N case.Ranks)

        let matrix = ShardPlan.trafficMatrix case.Config heads case.N case.Ranks

        for p in 0 .. case.Ranks - 1 do
            Assert.Equal<int[]>(matrix.[p], plans.[p].SendCounts)

            for q in 0 .. case.Ranks - 1 do
                Assert.Equal(matrix.[q].[p], plans.[p].ReceiveCounts.[q])

[<Fact>]
let ``the counted bytes of a forward and backward pass equal twice the plan's rows`` () =
    Native.ensureLoaded () |> ignore
    let config = DilatedConfig.createOrRaise [ 6; 12; 24 ] [ 1; 2; 4 ] Paper false None
    let n, heads, d, batch, ranks = 50L, 4, 3L, 2L, 3

    let counted =
        Simulated.run ranks (fun comm ->
            let start, length = ShardPlan.slice n ranks comm.Rank

            let make () =
                torch.randn([| batch; int64 heads; length; d |], dtype = torch.float64).requires_grad_ true

            let q, k, v = make (), make (), make ()
            let out, _ = SequenceParallel.forward comm config n q k v
            let afterForward = comm.Traffic.Snapshot()
            out.sum().backward()
            start |> ignore
            afterForward, comm.Traffic.Snapshot())

    let matrix = ShardPlan.trafficMatrix config heads n ranks
    let rowBytes = batch * 2L * d * 8L

    for p in 0 .. ranks - 1 do
        let sent = Array.sumBy int64 matrix.[p] * rowBytes
        let received = (matrix |> Array.sumBy (fun row -> int64 row.[p])) * rowBytes
        let forward, total = counted.[p]
        Assert.Equal(sent, forward.BytesSent)
        Assert.Equal(received, forward.BytesReceived)
        Assert.True(sent + received > 0L)
        // The backward sends each received row's gradient back: the same volume, directions swapped.
        Assert.Equal(
            sent + received,
            total.BytesSent - forward.BytesSent + total.BytesReceived
            - forward.BytesReceived
        )

/// The paper's geometric config scaled down: w = 64·2^i, r = 2^i, i = 0 … 4, 16 heads.
let private geometric =
    DilatedConfig.createOrRaise [ 64; 128; 256; 512; 1024 ] [ 1; 2; 4; 8; 16 ] Paper false None

[<Fact>]
let ``per-rank volume for a geometric config stays under a constant as P grows while the undilated one grows`` () =
    let n, heads, d = 2048L, 16, 8

    let table =
        CommunicationVolume.communicationTable geometric n heads d [ 1; 2; 4; 8; 16; 32; 64 ]

    let byP = table |> List.map (fun r -> r.Ranks, r) |> Map.ofList

    for r in table do
        // Counted bytes equal the plan's rows, and stay under the paper's constant both ways (one
        // segment's dilated rows per group, sent and received), whatever P is; received alone under it once.
        Assert.Equal(r.MaxRows * CommunicationVolume.rowBytes d, r.MaxBytes)
        Assert.True(r.MaxBytes <= r.BoundBytes, $"P={r.Ranks}: {r.MaxBytes} > {r.BoundBytes}")
        Assert.True(r.MaxReceivedBytes <= r.SegmentBytes, $"P={r.Ranks}: {r.MaxReceivedBytes} > {r.SegmentBytes}")

    Assert.Equal(0L, byP.[1].MaxBytes)
    // Without dilation the same segments move up to r times more; all-gathering K, V approaches n rows.
    Assert.True(byP.[64].UndilatedBytes > 4L * byP.[64].MaxBytes)
    Assert.True(byP.[64].AllGatherBytes > 7L * byP.[64].MaxBytes)

[<Fact>]
let ``a group that crosses ranks moves between h·w/r and 2·h·w/r rows per rank for every P`` () =
    let heads, w, r = 8, 1024, 16
    let config = DilatedConfig.createOrRaise [ w ] [ r ] Paper false None
    let segment = int64 (heads * w / r)

    for ranks in [ 2; 4; 8; 16; 32; 64 ] do
        let rows = CommunicationVolume.rowsPerRank config 1024L heads ranks |> Array.max
        Assert.InRange(rows, segment, 2L * segment)

[<Fact>]
let ``per-rank rows never exceed four segments' dilated rows per group, for random configs`` () =
    for seed in 1..200 do
        let case = randomCase seed (seed % 3 = 0)
        let heads = int case.Heads

        let limit =
            case.Config.Groups
            |> List.sumBy (fun g ->
                4L
                * int64 heads
                * (int64 (min (int64 g.SegmentLength) case.N) / int64 g.DilationRate + 1L))

        let rows =
            CommunicationVolume.rowsPerRank case.Config case.N heads case.Ranks |> Array.max

        Assert.True(rows <= limit, $"{rows} > {limit} for {case}")

[<Fact>]
let ``causal ranks receive only earlier ranks' rows and send only to later ones`` () =
    let config = DilatedConfig.createOrRaise [ 16; 32 ] [ 2; 4 ] Paper true None
    let matrix = ShardPlan.trafficMatrix config 4 100L 4

    for p in 0..3 do
        for q in 0..3 do
            if q <= p then
                Assert.Equal(0, matrix.[p].[q])

    Assert.True(matrix.[0].[1] > 0)

[<Fact>]
let ``simulated collectives gather, exchange and sum like MPI`` () =
    Native.ensureLoaded () |> ignore

    let results =
        Simulated.run 3 (fun comm ->
            let p = comm.Rank

            let gathered =
                Collectives.allGatherRows comm (full [| int64 (p + 1); 2L |] (float p))

            let sendRows = [| 1; 2; 3 |]

            let send =
                torch.cat ([| for q in 0..2 -> full [| int64 sendRows.[q]; 1L |] (float (10 * p + q)) |], 0L)

            let recvRows = Array.create 3 (p + 1)
            let exchanged = Collectives.allToAllRows comm send sendRows recvRows
            let summed = Collectives.allReduceSum comm (torch.tensor ([| float p; 1.0 |]))
            gathered, exchanged, summed)

    for p, (gathered, exchanged, summed) in Array.indexed results do
        Assert.Equal<float[]>(
            [| 0.0; 0.0; 1.0; 1.0; 1.0; 1.0; 2.0; 2.0; 2.0; 2.0; 2.0; 2.0 |],
            gathered.data<float>().ToArray()
        )

        let expected =
            [|
                for q in 0..2 do
                    for _ in 1 .. p + 1 -> float (10 * q + p)
            |]

        Assert.Equal<float[]>(expected, exchanged.data<float>().ToArray())
        Assert.Equal<float[]>([| 3.0; 3.0 |], summed.data<float>().ToArray())

[<Fact>]
let ``a rank that throws ends every simulated rank with its message, without hanging`` () =
    let clock = Diagnostics.Stopwatch.StartNew()

    let error =
        Assert.Throws<RankFailedException>(fun () ->
            Simulated.runWith (Some(TimeSpan.FromSeconds 30.0)) 4 (fun comm ->
                comm.Barrier()

                if comm.Rank = 2 then
                    failwith "boom on purpose"

                comm.Barrier()
                comm.Rank)
            |> ignore)

    Assert.Equal(2, error.Rank)
    Assert.Contains("rank 2 of 4", error.Message)
    Assert.Contains("boom on purpose", error.Message)
    Assert.True(clock.Elapsed < TimeSpan.FromSeconds 10.0)

[<Fact>]
let ``a rank that stops calling collectives is reported by the timeout naming the operation`` () =
    let error =
        Assert.Throws<RankFailedException>(fun () ->
            Simulated.runWith (Some(TimeSpan.FromSeconds 1.0)) 2 (fun comm ->
                if comm.Rank = 0 then
                    comm.Barrier()
                else
                    Threading.Thread.Sleep 3000

                comm.Rank)
            |> ignore)

    Assert.Contains("Barrier did not complete within 1 s", error.Message)

[<Fact>]
let ``mismatched configs across ranks are detected at start with every rank's values`` () =
    Native.ensureLoaded () |> ignore

    let error =
        Assert.Throws<CollectiveException>(fun () ->
            Simulated.run 3 (fun comm ->
                let causal = comm.Rank = 1
                let config = DilatedConfig.createOrRaise [ 8 ] [ 2 ] Paper causal None
                let q = torch.zeros ([| 1L; 2L; 4L; 3L |], dtype = torch.float64)
                SequenceParallel.verifyAgreement comm config 12L q)
            |> ignore)

    Assert.Contains("differs across ranks", error.Message)
    Assert.Contains("rank 1: groups=(8,2) offsets=Paper causal=True", error.Message)
    Assert.Contains("rank 0: groups=(8,2) offsets=Paper causal=False", error.Message)

[<Fact>]
let ``a slice of the wrong length is rejected with the expected shape`` () =
    Native.ensureLoaded () |> ignore
    let config = DilatedConfig.createOrRaise [ 8 ] [ 2 ] Paper false None

    let error =
        Assert.Throws<RankFailedException>(fun () ->
            Simulated.run 2 (fun comm ->
                let q = torch.zeros ([| 1L; 2L; 5L; 3L |], dtype = torch.float64)
                SequenceParallel.forward comm config 12L q q q |> ignore)
            |> ignore)

    Assert.Contains("q must be [batch, 2, 6, headDim]", error.Message)

[<Fact>]
let ``allReduceGradients averages gradients across ranks and creates missing ones`` () =
    Native.ensureLoaded () |> ignore

    let grads =
        Simulated.run 4 (fun comm ->
            let p = float comm.Rank

            let weight =
                new Modules.Parameter(torch.zeros ([| 2L; 3L |], dtype = torch.float64))

            let bias = new Modules.Parameter(torch.zeros ([| 3L |], dtype = torch.float64))
            let unused = new Modules.Parameter(torch.zeros ([| 2L |], dtype = torch.float32))
            ((weight * (p + 1.0)).sum() + (bias * p).sum()).backward()
            DataParallel.allReduceGradients comm [ weight; bias; unused ]

            weight.grad.data<float>().ToArray(),
            bias.grad.data<float>().ToArray(),
            unused.grad.data<float32>().ToArray())

    for weight, bias, unused in grads do
        Assert.All(weight, (fun g -> Assert.Equal(2.5, g, 12)))
        Assert.All(bias, (fun g -> Assert.Equal(1.5, g, 12)))
        Assert.All(unused, (fun g -> Assert.Equal(0.0f, g)))

[<Fact>]
let ``sumGradients sums and broadcastParameters copies the root's values`` () =
    Native.ensureLoaded () |> ignore

    let results =
        Simulated.run 3 (fun comm ->
            let p = float comm.Rank
            let weight = new Modules.Parameter(full [| 2L |] (p + 7.0))
            (weight * (p + 1.0)).sum().backward()
            DataParallel.sumGradients comm [ weight ]
            DataParallel.broadcastParameters comm 1 [ weight ]
            weight.grad.data<float>().ToArray(), weight.detach().data<float>().ToArray())

    for grad, value in results do
        Assert.Equal<float[]>([| 6.0; 6.0 |], grad)
        Assert.Equal<float[]>([| 8.0; 8.0 |], value)

[<Fact>]
let ``a rank without a kept query of a head in a segment receives none of that head's keys there`` () =
    // w = 8, r = 4, one head (offset 0), n = 10 over 2 ranks: [0, 5) and [5, 10). Segment [0, 8) keeps
    // positions 0 and 4, both on rank 0; rank 1 holds 5, 6, 7 of it but no kept query, so nothing moves.
    let config = DilatedConfig.createOrRaise [ 8 ] [ 4 ] Paper false None
    Assert.Equal<int[][]>([| [| 0; 0 |]; [| 0; 0 |] |], ShardPlan.trafficMatrix config 1 10L 2)
    // With r = 2 rank 1 keeps position 6, so it receives rank 0's kept keys 0, 2 and 4 of that segment.
    let config = DilatedConfig.createOrRaise [ 8 ] [ 2 ] Paper false None
    Assert.Equal<int[][]>([| [| 0; 3 |]; [| 1; 0 |] |], ShardPlan.trafficMatrix config 1 10L 2)

[<Fact>]
let ``aligned geometric slices: each rank exchanges h·L/r rows with every rank sharing a segment, r the smallest shared rate``
    ()
    =
    // Slices of L = n/P positions; ranks p and q share a segment of every group with w ≥ the span of
    // both slices; the rows p needs from q are q's kept rows of the densest such group (paper offsets
    // nest: a head's kept positions at rate 2r are among those at rate r), so per rank and direction
    // h·Σ_{q≠p} L / r(p, q) — with w/r constant this adds h·(w/r)(1 − L/w) per crossing group.
    let n, heads = 2048L, 16

    for ranks in [ 1; 2; 4; 8; 16; 32; 64 ] do
        let length = n / int64 ranks

        let expected p =
            [ 0 .. ranks - 1 ]
            |> List.filter ((<>) p)
            |> List.sumBy (fun q ->
                geometric.Groups
                |> List.filter (fun g ->
                    let w = int64 g.SegmentLength
                    int64 p * length / w = int64 q * length / w)
                |> List.map (fun g -> length / int64 g.DilationRate)
                |> List.fold max 0L)
            |> fun rows -> 2L * int64 heads * rows

        let counted = CommunicationVolume.rowsPerRank geometric n heads ranks
        Assert.Equal<int64[]>(Array.init ranks expected, counted)
