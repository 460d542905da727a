/// Measuring attention: forward and forward+backward time and peak memory of an attention
/// implementation over a grid of sequence lengths, next to the machine's GEMM rate measured in the same
/// run; results as records, a text table and the JSON that `longnet bench` writes.
/// Notation: b batch, h heads, n positions, d head dim.
namespace LongNet

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open TorchSharp

/// One measured cell of a benchmark grid.
type BenchCell =
    {
        /// The implementation: "dilated", "dense" or "selectmerge".
        Impl: string
        /// The sequence length N.
        N: int64
        /// "fwd" (forward) or "fwdbwd" (forward and backward).
        Mode: string
        /// Whether the attention was causal.
        Causal: bool
        /// The median wall time of one run, in seconds.
        MedianSeconds: float
        /// Attended (query, key) pairs, summed over batch and heads.
        Pairs: int64
        /// FLOPs on the attended pairs: 4·pairs·d for fwd, 3.5 times that for fwdbwd.
        Flops: float
        /// FLOPs per second, in units of 10⁹.
        Gflops: float
        /// `Gflops` as a fraction of the GEMM rate.
        GemmFraction: float
        /// Dense time / this time at the same N and mode (dilated and select-merge cells with a dense cell only).
        SpeedupVsDense: float option
        /// Peak resident memory above the pre-cell baseline in MB (CPU on Linux only).
        PeakMb: float option
    }

/// The grid a benchmark measures.
type BenchSettings =
    {
        /// Sequence lengths N, measured in this order.
        Ns: int64 list
        /// Modes: "fwd" and/or "fwdbwd".
        Modes: string list
        /// Implementations: names from `Benchmarking.implementations`.
        Impls: string list
        /// The dilated attention's groups, head offsets, causality and scale (dense uses its causality).
        Config: DilatedConfig
        /// The dtype of the inputs and of the GEMM measurement.
        DType: torch.ScalarType
        /// The device the inputs live on.
        Device: torch.Device
        /// Timed runs per cell (after one warm-up); the median is reported.
        Repeats: int
        /// Batch size b.
        Batch: int64
        /// Heads h.
        Heads: int64
        /// Head dimension d.
        HeadDim: int64
        /// Dense cells expected (from the GEMM rate) to take longer than this many seconds are skipped.
        MaxDenseSeconds: float
        /// Select-and-merge settings of the "selectmerge" rows (None: `Benchmarking.defaultSelectMerge`).
        SelectMerge: Casm.SelectMergeConfig option
    }

/// The machine a benchmark ran on.
type BenchMachine =
    {
        /// The CPU model name ("unknown" where /proc/cpuinfo is missing).
        Cpu: string
        /// Logical processors.
        Cores: int
        /// libtorch's intra-op threads.
        TorchThreads: int
        /// The operating system.
        Os: string
        /// The .NET runtime version.
        Dotnet: string
        /// The device measured.
        Device: string
        /// When the run started (UTC, ISO 8601).
        Date: string
    }

/// What a benchmark reports while it runs.
type BenchEvent =
    /// The GEMM rate was measured (GFLOP/s).
    | GemmMeasured of gflops: float
    /// A cell was measured.
    | Measured of BenchCell
    /// A dense cell was skipped: implementation, mode, N and the seconds it was expected to take.
    | Skipped of impl: string * mode: string * n: int64 * expectedSeconds: float

/// A finished benchmark.
type BenchResult =
    {
        /// The machine.
        Machine: BenchMachine
        /// The GEMM rate (a 2048³ matmul in the benchmark's dtype), in GFLOP/s.
        GemmGflops: float
        /// The measured cells, speed-ups filled in.
        Cells: BenchCell list
    }

