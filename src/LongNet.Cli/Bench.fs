/// `longnet bench`: forward and forward+backward time and peak memory of dilated attention and of
/// dense attention (libtorch SDPA) on the same inputs over a grid of N, with the machine's GEMM rate
/// measured in the same run. Writes a console table, a JSON file and PNG plots.
module LongNet.Cli.Bench

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp
open LongNet
open LongNet.Cli.Args

/// The command's help text.
let help =
    """longnet bench [--n 2048,4096,...] [--modes fwd,fwdbwd] [--causal] [--impls dilated,dense]
              [--segments 2048,4096,8192] [--rates 1,2,4] [--offsets paper|blocks]
              [--dtype float32|bfloat16|float64] [--device cpu|cuda] [--repeats 3]
              [--batch 1] [--heads 8] [--head-dim 64] [--max-dense-seconds 120]
              [--json PATH] [--plots DIR]
longnet bench --dist [--ranks 1,2,4,8] [--n 65536] [--segments …] [--rates …] [--heads 8] [--head-dim 64]
              [--causal] [--json PATH] [--plots DIR]

Times forward (fwd) and forward+backward (fwdbwd) of dilated attention and of dense attention
(libtorch scaled_dot_product_attention) on the same random inputs: the median of --repeats runs
after one warm-up. Also measures the GEMM rate (a 2048³ matmul in the same dtype) and reports per
cell: seconds, attended pairs, FLOPs on the sparse pairs (fwd 4·pairs·d; fwdbwd 3.5× that),
GFLOP/s, that as a fraction of the GEMM rate, the speed-up over dense and the peak memory (CPU: the
process's peak resident set above the pre-cell baseline; CUDA: not measured). Dense cells expected
to exceed --max-dense-seconds are skipped. Defaults: N = 2K…128K on CPU (up to 1M on CUDA), batch 1,
8 heads, head dim 64, float32 on CPU / bfloat16 on CUDA, groups 2048,4096,8192 / 1,2,4 (clipped to N).

With --dist: the communication volume of sequence-parallel dilated attention per rank for each P in
--ranks (default 1,2,4,8), counted on simulated ranks (one process), next to the same segments
without dilation and an all-gather of every rank's keys and values; a table, JSON and a plot.
Defaults for --dist: N = 65536, groups 2048,4096,8192,16384,32768 / 1,2,4,8,16."""

/// One measured cell of the grid.
type Cell =
    {
        Impl: string
        N: int64
        Mode: string
        Causal: bool
        MedianSeconds: float
        Pairs: int64
        Flops: float
        Gflops: float
        GemmFraction: float
        mutable SpeedupVsDense: float option
        PeakMb: float option
    }

let private synchronize (device: torch.Device) =
    if device.``type`` = DeviceType.CUDA then
        torch.cuda.synchronize device

let private median (xs: float list) =
    let s = List.sort xs
    let n = s.Length

    if n % 2 = 1 then
        s.[n / 2]
    else
        (s.[n / 2 - 1] + s.[n / 2]) / 2.0

/// Times `run` (median of `repeats` after one warm-up), synchronising the device around each run.
let private time (device: torch.Device) (repeats: int) (run: unit -> unit) =
    run ()
    synchronize device

    [
        for _ in 1..repeats ->
            let clock = Stopwatch.StartNew()
            run ()
            synchronize device
            clock.Elapsed.TotalSeconds
    ]
    |> median

let private residentKb (field: string) =
    try
        File.ReadLines "/proc/self/status"
        |> Seq.tryFind (fun l -> l.StartsWith(field + ":"))
        |> Option.map (fun l -> float (l.Split(' ', StringSplitOptions.RemoveEmptyEntries).[1]))
    with _ ->
        None

/// Runs `work` and returns the process's peak resident memory above the baseline, in MB (Linux, CPU only).
let private peakMemory (device: torch.Device) (work: unit -> unit) : float option =
    if device.``type`` <> DeviceType.CPU then
        work ()
        None
    else
        GC.Collect()

        let reset =
            try
                File.WriteAllText("/proc/self/clear_refs", "5")
                true
            with _ ->
                false

        let baseline = residentKb "VmRSS"
        work ()
        let peak = residentKb "VmHWM"

        match reset, baseline, peak with
        | true, Some b, Some p -> Some(max 0.0 (p - b) / 1024.0)
        | _ -> None

