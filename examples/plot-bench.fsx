// Plotting `longnet bench` JSON: time per token and achieved GFLOP/s against N, per implementation and
// mode, plus the table of the cells (median seconds, speed-up over dense, share of the GEMM rate).
// Run:  dotnet fsi examples/plot-bench.fsx [OUT_DIR] [BENCH_JSON]   (default JSON: docs/bench/cpu.json)
// Without OUT_DIR the PNGs go to a fresh temporary folder.
#r "nuget: ScottPlot, 5.1.59"
#r "nuget: SkiaSharp.NativeAssets.Linux.NoDependencies, 3.119.4"

open System
open System.IO
open System.Text.Json

let args = fsi.CommandLineArgs |> Array.tail

let outDir =
    match args with
    | [||] -> Path.Combine(Path.GetTempPath(), $"longnet-bench-plots-{Guid.NewGuid():N}")
    | _ -> args.[0]

let jsonPath =
    if args.Length >= 2 then
        args.[1]
    else
        Path.Combine(__SOURCE_DIRECTORY__, "..", "docs", "bench", "cpu.json")

Directory.CreateDirectory outDir |> ignore

/// One measured cell of the benchmark JSON.
type Cell =
    {
        Impl: string
        Mode: string
        N: int64
        Seconds: float
        Gflops: float
        GemmFraction: float
        Speedup: float option
    }

let root = JsonDocument.Parse(File.ReadAllText jsonPath).RootElement
let gemm = root.GetProperty("gemm_gflops").GetDouble()

let cells =
    [
        for r in root.GetProperty("results").EnumerateArray() ->
            {
                Impl = r.GetProperty("impl").GetString()
                Mode = r.GetProperty("mode").GetString()
                N = r.GetProperty("n").GetInt64()
                Seconds = r.GetProperty("median_s").GetDouble()
                Gflops = r.GetProperty("gflops").GetDouble()
                GemmFraction = r.GetProperty("gemm_fraction").GetDouble()
                Speedup =
                    match r.GetProperty("speedup_vs_dense") with
                    | s when s.ValueKind = JsonValueKind.Number -> Some(s.GetDouble())
                    | _ -> None
            }
    ]

if cells.IsEmpty then
    failwith $"{jsonPath} holds no results"

printfn "%s: GEMM %.1f GFLOP/s, %d cells" jsonPath gemm cells.Length
printfn "%-8s %-7s %8s %10s %12s %8s %8s %9s" "impl" "mode" "N" "median s" "µs/token" "GFLOP/s" "of GEMM" "vs dense"

for c in cells do
    let speedup = c.Speedup |> Option.map (sprintf "%.2f×") |> Option.defaultValue "-"

    printfn
        "%-8s %-7s %8d %10.4f %12.2f %8.1f %7.0f%% %9s"
        c.Impl
        c.Mode
        c.N
        c.Seconds
        (c.Seconds / float c.N * 1e6)
        c.Gflops
        (100.0 * c.GemmFraction)
        speedup

/// Draws one line per (implementation, mode) of `value` against N (log2 x axis) into `file`.
let draw (file: string) (title: string) (yLabel: string) (value: Cell -> float) =
    use plot = new ScottPlot.Plot()

    for (impl, mode), group in cells |> List.groupBy (fun c -> c.Impl, c.Mode) do
        let points = group |> List.sortBy _.N
        let xs = points |> List.map (fun c -> Math.Log2(float c.N)) |> Array.ofList
        let ys = points |> List.map value |> Array.ofList
        let line = plot.Add.Scatter(xs, ys)
        line.LegendText <- $"{impl} {mode}"

    let ticks = ScottPlot.TickGenerators.NumericManual()

    for n in cells |> List.map _.N |> List.distinct do
        ticks.AddMajor(Math.Log2(float n), (if n >= 1024L then $"{n / 1024L}K" else string n))

    plot.Axes.Bottom.TickGenerator <- ticks
    plot.Title title
    plot.XLabel "sequence length N"
    plot.YLabel yLabel
    plot.ShowLegend() |> ignore
    let path = Path.Combine(outDir, file)
    plot.SavePng(path, 900, 560) |> ignore
    printfn "wrote %s" path

draw "time-per-token.png" "Time per token (flat = linear cost)" "µs per token" (fun c -> c.Seconds / float c.N * 1e6)
draw "gflops.png" $"Achieved GFLOP/s (GEMM: {gemm:F0})" "GFLOP/s on the attended pairs" _.Gflops
