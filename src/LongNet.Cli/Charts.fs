/// PNG charts drawn with ScottPlot: line charts with optional log-log axes, written atomically.
module LongNet.Cli.Charts

open System
open System.IO
open LongNet

/// One named series of (x, y) points.
type Series =
    {
        Name: string
        Points: (float * float) list
    }

let private decadeTicks (values: float seq) =
    let logs = values |> Seq.filter (fun v -> v > 0.0) |> Seq.map log10 |> Seq.toList

    match logs with
    | [] -> [||]
    | _ ->
        let lo, hi = floor (List.min logs), ceil (List.max logs)

        [|
            for e in lo..hi do
                let v = 10.0 ** e

                let label =
                    if v >= 1e6 then $"{v / 1e6:G3}M"
                    elif v >= 1e3 then $"{v / 1e3:G3}K"
                    else $"{v:G3}"

                yield e, label
        |]

let private powersOfTwoTicks (values: float seq) =
    values
    |> Seq.filter (fun v -> v > 0.0)
    |> Seq.distinct
    |> Seq.sort
    |> Seq.map (fun v ->
        let label =
            if v >= 1048576.0 && v % 1048576.0 = 0.0 then
                $"{v / 1048576.0:G4}M"
            elif v >= 1024.0 && v % 1024.0 = 0.0 then
                $"{v / 1024.0:G4}K"
            else
                $"{v:G4}"

        log10 v, label)
    |> Seq.toArray

/// Writes a line chart PNG (log-log when `logLog`; x ticks at the data's x values) to `path`, atomically.
let lineChart
    (path: string)
    (title: string)
    (xLabel: string)
    (yLabel: string)
    (logLog: bool)
    (series: Series list)
    : unit =
    use plot = new ScottPlot.Plot()
    let tx v = if logLog then log10 v else v

    for s in series do
        let points =
            s.Points |> List.filter (fun (x, y) -> not logLog || (x > 0.0 && y > 0.0))

        if not points.IsEmpty then
            let xs = points |> List.map (fst >> tx) |> Array.ofList
            let ys = points |> List.map (snd >> tx) |> Array.ofList
            let line = plot.Add.Scatter(xs, ys)
            line.LegendText <- s.Name
            line.LineWidth <- 2.0f
            line.MarkerSize <- 7.0f

    if logLog then
        let xs = series |> Seq.collect (fun s -> s.Points |> Seq.map fst)
        let ys = series |> Seq.collect (fun s -> s.Points |> Seq.map snd)
        let xt = ScottPlot.TickGenerators.NumericManual()

        for position, label in powersOfTwoTicks xs do
            xt.AddMajor(position, label)

        plot.Axes.Bottom.TickGenerator <- xt
        let yt = ScottPlot.TickGenerators.NumericManual()

        for position, label in decadeTicks ys do
            yt.AddMajor(position, label)

        plot.Axes.Left.TickGenerator <- yt

    plot.Title title
    plot.XLabel(if logLog then xLabel + " (log scale)" else xLabel)
    plot.YLabel(if logLog then yLabel + " (log scale)" else yLabel)
    plot.ShowLegend() |> ignore
    AtomicFile.ensureFolderOf path
    AtomicFile.writeVia path (fun temp -> plot.SavePng(temp, 900, 600) |> ignore)
