/// What each rank runs under mpirun: checks of the MPI binding, sequence-parallel dilated attention
/// against the single-process explicit path (float64, outputs and gradients within 1e-10), a
/// sequence-parallel training step, the data-parallel all-reduce, and training runs of the LongNet model
/// split over the ranks (`TrainSession` on the communicator) against one process; and the fault scenarios.
/// A check passes only when it passes on every rank (their failures are all-reduced).
module LongNet.MpiTests.Cases

open System
open System.Diagnostics
open System.Threading
open TorchSharp
open LongNet
open LongNet.Distributed
open LongNet.Modules
open LongNet.Text
open LongNet.Training

let private tolerance = 1e-10

/// One check's result on this rank: its name, whether it passed here and a detail for the report.
type Outcome =
    {
        Name: string
        Passed: bool
        Detail: string
    }

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) =
    use scope = torch.NewDisposeScope()
    let finiteA, finiteB = a.isfinite (), b.isfinite ()

    if finiteA.logical_xor(finiteB).any().item<bool>() then
        Double.PositiveInfinity
    else
        let zero = torch.zeros_like a
        (torch.where (finiteA, a, zero) - torch.where (finiteB, b, zero)).abs().max().item<float>()

let private check name (run: unit -> bool * string) =
    try
        let passed, detail = run ()

        {
            Name = name
            Passed = passed
            Detail = detail
        }
    with e ->
        {
            Name = name
            Passed = false
            Detail = $"{e.GetType().Name}: {e.Message}"
        }

let private full (shape: int64[]) (value: float) =
    torch.ones (shape, dtype = torch.float64) * value

let private bindingChecks (comm: ICommunicator) =
    let p, size = comm.Rank, comm.Size

    [
        check "binding: rank and size match mpirun's" (fun () ->
            let rank = Environment.GetEnvironmentVariable "OMPI_COMM_WORLD_RANK"
            let worldSize = Environment.GetEnvironmentVariable "OMPI_COMM_WORLD_SIZE"
            string p = rank && string size = worldSize, $"rank {p} of {size}")

        check "binding: all-gather of int64" (fun () ->
            let gathered = Collectives.allGatherInt64 comm [| int64 p; int64 (10 * p) |]
            gathered = Array.init size (fun q -> [| int64 q; int64 (10 * q) |]), "")

        check "binding: all-gather-v of rows of different counts" (fun () ->
            let gathered =
                Collectives.allGatherRows comm (full [| int64 (p + 1); 2L |] (float p))

            let expected =
                [|
                    for q in 0 .. size - 1 do
                        for _ in 0..q do
                            yield! [ float q; float q ]
                |]

            gathered.data<float>().ToArray() = expected, "")

        check "binding: all-to-all-v" (fun () ->
            let sendRows = Array.init size (fun q -> q + 1)

            let send =
                torch.cat (
                    [|
                        for q in 0 .. size - 1 -> full [| int64 sendRows.[q]; 1L |] (float (10 * p + q))
                    |],
                    0L
                )

            let received =
                Collectives.allToAllRows comm send sendRows (Array.create size (p + 1))

            let expected =
                [|
                    for q in 0 .. size - 1 do
                        for _ in 0..p -> float (10 * q + p)
                |]

            received.data<float>().ToArray() = expected, "")

        check "binding: all-reduce sums float32, float64 and int64" (fun () ->
            let sum (t: torch.Tensor) = Collectives.allReduceSum comm t
            let total = float (size * (size - 1) / 2)

            let f32 = sum (torch.tensor [| float32 p; 1.0f |])
            let f64 = sum (torch.tensor [| float p; 0.5 |])
            let i64 = sum (torch.tensor [| int64 p; 2L |])

            f32.data<float32>().ToArray() = [| float32 total; float32 size |]
            && f64.data<float>().ToArray() = [| total; 0.5 * float size |]
            && i64.data<int64>().ToArray() = [| int64 total; 2L * int64 size |],
            "")

        check "binding: barrier and the traffic counter" (fun () ->
            comm.Barrier()
            let before = comm.Traffic.Snapshot()
            let sendRows = Array.init size (fun q -> if q = p then 5 else q + 1)
            let rows = Array.sum sendRows

            let received =
                Collectives.allToAllRows
                    comm
                    (torch.zeros ([| int64 rows; 3L |], dtype = torch.float32))
                    sendRows
                    (Array.init size (fun q -> if q = p then 5 else p + 1))

            let after = comm.Traffic.Snapshot()
            let sent = int64 (rows - 5) * 12L
            let got = int64 ((size - 1) * (p + 1)) * 12L

            after.BytesSent - before.BytesSent = sent
            && after.BytesReceived - before.BytesReceived = got
            && received.shape.[0] = int64 (5 + (size - 1) * (p + 1)),
            $"sent {after.BytesSent - before.BytesSent} (expected {sent}), received {after.BytesReceived - before.BytesReceived} (expected {got})")
    ]

