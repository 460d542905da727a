// Pictures of dilated attention's sparsity: which (query, key) pairs each group attends, per head,
// the mixture of all groups, and how many (group, head) slots cover each position.
// Pure index math (`LongNet.Plan`), no tensors; drawn with ScottPlot.
// Run after one build:  dotnet build -c Release src/LongNet && dotnet fsi examples/sparsity-patterns.fsx [OUT_DIR]
// Without OUT_DIR the PNGs go to a fresh temporary folder (the docs' pictures: OUT_DIR = docs/images).
#r "nuget: ScottPlot, 5.1.59"
#r "nuget: SkiaSharp.NativeAssets.Linux.NoDependencies, 3.119.4"
#r "../src/LongNet/bin/Release/net10.0/LongNet.dll"

open System
open System.IO
open LongNet

let outDir =
    match fsi.CommandLineArgs |> Array.tail with
    | [| dir |] -> dir
    | _ -> Path.Combine(Path.GetTempPath(), $"longnet-patterns-{Guid.NewGuid():N}")

Directory.CreateDirectory outDir |> ignore

// A small sequence so every pair is visible: N = 32, 4 heads, the paper's geometric groups.
let n, heads = 32, 4
let causal = true
let config = DilatedConfig.createOrRaise [ 8; 16; 32 ] [ 1; 2; 4 ] Paper causal None

/// Whether head `head` of group `g` attends from query `i` to key `j`.
let attends (g: Group) (head: int) (i: int) (j: int) =
    i / g.SegmentLength = j / g.SegmentLength
    && Plan.covers config heads g head (int64 i)
    && Plan.covers config heads g head (int64 j)
    && (not causal || j <= i)

let headColours =
    [|
        ScottPlot.Colors.Blue
        ScottPlot.Colors.OrangeRed
        ScottPlot.Colors.Green
        ScottPlot.Colors.Purple
    |]

/// Draws the attended pairs of `groups` (a square per pair, one colour per head) into `file`.
let drawPattern (file: string) (title: string) (groups: Group list) =
    use plot = new ScottPlot.Plot()

    for head in 0 .. heads - 1 do
        let pairs =
            [|
                for i in 0 .. n - 1 do
                    for j in 0 .. n - 1 do
                        if groups |> List.exists (fun g -> attends g head i j) then
                            yield float j, float i
            |]

        if pairs.Length > 0 then
            // Heads are drawn with a small shift each, so pairs shared by several heads stay visible.
            let shift = 0.18 * float head - 0.27
            let xs = pairs |> Array.map (fun (x, _) -> x + shift)
            let ys = pairs |> Array.map (fun (_, y) -> y + shift)

            let markers =
                plot.Add.Markers(xs, ys, ScottPlot.MarkerShape.FilledSquare, 4.0f, headColours.[head])

            markers.LegendText <- $"head {head}"

    plot.Axes.InvertY() // query 0 at the top, as in an attention matrix
    plot.Axes.SetLimits(-1.0, float n, float n, -1.0)
    plot.Title title
    plot.XLabel "key position j"
    plot.YLabel "query position i"
    plot.ShowLegend(ScottPlot.Edge.Right) |> ignore
    let path = Path.Combine(outDir, file)
    plot.SavePng(path, 760, 640) |> ignore
    printfn "wrote %s" path

for g in config.Groups do
    drawPattern
        $"pattern-w{g.SegmentLength}-r{g.DilationRate}.png"
        $"Group w = {g.SegmentLength}, r = {g.DilationRate} (N = {n}, causal)"
        [ g ]

drawPattern "pattern-mixture.png" $"Mixture of all groups (N = {n}, causal)" config.Groups

// Coverage: for each position and head, how many groups keep that position as a query (and key).
let coverage =
    Array.init heads (fun head ->
        Array.init n (fun p ->
            config.Groups
            |> List.filter (fun g -> Plan.covers config heads g head (int64 p))
            |> List.length))

do
    use plot = new ScottPlot.Plot()
    // One row per head, one column per position; the colour and the number give the count.
    let grid = Array2D.init heads n (fun head p -> float coverage.[head].[p])
    let heatmap = plot.Add.Heatmap grid
    heatmap.Colormap <- ScottPlot.Colormaps.Viridis()
    plot.Add.ColorBar heatmap |> ignore

    for head in 0 .. heads - 1 do
        for p in 0 .. n - 1 do
            let label = plot.Add.Text(string coverage.[head].[p], float p, float head)
            label.LabelFontColor <- ScottPlot.Colors.White
            label.LabelAlignment <- ScottPlot.Alignment.MiddleCenter

    let headTicks = ScottPlot.TickGenerators.NumericManual()

    for head in 0 .. heads - 1 do
        headTicks.AddMajor(float head, $"head {head}")

    plot.Axes.Left.TickGenerator <- headTicks
    plot.Axes.InvertY()
    plot.Title $"Groups covering each (head, position) (N = {n}; w = 8, 16, 32; r = 1, 2, 4)"
    plot.XLabel "position"
    plot.YLabel "head"
    let path = Path.Combine(outDir, "coverage.png")
    plot.SavePng(path, 900, 300) |> ignore
    printfn "wrote %s" path

// Checks that make the pictures trustworthy: the r = 1 group covers every position, and the number of
// attended pairs drawn equals the plan's count.
if coverage |> Array.exists (Array.exists (fun c -> c < 1)) then
    failwith "a position is uncovered although the r = 1 group covers all"

let drawnPairs =
    config.Groups
    |> List.sumBy (fun g ->
        [
            for head in 0 .. heads - 1 do
                for i in 0 .. n - 1 do
                    for j in 0 .. n - 1 do
                        if attends g head i j then
                            yield 1L
        ]
        |> List.sum)

let plannedPairs = config.Groups |> List.sumBy (Plan.groupPairs config heads n)

if drawnPairs <> plannedPairs then
    failwith $"drawn pairs {drawnPairs} <> planned pairs {plannedPairs}"

printfn "attended (query, key) pairs: %d over %d heads (dense causal: %d)" drawnPairs heads (heads * n * (n + 1) / 2)