/// The GEMM rate in GFLOP/s: the median time of a 2048³ matmul in `dtype` on `device`.
let gemmGflops (dtype: torch.ScalarType) (device: torch.Device) (repeats: int) : float =
    use scope = torch.NewDisposeScope()
    let size = 2048L
    let a = torch.randn (size, size, dtype = dtype, device = device)
    let b = torch.randn (size, size, dtype = dtype, device = device)
    let seconds = time device (max 3 repeats) (fun () -> a.matmul(b).Dispose())
    2.0 * float (size * size * size) / seconds / 1e9

let private machine (device: torch.Device) =
    let cpu =
        try
            File.ReadLines "/proc/cpuinfo"
            |> Seq.tryFind (fun l -> l.StartsWith "model name")
            |> Option.map (fun l -> l.Substring(l.IndexOf(':') + 1).Trim())
            |> Option.defaultValue "unknown"
        with _ ->
            "unknown"

    let node = JsonObject()
    node["cpu"] <- JsonValue.Create cpu
    node["cores"] <- JsonValue.Create Environment.ProcessorCount
    node["torch_threads"] <- JsonValue.Create(torch.get_num_threads ())
    node["os"] <- JsonValue.Create(Runtime.InteropServices.RuntimeInformation.OSDescription)
    node["dotnet"] <- JsonValue.Create(Environment.Version.ToString())
    node["device"] <- JsonValue.Create(device.ToString())
    node["date"] <- JsonValue.Create(DateTime.UtcNow.ToString "yyyy-MM-ddTHH:mm:ssZ")
    node

let private toJson (m: JsonObject) (gemm: float) (cells: Cell list) =
    let root = JsonObject()
    root["machine"] <- m
    root["gemm_gflops"] <- JsonValue.Create gemm
    let results = JsonArray()

    for c in cells do
        let o = JsonObject()
        o["impl"] <- JsonValue.Create c.Impl
        o["n"] <- JsonValue.Create c.N
        o["mode"] <- JsonValue.Create c.Mode
        o["causal"] <- JsonValue.Create c.Causal
        o["median_s"] <- JsonValue.Create c.MedianSeconds
        o["pairs"] <- JsonValue.Create c.Pairs
        o["flops"] <- JsonValue.Create c.Flops
        o["gflops"] <- JsonValue.Create c.Gflops
        o["gemm_fraction"] <- JsonValue.Create c.GemmFraction

        o["speedup_vs_dense"] <-
            (match c.SpeedupVsDense with
             | Some s -> JsonValue.Create s :> JsonNode
             | None -> null)

        o["peak_mb"] <-
            (match c.PeakMb with
             | Some s -> JsonValue.Create s :> JsonNode
             | None -> null)

        results.Add o

    root["results"] <- results
    root.ToJsonString(JsonSerializerOptions(WriteIndented = true))

let private writeAtomically (path: string) (text: string) =
    AtomicFile.ensureFolderOf path
    AtomicFile.writeText path text

let private table (cells: Cell list) =
    let header =
        $"""{"impl", -8} {"mode", -7} {"N", 8} {"median s", 10} {"pairs", 14} {"GFLOP/s", 9} {"of GEMM", 8} {"vs dense", 9} {"peak MB", 9}"""

    let rows =
        cells
        |> List.map (fun c ->
            let speedup =
                c.SpeedupVsDense |> Option.map (sprintf "%.2fx") |> Option.defaultValue "-"

            let peak = c.PeakMb |> Option.map (sprintf "%.0f") |> Option.defaultValue "-"
            $"{c.Impl, -8} {c.Mode, -7} {c.N, 8} {c.MedianSeconds, 10:F4} {c.Pairs, 14} {c.Gflops, 9:F1} {100.0 * c.GemmFraction, 7:F1}%% {speedup, 9} {peak, 9}")

    String.Join("\n", header :: rows)