/// A sequence-parallel case: config and sizes (n ≥ P, chosen not to be a multiple of P·w).
type private AttentionCase =
    {
        Name: string
        Config: DilatedConfig
        N: int64
        Batch: int64
        Heads: int64
        HeadDim: int64
        Seed: int64
    }

let private attentionCases (ranks: int) =
    let geometric causal =
        {
            Name = $"""geometric w=4..32, r=1..8, n=53, causal={causal}"""
            Config = DilatedConfig.createOrRaise [ 4; 8; 16; 32 ] [ 1; 2; 4; 8 ] Paper causal None
            N = 53L
            Batch = 1L
            Heads = 8L
            HeadDim = 5L
            Seed = 7L
        }

    let random seed causal =
        let rng = Random(seed)

        let groups =
            List.init (rng.Next(1, 4)) (fun _ ->
                let w = rng.Next(2, 20)
                w, rng.Next(1, min w 5 + 1))
            |> List.distinct

        let wMax = groups |> List.map fst |> List.max
        let mutable n = int64 (rng.Next(max ranks 9, 45))

        while n % int64 (ranks * wMax) = 0L do
            n <- n + 1L

        let offsets = if rng.Next 2 = 0 then Paper else Blocks
        let scale = if rng.Next 2 = 0 then Some 0.4 else None

        let text = groups |> List.map (fun (w, r) -> $"({w},{r})") |> String.concat ""

        {
            Name = $"random seed {seed}: groups {text} {offsets}, n={n}, causal={causal}"
            Config = DilatedConfig.createOrRaise (List.map fst groups) (List.map snd groups) offsets causal scale
            N = n
            Batch = int64 (rng.Next(1, 3))
            Heads = int64 (rng.Next(1, 5))
            HeadDim = 3L
            Seed = int64 seed
        }

    [
        geometric false
        geometric true
        for seed in 1..4 do
            random seed false
            random (seed + 10) true
    ]

let private leaf (t: torch.Tensor) = t.detach().clone().requires_grad_ true

/// [b, h, l, d] slices of every rank → the whole [b, h, n, d], through MPI_Allgatherv.
let private gatherSequence (comm: ICommunicator) (t: torch.Tensor) =
    let dims = [| 2L; 0L; 1L; 3L |]
    let gathered = Collectives.allGatherRows comm (t.permute(dims).contiguous())
    gathered.permute (1L, 2L, 0L, 3L)

let private attentionCheck (comm: ICommunicator) (case: AttentionCase) =
    check $"sequence-parallel = single process: {case.Name}" (fun () ->
        use scope = torch.NewDisposeScope()
        torch.manual_seed case.Seed |> ignore
        let shape = [| case.Batch; case.Heads; case.N; case.HeadDim |]

        let r () =
            torch.randn (shape, dtype = torch.float64)

        let q, k, v, dout = r (), r (), r (), r ()
        // The reference on the whole sequence (every rank computes it from the same seed).
        let qf, kf, vf = leaf q, leaf k, leaf v

        let expected, _ =
            DilatedAttention.forwardUsing DilatedAttention.Explicit false case.Config qf kf vf

        (expected * dout).sum().backward()
        // This rank's slice.
        let start, length = ShardPlan.slice case.N comm.Size comm.Rank
        let part (t: torch.Tensor) = t.narrow (2L, start, length)
        let ql, kl, vl = leaf (part q), leaf (part k), leaf (part v)
        SequenceParallel.verifyAgreement comm case.Config case.N ql
        let out, _ = SequenceParallel.forward comm case.Config case.N ql kl vl
        (out * part dout).sum().backward()

        let diffs =
            [
                "out", maxDiff expected (gatherSequence comm (out.detach ()))
                "dq", maxDiff qf.grad (gatherSequence comm ql.grad)
                "dk", maxDiff kf.grad (gatherSequence comm kl.grad)
                "dv", maxDiff vf.grad (gatherSequence comm vl.grad)
            ]

        let worst = diffs |> List.map snd |> List.max

        let detail =
            diffs |> List.map (fun (name, d) -> $"{name} {d:E1}") |> String.concat ", "

        worst <= tolerance, detail)

