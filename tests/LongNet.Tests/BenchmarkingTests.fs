/// The benchmark core: the grid is measured in order, speed-ups pair dilated with dense cells, slow
/// dense cells are skipped, costs come from the plan, and the JSON has the fields `longnet bench` writes.
[<Xunit.Collection("serial")>]
module LongNet.Tests.BenchmarkingTests

open System
open System.Text.Json.Nodes
open Xunit
open TorchSharp
open LongNet

let private settings () : BenchSettings =
    Native.ensureLoaded () |> ignore

    {
        Ns = [ 48L; 80L ]
        Modes = [ "fwd"; "fwdbwd" ]
        Impls = [ "dilated"; "dense" ]
        Config = DilatedConfig.createOrRaise [ 16; 32 ] [ 1; 2 ] Paper true None
        DType = torch.ScalarType.Float32
        Device = torch.CPU
        Repeats = 1
        Batch = 2L
        Heads = 3L
        HeadDim = 8L
        MaxDenseSeconds = 120.0
        SelectMerge = None
    }

let private cell impl n mode seconds peak =
    {
        Impl = impl
        N = n
        Mode = mode
        Causal = false
        MedianSeconds = seconds
        Pairs = 1L
        Flops = 1.0
        Gflops = 1.0
        GemmFraction = 0.1
        SpeedupVsDense = None
        PeakMb = peak
    }

[<Fact>]
let ``a grid measures every N, mode and implementation in order, with costs from the plan`` () =
    let s = settings ()
    let events = ResizeArray<BenchEvent>()
    let result = Benchmarking.run s events.Add

    let expected =
        [
            for n in s.Ns do
                for m in s.Modes do
                    for i in s.Impls -> i, n, m
        ]

    Assert.Equal<(string * int64 * string) list>(expected, result.Cells |> List.map (fun c -> c.Impl, c.N, c.Mode))

    match List.ofSeq events with
    | GemmMeasured g :: rest ->
        Assert.Equal(result.GemmGflops, g)
        Assert.True(g > 0.0)
        Assert.Equal(result.Cells.Length, rest.Length)
    | _ -> failwith "the GEMM rate should be reported first"

    for c in result.Cells do
        let plan = Plan.summarise s.Config (int c.N) 3 8 false
        let factor = if c.Mode = "fwdbwd" then 3.5 else 1.0

        if c.Impl = "dilated" then
            Assert.Equal(plan.Pairs * 2L, c.Pairs)
            Assert.Equal(plan.Flops * 2.0 * factor, c.Flops)

            let dense =
                result.Cells
                |> List.find (fun d -> d.Impl = "dense" && d.N = c.N && d.Mode = c.Mode)

            Assert.Equal(Some(dense.MedianSeconds / c.MedianSeconds), c.SpeedupVsDense)
        else
            Assert.Equal(c.N * (c.N + 1L) / 2L * 3L * 2L, c.Pairs)
            Assert.Equal(4.0 * float c.Pairs * 8.0 * factor, c.Flops)
            Assert.Equal(None, c.SpeedupVsDense)

        Assert.True(c.MedianSeconds > 0.0)
        Assert.Equal(c.Flops / c.MedianSeconds / 1e9, c.Gflops)
        Assert.Equal(c.Gflops / result.GemmGflops, c.GemmFraction)
        Assert.True(c.Causal)

[<Fact>]
let ``dense cells expected to exceed the time limit are skipped and reported`` () =
    let s =
        { settings () with
            Ns = [ 64L ]
            Modes = [ "fwd" ]
            MaxDenseSeconds = 1e-12
        }

    let events = ResizeArray<BenchEvent>()
    let result = Benchmarking.run s events.Add
    Assert.Equal<string list>([ "dilated" ], result.Cells |> List.map _.Impl)
    Assert.Equal(None, result.Cells.Head.SpeedupVsDense)

    Assert.Contains(
        events,
        fun e ->
            match e with
            | Skipped("dense", "fwd", 64L, seconds) -> seconds > 1e-12
            | _ -> false
    )

