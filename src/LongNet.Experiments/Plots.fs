/// PNG plots of training and evaluation (ScottPlot): the loss curve and perplexity against length.
module LongNet.Experiments.Plots

open System
open ScottPlot
open LongNet

/// Plots the training loss per step (and the validation loss where measured) to a PNG file.
let lossCurve (path: string) (steps: float[]) (loss: float[]) (validation: (float * float)[]) : unit =
    use plot = new Plot()
    let train = plot.Add.ScatterLine(steps, loss)
    train.LegendText <- "training loss"

    if validation.Length > 0 then
        let v = plot.Add.Scatter(Array.map fst validation, Array.map snd validation)
        v.LegendText <- "validation loss"

    plot.Title "LongNet training"
    plot.XLabel "step"
    plot.YLabel "loss (nats per token)"
    plot.ShowLegend(Alignment.UpperRight) |> ignore
    plot.SavePng(path, 900, 540) |> ignore

/// Plots perplexity against evaluation length (log₂ axis), marking the training length.
let perplexity (path: string) (trainLength: int) (lengths: int[]) (perplexities: float[]) : unit =
    use plot = new Plot()
    let xs = lengths |> Array.map (fun l -> Math.Log2(float l))
    let line = plot.Add.Scatter(xs, perplexities)
    line.LegendText <- "validation perplexity"
    let mark = plot.Add.VerticalLine(Math.Log2(float trainLength))
    mark.LegendText <- $"training length {trainLength}"
    mark.LinePattern <- LinePattern.Dashed
    plot.Axes.Bottom.SetTicks(xs, lengths |> Array.map string)
    // from 1 (a perfect model) to well above the largest value, so equal values look equal
    plot.Axes.SetLimitsY(1.0, 1.25 * Array.max perplexities)
    plot.Axes.SetLimitsX(xs.[0] - 0.5, xs.[xs.Length - 1] + 0.5)
    plot.Title "Perplexity at longer sequences than trained"
    plot.XLabel "sequence length (tokens, log scale)"
    plot.YLabel "perplexity"
    plot.ShowLegend(Alignment.UpperRight) |> ignore
    plot.SavePng(path, 900, 540) |> ignore

/// Plots perplexity of the same targets against the context before them (log₂ axis), one line per
/// named series.
let contextCurve (path: string) (title: string) (series: (string * (int * float)[]) list) : unit =
    use plot = new Plot()

    let contexts =
        series
        |> List.collect (snd >> Array.map fst >> List.ofArray)
        |> List.distinct
        |> List.sort

    for name, points in series do
        let line =
            plot.Add.Scatter(points |> Array.map (fst >> float >> Math.Log2), points |> Array.map snd)

        line.LegendText <- name

    let xs = contexts |> List.map (float >> Math.Log2) |> Array.ofList
    plot.Axes.Bottom.SetTicks(xs, contexts |> List.map string |> Array.ofList)
    plot.Title title
    plot.XLabel "tokens of context before the scored targets (log scale)"
    plot.YLabel "perplexity of the same targets"
    plot.ShowLegend(Alignment.UpperRight) |> ignore
    plot.SavePng(path, 900, 540) |> ignore

/// Plots the mean loss of each position bucket (bars over [from, to], log₂ positions).
let positionLoss (path: string) (buckets: (int * int * float)[]) : unit =
    use plot = new Plot()

    let xs =
        buckets |> Array.map (fun (a, b, _) -> Math.Log2(float (a + b + 1) / 2.0 + 1.0))

    let ys = buckets |> Array.map (fun (_, _, nll) -> nll)
    let line = plot.Add.Scatter(xs, ys)
    line.LegendText <- "mean loss of the targets in the bucket"
    plot.Axes.Bottom.SetTicks(xs, buckets |> Array.map (fun (a, b, _) -> $"{a}–{b}"))
    plot.Title "Loss by position in the window"
    plot.XLabel "position of the target in the window (log scale)"
    plot.YLabel "loss (nats per token)"
    plot.ShowLegend(Alignment.UpperRight) |> ignore
    plot.SavePng(path, 900, 540) |> ignore

/// Draws a plot, turning a rendering failure (e.g. no native SkiaSharp library on this system) into a
/// warning on stderr: plots are a convenience and never fail a command. Returns whether it was drawn.
let attempt (path: string) (draw: string -> unit) : bool =
    try
        AtomicFile.ensureFolderOf path
        AtomicFile.writeVia path draw
        true
    with e ->
        let message = (if isNull e.InnerException then e else e.InnerException).Message
        eprintfn "warning: could not draw %s (%s); the other results are unaffected." path message
        false