let private trainingCheck (comm: ICommunicator) =
    check "sequence-parallel training step: summed parameter gradients = whole-sequence gradients" (fun () ->
        use scope = torch.NewDisposeScope()
        let n, batch, embed, heads, headDim = 41L, 2L, 6L, 3L, 4L
        let config = DilatedConfig.createOrRaise [ 8; 16 ] [ 1; 2 ] Paper true None
        torch.manual_seed 11L |> ignore
        let x = torch.randn ([| batch; n; embed |], dtype = torch.float64)
        let target = torch.randn ([| batch; heads; n; headDim |], dtype = torch.float64)

        let makeProjections () =
            torch.manual_seed 12L |> ignore

            [|
                for _ in 1..3 ->
                    new Modules.Parameter(torch.randn ([| heads * headDim; embed |], dtype = torch.float64) * 0.3)
            |]

        let project (w: Modules.Parameter) (x: torch.Tensor) =
            let l = x.shape.[1]
            x.matmul(w.t ()).view(batch, l, heads, headDim).permute(0L, 2L, 1L, 3L)

        // Whole sequence in one process: loss = Σ (out − target)² / n.
        let whole = makeProjections ()

        let out, _ =
            DilatedAttention.forwardUsing
                DilatedAttention.Explicit
                false
                config
                (project whole.[0] x)
                (project whole.[1] x)
                (project whole.[2] x)

        ((out - target).square().sum() / float n).backward()
        // Split over the ranks: each rank's loss is its tokens' share, gradients summed.
        let split = makeProjections ()
        let start, length = ShardPlan.slice n comm.Size comm.Rank
        let xl = x.narrow (1L, start, length)

        let outl, _ =
            SequenceParallel.forward comm config n (project split.[0] xl) (project split.[1] xl) (project split.[2] xl)

        ((outl - target.narrow (2L, start, length)).square().sum() / float n).backward()
        DataParallel.sumGradients comm split

        let worst =
            Array.map2 (fun (a: Modules.Parameter) (b: Modules.Parameter) -> maxDiff a.grad b.grad) whole split
            |> Array.max

        worst <= tolerance, $"max gradient difference {worst:E1}")

let private dataParallelCheck (comm: ICommunicator) =
    check "data parallel: allReduceGradients averages every rank's gradient" (fun () ->
        use scope = torch.NewDisposeScope()

        let gradientFor (rank: int) =
            torch.manual_seed 5L |> ignore
            let layer = torch.nn.Linear(4L, 3L, dtype = torch.float64)
            let input = torch.ones ([| 2L; 4L |], dtype = torch.float64) * float (rank + 1)
            layer.forward(input).square().sum().backward()
            layer

        let mine = gradientFor comm.Rank
        DataParallel.allReduceGradients comm (mine.parameters ())

        let expected =
            [ 0 .. comm.Size - 1 ]
            |> List.map (fun q ->
                (gradientFor q).parameters()
                |> Seq.map (fun p -> p.grad.clone ())
                |> Seq.toArray)
            |> List.reduce (Array.map2 (+))
            |> Array.map (fun g -> g / float comm.Size)

        let worst =
            Seq.map2 (fun (p: Modules.Parameter) (e: torch.Tensor) -> maxDiff p.grad e) (mine.parameters ()) expected
            |> Seq.max

        worst <= 1e-12, $"max difference {worst:E1}")

/// A tiny language-model run: n = 53 positions (not a multiple of P or of any segment), groups
/// (8,1) (16,2) (32,4) crossing the slice boundaries, accumulation 2, no dropout (the split is exact).
let private splitRun (precision: Precision) : RunConfig =
    { RunConfig.tiny with
        Model =
            { RunConfig.tiny.Model with
                EmbedDim = 16
                Heads = 2
                FeedForwardDim = 24
                Groups = Groups.ofPairsOrRaise [ 8, 1; 16, 2; 32, 4 ]
                Dropout = 0.0
            }
        Train =
            { RunConfig.tiny.Train with
                Steps = 4
                BatchSize = 2
                SeqLen = 53
                Accumulation = 2
                WarmupSteps = 2
                Precision = precision
                EvalTokens = 200
            }
    }

/// Pseudo-text token ids (byte level) shared by every rank.
let private splitTokens =
    let text =
        String.replicate 30 "Seven wizards hex the quick brown fox near the old mill bridge; "

    Text.Encoding.UTF8.GetBytes text |> Array.map int

/// Losses of `steps` steps, the validation loss and the final parameters (float64 copies) of a session.
let private trainFor (session: TrainSession) (steps: int) =
    let losses =
        [|
            for _ in 1..steps ->
                match session.TrainStep splitTokens with
                | Ok r -> r.Loss
                | Error e -> failwith e
        |]

    let validation =
        match session.ValidationLoss splitTokens with
        | Ok v -> v
        | Error e -> failwith e

    let parameters =
        session.Model.parameters ()
        |> Seq.map (fun p -> p.detach().to_type(torch.ScalarType.Float64).clone())
        |> Seq.toArray

    losses, validation, parameters

