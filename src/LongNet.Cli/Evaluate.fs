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
open LongNet.Experiments

/// Usage text.
let help =
    """longnet eval --checkpoint PATH --corpus PATH [--lengths 512,2048,8192] [--context 256,1024,4096 [--targets 256] [--windows 32]] [--by-position [--window N]] [--long N] [--json PATH] [--max-tokens N] [--split validation|all]

Perplexity of a trained model on held-out text: at several window lengths (also longer than trained),
given more and more context before the same targets (does the model use long context?), by position in
the window, and over one very long window.

  --checkpoint PATH  a checkpoint written by `longnet train` (DIR/checkpoint.ckpt)
  --corpus PATH      a UTF-8 text file or folder, or builtin:dotnet-docs (the .NET reference
                     documentation as whole files, a third held out by name: the long-context corpus)
  --lengths LIST     comma-separated window lengths in tokens: perplexity of consecutive windows
  --context LIST     comma-separated, ascending context lengths: the last --targets tokens of each of
                     --windows held-out windows scored with each many tokens before them
  --targets N        targets scored per window with --context (default 256)
  --windows N        windows with --context and --by-position (default 32)
  --by-position      mean loss by position bucket (0–255, 256–1023, 1024–4095, …) in windows of
                     --window tokens (default: the training length)
  --window N         the window length of --by-position
  --long N           one forward over the first N held-out tokens (no gradient, layer by layer; up to
                     1,048,576 and beyond where memory allows): perplexity, seconds, peak memory
  --json PATH        also write the results as JSON, and plots next to it (same name, .png, -context.png,
                     -position.png)
  --max-tokens N     tokens predicted per --lengths entry, in consecutive windows (default 16384)
  --split S          'validation' (default): the held-out part, split as in training; 'all': every token

Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [
        "--checkpoint"
        "--corpus"
        "--lengths"
        "--context"
        "--targets"
        "--windows"
        "--window"
        "--long"
        "--json"
        "--max-tokens"
        "--split"
    ]

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

/// Prints perplexity against context.
let printContext (results: ContextPerplexity list) =
    printfn "%8s  %8s  %8s  %10s  %10s  %7s" "context" "windows" "targets" "nll/token" "perplexity" "seconds"

    for r in results do
        printfn "%8d  %8d  %8d  %10.4f  %10.3f  %7.1f" r.Context r.Windows r.Targets r.MeanNll r.Perplexity r.Seconds

/// Prints the loss by position bucket.
let printPositions (results: PositionLoss list) =
    printfn "%16s  %10s  %10s" "positions" "targets" "nll/token"

    for r in results do
        printfn "%16s  %10d  %10.4f" $"{r.From}–{r.To}" r.Targets r.MeanNll

/// Prints one long forward.
let printLong (r: LongForward) =
    let peak =
        match r.PeakMb with
        | Some mb -> $"{mb:F0} MB"
        | None -> "not measured"

    printfn
        "one forward over %s tokens: perplexity %.3f (nll %.4f) in %.1f s, peak resident memory %s"
        (r.Tokens.ToString("N0"))
        r.Perplexity
        r.MeanNll
        r.Seconds
        peak

/// Everything one `eval` run measured.
type Measured =
    {
        /// Perplexity per window length.
        Lengths: PerplexityResult list
        /// Perplexity per context length.
        Context: ContextPerplexity list
        /// Loss per position bucket.
        Positions: PositionLoss list
        /// The long forward, if asked for.
        Long: LongForward option
    }

/// Writes results as JSON and plots (PNG) beside it; returns the files written.
let writeResults (jsonPath: string) (checkpoint: string) (trainLength: int) (m: Measured) : string list =
    let json =
        LongNet.Training.Evaluate.toJson
            [
                "checkpoint", JsonValue.Create(Path.GetFullPath checkpoint) :> JsonNode
                "trainLength", JsonValue.Create trainLength
            ]
            m.Lengths

    if not m.Context.IsEmpty then
        json.["context"] <- ContextUse.contextJson m.Context

    if not m.Positions.IsEmpty then
        json.["position_loss"] <- ContextUse.positionJson m.Positions

    m.Long
    |> Option.iter (fun r -> json.["long_eval"] <- ContextUse.longForwardJson r)

    Loading.writeText jsonPath (JsonFields.write json)

    let beside (suffix: string) =
        Path.Combine(
            Path.GetDirectoryName(Path.GetFullPath jsonPath),
            Path.GetFileNameWithoutExtension jsonPath + suffix
        )

    let plots =
        [
            if not m.Lengths.IsEmpty then
                let png = beside ".png"

                if
                    Plots.attempt png (fun path ->
                        Plots.perplexity
                            path
                            trainLength
                            (m.Lengths |> List.map _.Length |> Array.ofList)
                            (m.Lengths |> List.map _.Perplexity |> Array.ofList))
                then
                    png
            if not m.Context.IsEmpty then
                let png = beside "-context.png"

                if
                    Plots.attempt png (fun path ->
                        Plots.contextCurve
                            path
                            "Perplexity of the same targets given more context"
                            [
                                "model", m.Context |> List.map (fun r -> r.Context, r.Perplexity) |> Array.ofList
                            ])
                then
                    png
            if not m.Positions.IsEmpty then
                let png = beside "-position.png"

                if
                    Plots.attempt png (fun path ->
                        Plots.positionLoss
                            path
                            (m.Positions |> List.map (fun r -> r.From, r.To, r.MeanNll) |> Array.ofList))
                then
                    png
        ]

    jsonPath :: plots

/// Runs `longnet eval`.
let run (argv: string list) : int =
    Errors.guard "eval" (fun () ->
        let p = Args.parse valueOptions [ "--help"; "--by-position" ] argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let checkpoint = Args.required p "--checkpoint"
            let corpusPath = Args.required p "--corpus"

            let lengths =
                Args.optional p "--lengths"
                |> Option.map (Args.toIntList "--lengths" 1L (int64 Int32.MaxValue - 1L) >> List.map int)
                |> Option.defaultValue []

            let contexts =
                Args.optional p "--context"
                |> Option.map (Args.toIntList "--context" 1L (int64 Int32.MaxValue - 1L) >> List.map int)

            let targets =
                Args.intOption p "--targets" 1L 1_000_000L (int64 ContextUse.defaultTargets)
                |> int

            let windows = Args.intOption p "--windows" 1L 100_000L 32L |> int
            let byPosition = Args.has p "--by-position"

            let window =
                Args.optional p "--window"
                |> Option.map (Args.toInt "--window" 1L (int64 Int32.MaxValue - 1L) >> int)

            let long =
                Args.optional p "--long"
                |> Option.map (Args.toInt "--long" 1L (int64 Int32.MaxValue - 1L) >> int)

            if window.IsSome && not byPosition then
                raise (Args.UsageError "--window goes with --by-position.")

            if lengths.IsEmpty && contexts.IsNone && not byPosition && long.IsNone then
                raise (Args.UsageError "give at least one of --lengths, --context, --by-position or --long.")

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

            // requests that cannot be met by this text or model are command-line errors, checked before any work
            contexts
            |> Option.iter (fun c ->
                match ContextUse.validateContexts c targets model.Config.MaxPositions tokens.Length with
                | Ok() -> ()
                | Error e -> raise (Args.UsageError $"--context: {e}"))

            let positionWindow = defaultArg window header.Train.SeqLen

            if byPosition && positionWindow + 1 > tokens.Length then
                raise (
                    Args.UsageError
                        $"--window: windows of {positionWindow} tokens need {positionWindow + 1}; the text has {tokens.Length}."
                )

            long
            |> Option.iter (fun n ->
                match ContextUse.checkLongForward model tokens.Length n with
                | Ok() -> ()
                | Error e -> raise (Args.UsageError $"--long: {e}"))

            printfn
                "evaluating %s (trained on %d-token sequences) on %s tokens of %s"
                checkpoint
                header.Train.SeqLen
                (tokens.Length.ToString("N0"))
                corpus.Description

            let lengthResults =
                if lengths.IsEmpty then
                    []
                else
                    let r =
                        LongNet.Training.Evaluate.perplexities model tokens lengths maxTokens |> orFail

                    printTable header.Train.SeqLen r
                    r

            let contextResults =
                match contexts with
                | None -> []
                | Some c ->
                    let r = ContextUse.perplexityByContext model tokens c targets windows |> orFail
                    printContext r
                    r

            let positionResults =
                if byPosition then
                    let r =
                        ContextUse.lossByPosition
                            model
                            tokens
                            positionWindow
                            (ContextUse.defaultBuckets positionWindow)
                            windows
                        |> orFail

                    printPositions r
                    r
                else
                    []

            let longResult =
                long
                |> Option.map (fun n ->
                    let r = ContextUse.longForward model tokens n |> orFail
                    printLong r
                    r)

            match json with
            | Some path ->
                let written =
                    writeResults
                        path
                        checkpoint
                        header.Train.SeqLen
                        {
                            Lengths = lengthResults
                            Context = contextResults
                            Positions = positionResults
                            Long = longResult
                        }

                printfn "wrote %s" (String.Join(", ", written))
            | None -> ()

            0)
