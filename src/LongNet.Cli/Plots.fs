/// PNG plots of training and evaluation (ScottPlot): the loss curve and perplexity against length.
module LongNet.Cli.Plots

open System
open ScottPlot
open LongNet

/// Plots the training loss per step (and the validation loss where measured) to a PNG file.
let lossCurve (path: string) (steps: float[]) (loss: float[]) (validation: (float * float)[]) : unit =
    let plot = new Plot()
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
    let plot = new Plot()
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
