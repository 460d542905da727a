/// `longnet bench`: forward and forward+backward time and peak memory of dilated attention and of
/// dense attention (libtorch SDPA) on the same inputs over a grid of N, with the machine's GEMM rate
/// measured in the same run. Writes a console table, a JSON file and PNG plots.
module LongNet.Cli.Bench

open System
open System.IO
open System.Text.Json
open TorchSharp
open LongNet
open LongNet.Cli.Args

/// The command's help text.
let help =
    """longnet bench [--n 2048,4096,...] [--modes fwd,fwdbwd] [--causal] [--impls dilated,dense,selectmerge]
              [--segments 2048,4096,8192] [--rates 1,2,4] [--offsets paper|blocks]
              [--dtype float32|bfloat16|float64] [--device cpu|cuda] [--repeats 3]
              [--batch 1] [--heads 8] [--head-dim 64] [--max-dense-seconds 120]
              [--block-size 64] [--top-k 4] [--json PATH] [--plots DIR]
longnet bench --dist [--ranks 1,2,4,8] [--n 65536] [--segments …] [--rates …] [--heads 8] [--head-dim 64]
              [--causal] [--json PATH] [--plots DIR]
longnet bench --model PRESET [--seq-len 256,1024,4096,16384] [--tokens-per-step N] [--steps 3]
              [--seed 1] [--json PATH]

Times forward (fwd) and forward+backward (fwdbwd) of dilated attention and of dense attention
(libtorch scaled_dot_product_attention) on the same random inputs: the median of --repeats runs
after one warm-up. Also measures the GEMM rate (a 2048³ matmul in the same dtype) and reports per
cell: seconds, attended pairs, FLOPs on the sparse pairs (fwd 4·pairs·d; fwdbwd 3.5× that),
GFLOP/s, that as a fraction of the GEMM rate, the speed-up over dense and the peak memory (CPU: the
process's peak resident set above the pre-cell baseline; CUDA: not measured). Dense cells expected
to exceed --max-dense-seconds are skipped. Defaults: N = 2K…128K on CPU (up to 1M on CUDA), batch 1,
8 heads, head dim 64, float32 on CPU / bfloat16 on CUDA, groups 2048,4096,8192 / 1,2,4 (clipped to N).
--impls selectmerge adds CASM select-and-merge attention (explicit masked softmax; blocks of --block-size,
--top-k other blocks plus a sink, merge factor 1); its pairs are the (query, key) scores it computes.

With --model: training throughput as a user waits on it — tokens/s of full training steps (forward,
backward, clipping, AdamW) of the preset's model (tiny, demo, small, longctx) at each --seq-len, every
step holding --tokens-per-step tokens (default: the preset's batch × sequence length), on random ids;
the median of --steps steps after one warm-up, relative to the first length, with the spread and the
peak memory. A linear-cost attention keeps tokens/s nearly flat as the length grows.

With --dist: the communication volume of sequence-parallel dilated attention per rank for each P in
--ranks (default 1,2,4,8), counted on simulated ranks (one process), next to the same segments
without dilation and an all-gather of every rank's keys and values; a table, JSON and a plot.
Defaults for --dist: N = 65536, groups 2048,4096,8192,16384,32768 / 1,2,4,8,16."""

let private writeAtomically (path: string) (text: string) =
    AtomicFile.ensureFolderOf path
    AtomicFile.writeText path text