[<Fact>]
let ``the JSON holds the machine, the GEMM rate and every field of every cell`` () =
    Native.ensureLoaded () |> ignore

    let result =
        {
            Machine = Benchmarking.machine torch.CPU
            GemmGflops = 12.5
            Cells =
                Benchmarking.withSpeedups [ cell "dilated" 64L "fwd" 0.5 (Some 3.0); cell "dense" 64L "fwd" 2.0 None ]
        }

    let root = JsonNode.Parse(Benchmarking.toJson result)
    Assert.Equal(12.5, root["gemm_gflops"].GetValue<float>())

    for field in [ "cpu"; "cores"; "torch_threads"; "os"; "dotnet"; "device"; "date" ] do
        Assert.NotNull(root["machine"].[field])

    let results = root["results"].AsArray()
    Assert.Equal(2, results.Count)
    let dilated = results.[0]
    Assert.Equal("dilated", dilated["impl"].GetValue<string>())
    Assert.Equal(64L, dilated["n"].GetValue<int64>())
    Assert.Equal(4.0, dilated["speedup_vs_dense"].GetValue<float>())
    Assert.Equal(3.0, dilated["peak_mb"].GetValue<float>())
    Assert.Null(results.[1].["speedup_vs_dense"])
    Assert.Null(results.[1].["peak_mb"])

    let fields =
        [
            "impl"
            "n"
            "mode"
            "causal"
            "median_s"
            "pairs"
            "flops"
            "gflops"
            "gemm_fraction"
            "speedup_vs_dense"
            "peak_mb"
        ]

    Assert.Equal<string list>(fields, dilated.AsObject() |> Seq.map _.Key |> List.ofSeq)
    Assert.Equal(3, (Benchmarking.table result.Cells).Split('\n').Length)

[<Fact>]
let ``the memory slope is the least-squares bytes per token`` () =
    let cells =
        [
            for n in [ 100L; 200L; 400L ] -> cell "dilated" n "fwd" 1.0 (Some(1.0 + float n * 2.0 / 1048576.0))
        ]

    match Benchmarking.memorySlope cells with
    | Some slope -> Assert.True(abs (slope - 2.0) < 1e-9, $"slope {slope}")
    | None -> failwith "no slope"

    Assert.Equal(None, Benchmarking.memorySlope [ cell "dilated" 1L "fwd" 1.0 (Some 1.0) ])

[<Fact>]
let ``an invalid grid is refused naming the setting`` () =
    let refused (s: BenchSettings) =
        match Benchmarking.validate s with
        | Error e -> e.Parameter
        | Ok _ -> "accepted"

    let s = settings ()
    Assert.Equal("ns", refused { s with Ns = [] })
    Assert.Equal("ns", refused { s with Ns = [ 0L ] })
    Assert.Equal("modes", refused { s with Modes = [ "backward" ] })
    Assert.Equal("impls", refused { s with Impls = [ "flash" ] })
    Assert.Equal("repeats", refused { s with Repeats = 0 })
    Assert.Equal("heads", refused { s with Heads = 0L })
    Assert.Equal("maxDenseSeconds", refused { s with MaxDenseSeconds = 0.0 })
    Assert.Equal("accepted", refused s)

    let e =
        Assert.Throws<ArgumentException>(fun () -> Benchmarking.run { s with Impls = [ "flash" ] } ignore |> ignore)

    Assert.Equal("impls", e.ParamName)

[<Fact>]
let ``bench --model measures training tokens per second at each sequence length and writes JSON`` () =
    Native.ensureLoaded () |> ignore
    use dir = new LongNet.Tests.TestSupport.TempDir "bench-training"
    let json = dir.File "throughput.json"

    let code, stdout, stderr =
        LongNet.Tests.TestSupport.longnet
            [
                "bench"
                "--model"
                "tiny"
                "--seq-len"
                "16,64"
                "--tokens-per-step"
                "128"
                "--steps"
                "2"
                "--json"
                json
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("tokens/s", stdout)
    let root = JsonNode.Parse(IO.File.ReadAllText json)
    Assert.Equal("tiny", root.["model"].GetValue<string>())
    let cells = root.["cells"].AsArray()
    Assert.Equal(2, cells.Count)
    Assert.Equal<int list>([ 16; 64 ], [ for c in cells -> c.["seq_len"].GetValue<int>() ])
    Assert.Equal<int list>([ 8; 2 ], [ for c in cells -> c.["batch"].GetValue<int>() ])
    Assert.Equal(1.0, cells.[0].["relative"].GetValue<float>())

    for c in cells do
        Assert.True(c.["tokens_per_second"].GetValue<float>() > 0.0)
        Assert.True(c.["spread"].GetValue<float>() >= 1.0)

    // bad input: exit 2 naming the option
    for args, option in
        [
            [ "--model"; "huge" ], "--model"
            [ "--model"; "tiny"; "--seq-len"; "1" ], "--seq-len"
            [ "--model"; "tiny"; "--steps"; "0" ], "--steps"
        ] do
        let code, _, stderr = LongNet.Tests.TestSupport.longnet ("bench" :: args)
        Assert.Equal(2, code)
        Assert.Contains(option, stderr)
