/// `longnet context-study`: `LongNet.Experiments.ContextStudy` with a console display.
module LongNet.Cli.ContextStudyCommand

open System
open System.IO
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Errors
open LongNet.Experiments

/// Usage text.
let help =
    """longnet context-study --out DIR [--minutes M] [--corpus PATH] [--seed S] [--windows N]
                      [--from-base | --base CKPT]

Seed 000's claim at this machine's scale: LongNet (the demo's model), a local-only model (one group:
segment 256, r = 1) and a dense Transformer, each trained with the same wall-clock budget on the same
data at training length 8192, then scored on the same held-out targets with 256 … 7936 tokens of
context. Writes DIR/results.json, results.md and context.png, and each run in DIR/<name>/.

  --out DIR        the results folder (must not hold files)
  --minutes M      training minutes per model (default 12)
  --corpus PATH    a text file or folder instead of builtin:dotnet-docs
  --seed S         seed (default 1)
  --windows N      held-out windows per context length (default 32)
  --from-base      every model starts from the demo's shipped base checkpoint (a LongNet trained for
                   1,500 steps) instead of from scratch, and trains on with the demo's recipe; each
                   keeps its own attention (the base was trained with LongNet's, which favours it)
  --base CKPT      the same from another checkpoint (its tokenizer and model shape)

Exit codes: 0 done, 2 bad command line, 1 failure."""

/// Runs `longnet context-study`.
let run (argv: string list) : int =
    Errors.guard "context-study" (fun () ->
        let p =
            Args.parse
                [ "--out"; "--minutes"; "--corpus"; "--seed"; "--windows"; "--base" ]
                [ "--help"; "--from-base" ]
                argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let outDir = Args.required p "--out"

            if
                Directory.Exists outDir
                && not (Seq.isEmpty (Directory.EnumerateFileSystemEntries outDir))
            then
                fail $"'{outDir}' exists and is not empty; choose a new --out (nothing was changed)."

            let minutes =
                Args.optional p "--minutes"
                |> Option.map (Args.toFloat "--minutes" true)
                |> Option.defaultValue 12.0

            let seed = Args.intOption p "--seed" 0L Int64.MaxValue 1L
            let windows = Args.intOption p "--windows" 1L 100_000L 32L |> int

            let start =
                match Args.has p "--from-base", Args.optional p "--base" with
                | true, Some _ -> raise (Args.UsageError "--from-base and --base exclude each other.")
                | false, Some path when not (File.Exists path) ->
                    raise (Args.UsageError $"--base: checkpoint '{path}' does not exist.")
                | false, Some path -> Demo.FromCheckpoint(Path.GetFullPath path)
                | true, None ->
                    let shipped = Path.Combine(Path.GetFullPath outDir, "base.ckpt")

                    if Demo.extractBase shipped then
                        Demo.FromCheckpoint shipped
                    else
                        fail "--from-base: this build ships no base checkpoint; give one with --base CKPT."
                | false, None -> Demo.FromScratch

            let settings: ContextStudy.Settings =
                {
                    OutDir = outDir
                    MinutesPerModel = minutes
                    Corpus = Args.optional p "--corpus" |> Option.defaultValue Corpus.referenceDocsName
                    Contexts = Demo.defaultContexts
                    Targets = ContextUse.defaultTargets
                    Windows = windows
                    Start = start
                }

            // the demo's recipe, the same for every contender: from scratch a curriculum over the first 40 %
            // of the steps the budget is expected to buy; from a checkpoint, training on at its final rate
            let config =
                match start with
                | Demo.FromScratch -> Demo.scratchConfig (max 10 (int (minutes * 60.0))) seed
                | Demo.FromCheckpoint _ -> Demo.continueConfig seed

            ModelDemo.heading "Context study: LongNet, local-only and dense attention at the same budget"
            let rows = ContextStudy.run settings config ModelDemo.consoleHooks |> orFail

            printfn
                "\nwrote %s (results.json, results.md, context.png) — %d models"
                (Path.GetFullPath outDir)
                rows.Length

            0)
