/// `longnet plan`: the pure index math of a configuration — coverage, attended pairs, FLOPs, memory
/// and the attention graph's diameter — with no tensors.
module LongNet.Cli.PlanCommand

open LongNet
open LongNet.Cli.Args

/// The command's help text.
let help =
    """longnet plan --segments W1,W2,... --rates R1,R2,... --n N --heads H
             [--head-dim D] [--causal] [--offsets paper|blocks] [--no-diameter]

Prints, for sequence length N and H heads: per group the segments, covered (head, position) pairs
and attended (query, key) pairs; totals, pairs per token, forward FLOPs (sparse and dense), a memory
estimate, the uncovered share, and the diameter of the attention graph (BFS; '∞' when disconnected)."""

/// Runs `longnet plan` and returns the exit code.
let run (argv: string list) : int =
    let p =
        parse [ "segments"; "rates"; "offsets"; "scale"; "n"; "heads"; "head-dim" ] [ "causal"; "no-diameter" ] argv

    let config = Attend.configOf p
    let n = required p "n" |> toInt "n" 1L 1_000_000_000L |> int
    let heads = required p "heads" |> toInt "heads" 1L 4096L |> int

    let headDim =
        optional p "head-dim"
        |> Option.map (toInt "head-dim" 1L 65536L >> int)
        |> Option.defaultValue 64

    let summary = Plan.summarise config n heads headDim (not (has p "no-diameter"))
    printfn "%s" (Plan.format summary)

    if summary.UncoveredPairs > 0L then
        eprintfn
            "warning: %.2f%% of (head, position) pairs are covered by no group; their outputs are 0."
            (100.0 * summary.UncoveredShare)

    0