/// Fits peak memory = a + b·N by least squares and returns b in bytes per token (None with < 2 points).
let memorySlope (cells: Cell list) : float option =
    let points =
        cells
        |> List.choose (fun c -> c.PeakMb |> Option.map (fun mb -> float c.N, mb * 1048576.0))

    if points.Length < 2 then
        None
    else
        let n = float points.Length
        let mx = points |> List.averageBy fst
        let my = points |> List.averageBy snd
        let sxy = points |> List.sumBy (fun (x, y) -> (x - mx) * (y - my))
        let sxx = points |> List.sumBy (fun (x, _) -> (x - mx) ** 2.0)
        if sxx = 0.0 || n < 2.0 then None else Some(sxy / sxx)

/// Runs `longnet bench --dist`: communication per rank as P grows, on simulated ranks.
let private runDistributed (p: Parsed) : int =
    let withDefault name value (p: Parsed) =
        if p.Values.ContainsKey name then
            p
        else
            { p with
                Values = p.Values.Add(name, value)
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
        if i <> "dilated" && i <> "dense" then
            raise (UsageError $"--impls takes dilated and/or dense, got '{i}'.")

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
    printfn "measuring the GEMM rate (2048³ %A matmul)…" dtype
    let gemm = gemmGflops dtype device repeats
    printfn "GEMM: %.1f GFLOP/s" gemm

    let cells =
        [
            for n in ns do
                for mode in modes do
                    for impl in impls do
                        let backward = mode = "fwdbwd"
                        let flopFactor = if backward then 3.5 else 1.0

                        let pairs, flops =
                            if impl = "dilated" then
                                let s = Plan.summarise config (int n) (int heads) (int headDim) false
                                s.Pairs * batch, s.Flops * float batch * flopFactor
                            else
                                let pairs = if config.Causal then n * (n + 1L) / 2L else n * n
                                let pairs = pairs * heads * batch
                                pairs, 4.0 * float pairs * float headDim * flopFactor

                        if impl = "dense" && flops / (gemm * 1e9) > maxDense then
                            eprintfn
                                "skipping dense %s at N = %d: about %.0f s expected (> --max-dense-seconds %.0f)"
                                mode
                                n
                                (flops / (gemm * 1e9))
                                maxDense
                        else
                            use _scope = torch.NewDisposeScope()
                            let shape = [| batch; heads; n; headDim |]

                            let make () =
                                (torch.randn (size = shape, dtype = dtype, device = device)).requires_grad_ backward

                            let q, k, v = make (), make (), make ()
                            let dout = torch.randn (size = shape, dtype = dtype, device = device)

                            let once () =
                                use _inner = torch.NewDisposeScope()

                                let out =
                                    if impl = "dilated" then
                                        DilatedAttention.forward config q k v
                                    else
                                        torch.nn.functional.scaled_dot_product_attention (
                                            q,
                                            k,
                                            v,
                                            is_casual = config.Causal
                                        )

                                if backward then
                                    out.backward (Collections.Generic.List [ dout ])
                                    q.grad.zero_ () |> ignore
                                    k.grad.zero_ () |> ignore
                                    v.grad.zero_ () |> ignore

                            let mutable seconds = 0.0
                            let peak = peakMemory device (fun () -> seconds <- time device repeats once)
                            let gflops = flops / seconds / 1e9

                            let cell =
                                {
                                    Impl = impl
                                    N = n
                                    Mode = mode
                                    Causal = config.Causal
                                    MedianSeconds = seconds
                                    Pairs = pairs
                                    Flops = flops
                                    Gflops = gflops
                                    GemmFraction = gflops / gemm
                                    SpeedupVsDense = None
                                    PeakMb = peak
                                }

                            printfn "%-8s %-7s N = %8d  %9.4f s  %7.1f GFLOP/s" impl mode n seconds gflops
                            yield cell
        ]

    for c in cells do
        if c.Impl = "dilated" then
            c.SpeedupVsDense <-
                cells
                |> List.tryFind (fun d -> d.Impl = "dense" && d.N = c.N && d.Mode = c.Mode)
                |> Option.map (fun d -> d.MedianSeconds / c.MedianSeconds)

    printfn "\n%s" (table cells)

    for mode in modes do
        match memorySlope (cells |> List.filter (fun c -> c.Impl = "dilated" && c.Mode = mode)) with
        | Some slope -> printfn "dilated %s peak memory slope: %.0f bytes per token" mode slope
        | None -> ()

    let jsonPath = optional p "json" |> Option.defaultValue "bench.json"
    writeAtomically jsonPath (toJson (machine device) gemm cells)
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
    else
        runGrid argv