/// Running benchmarks and formatting their results.
module Benchmarking =
    /// The modes a benchmark knows.
    let modes = [ "fwd"; "fwdbwd" ]

    /// The implementations a benchmark knows.
    let implementations = [ "dilated"; "dense"; "selectmerge" ]

    /// The select-and-merge rows' default settings: blocks of 64, top-4 blocks plus a sink, merge factor 1.
    let defaultSelectMerge (causal: bool) : Casm.SelectMergeConfig =
        Casm.SelectMergeConfig.create 64 4 1 true causal false

    /// The attended pairs, the forward FLOPs and the attention function of implementation `impl` for
    /// inputs `[b, h, n, d]` (the one place that knows what each implementation computes).
    let implementationWith
        (selectMerge: Casm.SelectMergeConfig option)
        (impl: string)
        (config: DilatedConfig)
        (batch: int64)
        (heads: int64)
        (n: int64)
        (headDim: int64)
        : int64 * float * (torch.Tensor -> torch.Tensor -> torch.Tensor -> torch.Tensor) =
        match impl with
        | "dilated" ->
            let s = Plan.summarise config (int n) (int heads) (int headDim) false
            s.Pairs * batch, s.Flops * float batch, DilatedAttention.forward config
        | "dense" ->
            let pairs = (if config.Causal then n * (n + 1L) / 2L else n * n) * heads * batch

            pairs,
            4.0 * float pairs * float headDim,
            fun q k v -> torch.nn.functional.scaled_dot_product_attention (q, k, v, is_casual = config.Causal)
        | "selectmerge" ->
            let sm =
                { (defaultArg selectMerge (defaultSelectMerge config.Causal)) with
                    Causal = config.Causal
                }

            // The pairs are the (query, key) scores select-and-merge computes.
            let pairs = Casm.SelectMergePlan.pairCount sm (int n) * heads * batch
            let scale = DilatedConfig.scaleFor config (int headDim)
            pairs, 4.0 * float pairs * float headDim, (fun q k v -> fst (Casm.SelectMerge.attend sm None scale q k v))
        | other ->
            let known = String.Join(", ", implementations)
            invalidArg "impls" $"impls must be among {known}, got '{other}'."

    /// `implementationWith` with the default select-and-merge settings.
    let implementation impl config batch heads n headDim =
        implementationWith None impl config batch heads n headDim

    /// Checks sizes, modes and implementations; the error names the setting.
    let validate (s: BenchSettings) : Result<BenchSettings, ConfigError> =
        let error p m = Error { Parameter = p; Message = m }

        match
            s.Modes |> List.tryFind (fun m -> not (List.contains m modes)),
            s.Impls |> List.tryFind (fun i -> not (List.contains i implementations))
        with
        | _ when s.Ns.IsEmpty -> error "ns" "ns must hold at least one sequence length."
        | _ when s.Ns |> List.exists (fun n -> n < 1L || n > int64 Int32.MaxValue) ->
            error "ns" $"every sequence length must be in [1, {Int32.MaxValue}]."
        | _ when s.Modes.IsEmpty -> error "modes" "modes must hold fwd and/or fwdbwd."
        | Some m, _ -> error "modes" $"modes takes fwd and/or fwdbwd, got '{m}'."
        | _ when s.Impls.IsEmpty -> error "impls" "impls must hold at least one implementation."
        | _, Some i ->
            let known = String.Join(", ", implementations)
            error "impls" $"impls must be among {known}, got '{i}'."
        | _ when s.Repeats < 1 -> error "repeats" $"repeats must be ≥ 1, got {s.Repeats}."
        | _ when s.Batch < 1L -> error "batch" $"batch must be ≥ 1, got {s.Batch}."
        | _ when s.Heads < 1L -> error "heads" $"heads must be ≥ 1, got {s.Heads}."
        | _ when s.HeadDim < 1L -> error "headDim" $"headDim must be ≥ 1, got {s.HeadDim}."
        | _ when not (s.MaxDenseSeconds > 0.0) ->
            error "maxDenseSeconds" $"maxDenseSeconds must be > 0, got {s.MaxDenseSeconds}."
        | _ -> Ok s

    let private synchronize (device: torch.Device) =
        if device.``type`` = DeviceType.CUDA then
            torch.cuda.synchronize device

    /// The median of a non-empty list.
    let median (xs: float list) : float =
        let s = List.sort xs
        let n = s.Length

        if n % 2 = 1 then
            s.[n / 2]
        else
            (s.[n / 2 - 1] + s.[n / 2]) / 2.0

    /// Times `run` (median of `repeats` after one warm-up), synchronising the device around each run.
    let time (device: torch.Device) (repeats: int) (run: unit -> unit) : float =
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

    /// Runs `work` and returns the process's peak resident memory above the baseline, in MB (Linux, CPU only).
    let peakMemory (device: torch.Device) (work: unit -> unit) : float option =
        if device.``type`` <> DeviceType.CPU then
            work ()
            None
        else
            ProcessMemory.measure work |> Option.map _.AboveBaselineMb

    /// The GEMM rate in GFLOP/s: the median time of a 2048³ matmul in `dtype` on `device`.
    let gemmGflops (dtype: torch.ScalarType) (device: torch.Device) (repeats: int) : float =
        use scope = torch.NewDisposeScope()
        let size = 2048L
        let a = torch.randn (size, size, dtype = dtype, device = device)
        let b = torch.randn (size, size, dtype = dtype, device = device)
        let seconds = time device (max 3 repeats) (fun () -> a.matmul(b).Dispose())
        2.0 * float (size * size * size) / seconds / 1e9

    /// This machine, as measured on `device` now.
    let machine (device: torch.Device) : BenchMachine =
        let cpu =
            try
                File.ReadLines "/proc/cpuinfo"
                |> Seq.tryFind (fun l -> l.StartsWith "model name")
                |> Option.map (fun l -> l.Substring(l.IndexOf(':') + 1).Trim())
                |> Option.defaultValue "unknown"
            with _ ->
                "unknown"

        {
            Cpu = cpu
            Cores = Environment.ProcessorCount
            TorchThreads = torch.get_num_threads ()
            Os = Runtime.InteropServices.RuntimeInformation.OSDescription
            Dotnet = Environment.Version.ToString()
            Device = device.ToString()
            Date = DateTime.UtcNow.ToString "yyyy-MM-ddTHH:mm:ssZ"
        }

    /// Measures implementation `impl` in `mode` at sequence length `n` on random inputs; `Skipped` when
    /// a dense cell is expected (at `gemm` GFLOP/s) to exceed `MaxDenseSeconds`.
    let measure (s: BenchSettings) (gemm: float) (impl: string) (mode: string) (n: int64) : BenchEvent =
        let backward = mode = "fwdbwd"
        let flopFactor = if backward then 3.5 else 1.0

        let pairs, forwardFlops, attend =
            implementationWith s.SelectMerge impl s.Config s.Batch s.Heads n s.HeadDim

        let flops = forwardFlops * flopFactor

        if impl = "dense" && flops / (gemm * 1e9) > s.MaxDenseSeconds then
            Skipped(impl, mode, n, flops / (gemm * 1e9))
        else
            use _scope = torch.NewDisposeScope()
            let shape = [| s.Batch; s.Heads; n; s.HeadDim |]

            let make () =
                (torch.randn (size = shape, dtype = s.DType, device = s.Device)).requires_grad_ backward

            let q, k, v = make (), make (), make ()
            let dout = torch.randn (size = shape, dtype = s.DType, device = s.Device)

            let once () =
                use _inner = torch.NewDisposeScope()
                let out = attend q k v

                if backward then
                    out.backward (Collections.Generic.List [ dout ])
                    q.grad.zero_ () |> ignore
                    k.grad.zero_ () |> ignore
                    v.grad.zero_ () |> ignore

            let mutable seconds = 0.0

            let peak = peakMemory s.Device (fun () -> seconds <- time s.Device s.Repeats once)

            let gflops = flops / seconds / 1e9

            Measured
                {
                    Impl = impl
                    N = n
                    Mode = mode
                    Causal = s.Config.Causal
                    MedianSeconds = seconds
                    Pairs = pairs
                    Flops = flops
                    Gflops = gflops
                    GemmFraction = gflops / gemm
                    SpeedupVsDense = None
                    PeakMb = peak
                }

    /// The cells with each sparse cell's speed-up over the dense cell of the same N and mode.
    let withSpeedups (cells: BenchCell list) : BenchCell list =
        cells
        |> List.map (fun c ->
            if c.Impl <> "dense" then
                { c with
                    SpeedupVsDense =
                        cells
                        |> List.tryFind (fun d -> d.Impl = "dense" && d.N = c.N && d.Mode = c.Mode)
                        |> Option.map (fun d -> d.MedianSeconds / c.MedianSeconds)
                }
            else
                c)

    /// Runs the whole grid (for each N, each mode, each implementation), telling `report` about the GEMM
    /// rate and every cell as it goes. Raises ArgumentException naming the setting for an invalid grid.
    let run (s: BenchSettings) (report: BenchEvent -> unit) : BenchResult =
        match validate s with
        | Error e -> e.Raise()
        | Ok _ -> ()

        Native.ensureLoaded () |> ignore
        let gemm = gemmGflops s.DType s.Device s.Repeats
        report (GemmMeasured gemm)

        let cells =
            [
                for n in s.Ns do
                    for mode in s.Modes do
                        for impl in s.Impls do
                            let event = measure s gemm impl mode n
                            report event

                            match event with
                            | Measured c -> yield c
                            | _ -> ()
            ]

        {
            Machine = machine s.Device
            GemmGflops = gemm
            Cells = withSpeedups cells
        }

    /// Fits peak memory = a + b·N by least squares and returns b in bytes per token (None with < 2 points).
    let memorySlope (cells: BenchCell list) : float option =
        let points =
            cells
            |> List.choose (fun c -> c.PeakMb |> Option.map (fun mb -> float c.N, mb * 1048576.0))

        if points.Length < 2 then
            None
        else
            let mx = points |> List.averageBy fst
            let my = points |> List.averageBy snd
            let sxy = points |> List.sumBy (fun (x, y) -> (x - mx) * (y - my))
            let sxx = points |> List.sumBy (fun (x, _) -> (x - mx) ** 2.0)
            if sxx = 0.0 then None else Some(sxy / sxx)

    /// The JSON of a machine: cpu, cores, torch_threads, os, dotnet, device and date.
    let machineJson (machine: BenchMachine) : JsonObject =
        let m = JsonObject()
        m["cpu"] <- JsonValue.Create machine.Cpu
        m["cores"] <- JsonValue.Create machine.Cores
        m["torch_threads"] <- JsonValue.Create machine.TorchThreads
        m["os"] <- JsonValue.Create machine.Os
        m["dotnet"] <- JsonValue.Create machine.Dotnet
        m["device"] <- JsonValue.Create machine.Device
        m["date"] <- JsonValue.Create machine.Date
        m

    /// The JSON of a result: `machine`, `gemm_gflops` and one object per cell in `results`.
    let toJson (r: BenchResult) : string =
        let root = JsonObject()
        root["machine"] <- machineJson r.Machine
        root["gemm_gflops"] <- JsonValue.Create r.GemmGflops
        let results = JsonArray()

        let optional (x: float option) : JsonNode =
            match x with
            | Some v -> JsonValue.Create v
            | None -> null

        for c in r.Cells do
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
            o["speedup_vs_dense"] <- optional c.SpeedupVsDense
            o["peak_mb"] <- optional c.PeakMb
            results.Add o

        root["results"] <- results
        root.ToJsonString(JsonSerializerOptions(WriteIndented = true))

    /// A text table of cells: implementation, mode, N, median seconds, pairs, GFLOP/s, share of the GEMM
    /// rate, speed-up over dense and peak memory.
    let table (cells: BenchCell list) : string =
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