let private splitTrainingCheck
    (comm: ICommunicator)
    (precision: Precision)
    (lossTolerance: float)
    (parameterTolerance: float)
    =
    check
        $"sequence-parallel training ({Precision.name precision}): 4 steps split over the ranks give one process's losses, validation loss and parameters"
        (fun () ->
            use scope = torch.NewDisposeScope()
            let config = splitRun precision

            let single =
                match TrainSession.Create(config, Tokenizer.byteLevel ()) with
                | Ok s -> s
                | Error e -> failwith e

            let expectedLosses, expectedValidation, expectedParameters = trainFor single 4
            (single :> IDisposable).Dispose()

            let split =
                match TrainSession.Create(config, Tokenizer.byteLevel (), comm) with
                | Ok s -> s
                | Error e -> failwith e

            let losses, validation, parameters = trainFor split 4
            (split :> IDisposable).Dispose()

            let lossDiff =
                Array.map2 (fun (a: float) b -> abs (a - b)) expectedLosses losses |> Array.max

            let validationDiff = abs (expectedValidation - validation)
            let parameterDiff = Array.map2 maxDiff expectedParameters parameters |> Array.max
            // replicas: every rank must hold bit-identical parameters after the same steps
            let mine =
                parameters |> Array.map (fun p -> p.reshape -1L) |> fun ps -> torch.cat (ps, 0L)

            let gathered = Collectives.allGatherRows comm mine
            let count = mine.shape.[0]

            let replicaDiff =
                [ 0 .. comm.Size - 1 ]
                |> List.map (fun q -> maxDiff mine (gathered.narrow (0L, int64 q * count, count)))
                |> List.max

            lossDiff <= lossTolerance
            && validationDiff <= lossTolerance
            && parameterDiff <= parameterTolerance
            && replicaDiff = 0.0,
            $"losses {lossDiff:E1}, validation {validationDiff:E1}, parameters {parameterDiff:E1}, across ranks {replicaDiff:E1}")

/// Runs every check on this rank; rank 0 prints one line per check and a summary
/// "MPI ranks=P: N passed, M failed". Returns the number of failed checks.
let runAll (comm: ICommunicator) : int =
    Native.ensureLoaded () |> ignore
    let clock = Stopwatch.StartNew()

    let outcomes =
        [
            yield! bindingChecks comm
            for case in attentionCases comm.Size do
                yield attentionCheck comm case
            yield trainingCheck comm
            yield dataParallelCheck comm
            yield splitTrainingCheck comm Fp64 tolerance tolerance
            yield splitTrainingCheck comm Fp32 1e-5 1e-5
        ]

    let failures =
        outcomes
        |> List.map (fun o ->
            let failedHere = torch.tensor [| (if o.Passed then 0L else 1L) |]
            let failedRanks = (Collectives.allReduceSum comm failedHere).[0].item<int64>()

            if comm.Rank = 0 then
                if failedRanks = 0L then
                    printfn "ok    %s%s" o.Name (if o.Detail = "" then "" else $" ({o.Detail})")
                else
                    printfn "FAIL  %s on %d rank(s); rank 0: %s" o.Name failedRanks o.Detail

            failedRanks <> 0L)

    let failed = failures |> List.filter id |> List.length

    if comm.Rank = 0 then
        printfn
            "MPI ranks=%d: %d passed, %d failed (%.1f s)"
            comm.Size
            (outcomes.Length - failed)
            failed
            clock.Elapsed.TotalSeconds

    failed

/// Fault scenario: rank 1 throws between two barriers (every rank must end, non-zero, with one message).
let fault (comm: ICommunicator) : int =
    comm.Barrier()

    if comm.Rank = 1 then
        failwith "deliberate failure in rank 1 (fault test)"

    comm.Barrier()
    0

/// Fault scenario: rank 1 runs a different config (detected by the start-up agreement check).
let mismatch (comm: ICommunicator) : int =
    Native.ensureLoaded () |> ignore

    let config =
        DilatedConfig.createOrRaise [ 8; 16 ] [ 1; 2 ] Paper (comm.Rank = 1) None

    let q = torch.zeros ([| 1L; 2L; 5L; 3L |], dtype = torch.float64)
    SequenceParallel.verifyAgreement comm config (5L * int64 comm.Size) q
    0

/// Fault scenario: rank 1 stops calling collectives (the watchdog of the others must abort the run).
let stall (comm: ICommunicator) : int =
    if comm.Rank = 1 then
        Thread.Sleep(TimeSpan.FromSeconds 120.0)

    comm.Barrier()
    0

/// Fault scenario: rank 1 is killed (SIGKILL) between two barriers.
let death (comm: ICommunicator) : int =
    comm.Barrier()

    if comm.Rank = 1 then
        Process.GetCurrentProcess().Kill()

    comm.Barrier()
    0