/// Runs `longnet bench --dist`: communication per rank as P grows, on simulated ranks.
let private runDistributed (p: Parsed) : int =
    // parsed options are keyed with their dashes ("--segments")
    let withDefault (name: string) value (p: Parsed) =
        let key = "--" + name

        if p.Values.ContainsKey key then
            p
        else
            { p with
                Values = p.Values.Add(key, value)
            }

    let p =
        p
        |> withDefault "segments" "2048,4096,8192,16384,32768"
        |> withDefault "rates" "1,2,4,8,16"

    let config =
        { Attend.configOf p with
            Causal = has p "causal"
        }

    let n = intOption p "n" 1L 16_777_216L 65536L

    let ranks =
        optional p "ranks"
        |> Option.map (toIntList "ranks" 1L 1024L)
        |> Option.defaultValue [ 1L; 2L; 4L; 8L ]

    let heads = intOption p "heads" 1L 1024L 8L

    let headDim = intOption p "head-dim" 1L 1024L 64L

    for r in ranks do
        if r > n then
            raise (UsageError $"--ranks: each P must be at most --n = {n}, got {r}.")

    Native.ensureLoaded () |> ignore

    let rows =
        Distributed.CommunicationVolume.communicationTable config n (int heads) (int headDim) (ranks |> List.map int)

    printfn "%s" (Distributed.CommunicationVolume.toMarkdown rows)

    let json =
        JsonSerializer.Serialize(rows, JsonSerializerOptions(WriteIndented = true))

    let jsonPath = optional p "json" |> Option.defaultValue "bench-dist.json"
    writeAtomically jsonPath json
    printfn "wrote %s" jsonPath

    match optional p "plots" with
    | Some dir ->
        Directory.CreateDirectory dir |> ignore
        let path = Path.Combine(dir, "distributed-communication.png")
        DistributedPlot.write path $"Communication per rank, N = {n}, {heads} heads, head dim {headDim}" 900 600 rows
        printfn "wrote %s" path
    | None -> ()

    0

