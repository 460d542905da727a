/// `longnet bench --model PRESET`: training tokens per second of a preset's model at several sequence
/// lengths (`LongNet.Training.Throughput`), as a table and JSON.
module LongNet.Cli.BenchTraining

open System
open TorchSharp
open LongNet
open LongNet.Training
open LongNet.Cli.Args

/// The options of this mode.
let valueOptions =
    [ "model"; "seq-len"; "tokens-per-step"; "steps"; "seed"; "json" ]

/// Runs the training-throughput mode on parsed options.
let run (p: Parsed) : int =
    let name = required p "model"

    let config =
        match RunConfig.preset name with
        | Ok c -> c
        | Error e -> raise (UsageError $"--model: {e}")

    let seqLens =
        optional p "seq-len"
        |> Option.map (toIntList "seq-len" 2L 16_777_216L >> List.map int)
        |> Option.defaultValue [ 256; 1024; 4096; 16384 ]

    let tokensPerStep =
        intOption p "tokens-per-step" 1L 16_777_216L (int64 (config.Train.BatchSize * config.Train.SeqLen))
        |> int

    let steps = intOption p "steps" 1L 1000L 3L |> int
    let seed = intOption p "seed" 0L (int64 Int32.MaxValue) 1L |> int
    Native.ensureLoaded () |> ignore

    printfn
        "training throughput of preset '%s': %d tokens per step, median of %d steps after one warm-up, %d torch threads"
        name
        tokensPerStep
        steps
        (torch.get_num_threads ())

    let cells, parameters =
        Throughput.measure config seqLens tokensPerStep steps seed (fun c ->
            printfn "  seq_len %6d: %8.0f tokens/s (%.3f s/step)" c.SeqLen c.TokensPerSecond c.SecondsPerStep)
        |> Errors.orFail

    let result: Throughput.ThroughputResult =
        {
            Machine = Benchmarking.machine torch.CPU
            Model = name
            Parameters = parameters
            Cells = cells
        }

    printfn "\n%s" (Throughput.toTable result)

    optional p "json"
    |> Option.iter (fun path ->
        AtomicFile.ensureFolderOf path
        AtomicFile.writeText path (Throughput.toJson result)
        printfn "wrote %s" path)

    0
