/// The picture of `longnet bench --dist`: communication per rank of sequence-parallel dilated attention
/// against the rank count, next to the undilated and all-gather baselines (ScottPlot, PNG).
module LongNet.Cli.DistributedPlot

open ScottPlot
open LongNet
open LongNet.Distributed

let private mib (bytes: float) = bytes / 1048576.0

/// Writes a PNG (`width`×`height` pixels) of per-rank MiB against P (log₂ axis) for the rows of
/// `CommunicationVolume.communicationTable`; `title` heads the plot.
let write (path: string) (title: string) (width: int) (height: int) (rows: CommunicationVolume.CommunicationRow list) =
    use plot = new Plot()
    // P on a log₂ axis, labelled with P itself.
    let xs = rows |> List.map (fun r -> log (float r.Ranks) / log 2.0) |> List.toArray

    let line (label: string) (color: Color) (pattern: LinePattern) (ys: float[]) =
        let s = plot.Add.Scatter(xs, ys)
        s.LegendText <- label
        s.Color <- color
        s.LineWidth <- 2.0f
        s.MarkerSize <- 7.0f
        s.LinePattern <- pattern

    line
        "all-gather of full K, V (dense sequence parallel)"
        Colors.Gray
        LinePattern.Solid
        (rows |> List.map (fun r -> mib (float r.AllGatherBytes)) |> List.toArray)

    line
        "same segments without dilation (r = 1)"
        Colors.Orange
        LinePattern.Solid
        (rows |> List.map (fun r -> mib (float r.UndilatedBytes)) |> List.toArray)

    line
        "dilated (this library), max per rank, counted"
        Colors.Blue
        LinePattern.Solid
        (rows |> List.map (fun r -> mib (float r.MaxBytes)) |> List.toArray)

    line
        "bound: one segment's dilated K, V per group, both ways (2·h·Σ w/r)"
        Colors.Blue
        LinePattern.Dashed
        (rows |> List.map (fun r -> mib (float r.BoundBytes)) |> List.toArray)

    plot.Title title
    plot.XLabel "ranks P (log scale)"

    plot.Axes.Bottom.TickGenerator <-
        TickGenerators.NumericManual(xs, rows |> List.map (fun r -> string r.Ranks) |> List.toArray)

    plot.YLabel "MiB sent + received per rank (one forward pass)"
    plot.Axes.SetLimitsY(0.0, (rows |> List.map (fun r -> mib (float r.AllGatherBytes)) |> List.max) * 1.08)
    plot.ShowLegend(Alignment.UpperLeft) |> ignore
    AtomicFile.writeVia path (fun temp -> plot.SavePng(temp, width, height) |> ignore)