/// Runs the time and memory grid of `longnet bench`.
let private runGrid (argv: string list) : int =
    let p =
        parse
            [
                "n"
                "modes"
                "impls"
                "segments"
                "rates"
                "offsets"
                "dtype"
                "device"
                "repeats"
                "batch"
                "heads"
                "head-dim"
                "max-dense-seconds"
                "block-size"
                "top-k"
                "json"
                "plots"
            ]
            [ "causal" ]
            argv

    let deviceName = optional p "device" |> Option.defaultValue "cpu"

    if deviceName <> "cpu" && deviceName <> "cuda" then
        raise (UsageError $"--device must be cpu or cuda, got '{deviceName}'.")

    let onCuda = deviceName = "cuda"

    let dtype =
        match
            optional p "dtype"
            |> Option.defaultValue (if onCuda then "bfloat16" else "float32")
        with
        | "float32" -> torch.ScalarType.Float32
        | "float64" -> torch.ScalarType.Float64
        | "bfloat16" -> torch.ScalarType.BFloat16
        | other -> raise (UsageError $"--dtype must be float32, float64 or bfloat16, got '{other}'.")

    let defaultNs =
        if onCuda then
            [ 2048L; 8192L; 32768L; 131072L; 524288L; 1048576L ]
        else
            [ 2048L; 4096L; 8192L; 16384L; 32768L; 65536L; 131072L ]

    let ns =
        optional p "n"
        |> Option.map (toIntList "n" 1L 1_073_741_824L)
        |> Option.defaultValue defaultNs

    let modes =
        (optional p "modes" |> Option.defaultValue "fwd,fwdbwd").Split(',', StringSplitOptions.TrimEntries)
        |> List.ofArray

    let impls =
        (optional p "impls" |> Option.defaultValue "dilated,dense").Split(',', StringSplitOptions.TrimEntries)
        |> List.ofArray

    for m in modes do
        if m <> "fwd" && m <> "fwdbwd" then
            raise (UsageError $"--modes takes fwd and/or fwdbwd, got '{m}'.")

    for i in impls do
        if not (List.contains i Benchmarking.implementations) then
            raise (UsageError $"--impls takes dilated, dense and/or selectmerge, got '{i}'.")

    let segments = optional p "segments" |> Option.defaultValue "2048,4096,8192"
    let rates = optional p "rates" |> Option.defaultValue "1,2,4"
    let configArgs = Map [ "--segments", segments; "--rates", rates ]

    let configArgs =
        match optional p "offsets" with
        | Some o -> configArgs.Add("--offsets", o)
        | None -> configArgs

    let config =
        Attend.configOf
            { p with
                Values = Map.fold (fun acc k v -> Map.add k v acc) p.Values configArgs
            }

    let config = { config with Causal = has p "causal" }

    let repeats =
        optional p "repeats"
        |> Option.map (toInt "repeats" 1L 100L >> int)
        |> Option.defaultValue 3

    let batch = intOption p "batch" 1L 1024L 1L

    let heads = intOption p "heads" 1L 1024L 8L

    let headDim = intOption p "head-dim" 1L 1024L 64L

    let maxDense =
        optional p "max-dense-seconds"
        |> Option.map (toFloat "max-dense-seconds" true)
        |> Option.defaultValue 120.0

    let report = Native.ensureLoaded ()

    let loadedFrom = defaultArg report.TorchLib "TorchSharp's own search"

    if onCuda && not (torch.cuda.is_available ()) then
        raise (
            UsageError
                $"--device cuda: CUDA is not available (set {Native.TorchLibVariable} to a CUDA PyTorch's torch/lib; libtorch loaded from {loadedFrom})."
        )

    let device = torch.Device(if onCuda then "cuda" else "cpu")

    let settings: BenchSettings =
        {
            Ns = ns
            Modes = modes
            Impls = impls
            Config = config
            DType = dtype
            Device = device
            Repeats = repeats
            Batch = batch
            Heads = heads
            HeadDim = headDim
            MaxDenseSeconds = maxDense
            SelectMerge =
                Some(
                    Casm.SelectMergeConfig.create
                        (intOption p "block-size" 1L 1_048_576L 64L |> int)
                        (intOption p "top-k" 0L 1_048_576L 4L |> int)
                        1
                        true
                        config.Causal
                        false
                )
        }

    printfn "measuring the GEMM rate (2048³ %A matmul)…" dtype

    let result =
        Benchmarking.run settings (fun event ->
            match event with
            | GemmMeasured gemm -> printfn "GEMM: %.1f GFLOP/s" gemm
            | Measured c ->
                printfn "%-8s %-7s N = %8d  %9.4f s  %7.1f GFLOP/s" c.Impl c.Mode c.N c.MedianSeconds c.Gflops
            | Skipped(impl, mode, n, expected) ->
                eprintfn
                    "skipping %s %s at N = %d: about %.0f s expected (> --max-dense-seconds %.0f)"
                    impl
                    mode
                    n
                    expected
                    maxDense)

    let cells = result.Cells
    printfn "\n%s" (Benchmarking.table cells)

    for mode in modes do
        match Benchmarking.memorySlope (cells |> List.filter (fun c -> c.Impl = "dilated" && c.Mode = mode)) with
        | Some slope -> printfn "dilated %s peak memory slope: %.0f bytes per token" mode slope
        | None -> ()

    let jsonPath = optional p "json" |> Option.defaultValue "bench.json"
    writeAtomically jsonPath (Benchmarking.toJson result)
    printfn "wrote %s" jsonPath

    match optional p "plots" with
    | Some dir ->
        let series metric =
            [
                for impl in impls do
                    for mode in modes do
                        let points =
                            cells
                            |> List.filter (fun c -> c.Impl = impl && c.Mode = mode)
                            |> List.choose (fun c -> metric c |> Option.map (fun y -> float c.N, y))

                        if not points.IsEmpty then
                            yield
                                {
                                    Charts.Name = $"{impl} {mode}"
                                    Charts.Points = points
                                }
            ]

        let title =
            $"""{(if config.Causal then "causal" else "non-causal")}, {heads} heads, head dim {headDim}, {dtype}, {deviceName}"""

        Charts.lineChart
            (Path.Combine(dir, "bench-time.png"))
            $"Time vs N ({title})"
            "N (tokens)"
            "seconds"
            true
            (series (fun c -> Some c.MedianSeconds))

        Charts.lineChart
            (Path.Combine(dir, "bench-memory.png"))
            $"Peak memory vs N ({title})"
            "N (tokens)"
            "MB"
            true
            (series (fun c -> c.PeakMb))

        printfn "wrote %s and %s" (Path.Combine(dir, "bench-time.png")) (Path.Combine(dir, "bench-memory.png"))
    | None -> ()

    0

/// Runs `longnet bench` (the grid, or the communication table with --dist) and returns the exit code.
let run (argv: string list) : int =
    if List.contains "--dist" argv then
        runDistributed (
            parse
                [
                    "n"
                    "ranks"
                    "segments"
                    "rates"
                    "offsets"
                    "heads"
                    "head-dim"
                    "json"
                    "plots"
                ]
                [ "dist"; "causal" ]
                argv
        )
    elif List.contains "--model" argv then
        BenchTraining.run (parse BenchTraining.valueOptions [] argv)
    else
        runGrid argv
