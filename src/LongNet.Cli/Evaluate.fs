/// `longnet eval`: perplexity of a checkpoint on a corpus at several sequence lengths, as a table, a
/// JSON file and a PNG plot.
module LongNet.Cli.Evaluate

open System
open System.IO
open System.Text.Json.Nodes
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Errors

/// Usage text.
let help =
    """longnet eval --checkpoint PATH --corpus PATH --lengths 512,2048,8192 [--json PATH] [--max-tokens N] [--split validation|all]

Perplexity of a trained model at several sequence lengths (also longer than it was trained on).

  --checkpoint PATH  a checkpoint written by `longnet train` (DIR/checkpoint.ckpt)
  --corpus PATH      a UTF-8 text file or folder
  --lengths LIST     comma-separated window lengths in tokens
  --json PATH        also write the results as JSON, and a plot next to it (same name, .png)
  --max-tokens N     tokens predicted per length, in consecutive windows (default 16384; ≥ 1 window)
  --split S          'validation' (default): the held-out part, split as in training; 'all': every token

Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [ "--checkpoint"; "--corpus"; "--lengths"; "--json"; "--max-tokens"; "--split" ]

/// Prints a results table.
let printTable (trainLength: int) (results: PerplexityResult list) =
    printfn "%8s  %6s  %8s  %10s  %10s  %7s" "length" "×train" "tokens" "nll/token" "perplexity" "seconds"

    for r in results do
        printfn
            "%8d  %6.1f  %8d  %10.4f  %10.3f  %7.1f"
            r.Length
            (float r.Length / float trainLength)
            r.Tokens
            r.MeanNll
            r.Perplexity
            r.Seconds

/// Writes results as JSON and a perplexity plot (PNG) beside it.
let writeResults (jsonPath: string) (checkpoint: string) (trainLength: int) (results: PerplexityResult list) =
    let json =
        LongNet.Training.Evaluate.toJson
            [
                "checkpoint", JsonValue.Create(Path.GetFullPath checkpoint) :> JsonNode
                "trainLength", JsonValue.Create trainLength
            ]
            results

    Loading.writeText jsonPath (JsonFields.write json)

    let png = Path.ChangeExtension(jsonPath, ".png")

    let drawn =
        Plots.attempt png (fun path ->
            Plots.perplexity
                path
                trainLength
                (results |> List.map _.Length |> Array.ofList)
                (results |> List.map _.Perplexity |> Array.ofList))

    if drawn then Some png else None

/// Runs `longnet eval`.
let run (argv: string list) : int =
    Errors.guard "eval" (fun () ->
        let p = Args.parse valueOptions [ "--help" ] argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let checkpoint = Args.required p "--checkpoint"
            let corpusPath = Args.required p "--corpus"

            let lengths =
                Args.required p "--lengths"
                |> Args.toIntList "--lengths" 1L (int64 Int32.MaxValue - 1L)
                |> List.map int

            let maxTokens =
                Args.optional p "--max-tokens"
                |> Option.map (Args.toInt "--max-tokens" 1L (int64 Int32.MaxValue) >> int)
                |> Option.defaultValue 16384

            let split =
                match Args.optional p "--split" |> Option.defaultValue "validation" with
                | "validation"
                | "all" as s -> s
                | other -> raise (Args.UsageError $"--split must be 'validation' or 'all', got '{other}'.")

            let json = Args.optional p "--json"
            let model, tokenizer, header = Loading.loadModel checkpoint
            use model = model
            let corpus = Loading.loadCorpus tokenizer corpusPath

            let tokens =
                if split = "all" then
                    Array.append corpus.Train corpus.Validation
                else
                    corpus.Validation

            printfn
                "evaluating %s (trained on %d-token sequences) on %s tokens of %s"
                checkpoint
                header.Train.SeqLen
                (tokens.Length.ToString("N0"))
                corpus.Description

            let results =
                LongNet.Training.Evaluate.perplexities model tokens lengths maxTokens |> orFail

            printTable header.Train.SeqLen results

            match json with
            | Some path ->
                match writeResults path checkpoint header.Train.SeqLen results with
                | Some png -> printfn "wrote %s and %s" path png
                | None -> printfn "wrote %s" path
            | None -> ()

            0)
