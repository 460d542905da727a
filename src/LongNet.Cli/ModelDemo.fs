/// `longnet demo`: the main job — `LongNet.Experiments.Demo` with a console display.
module LongNet.Cli.ModelDemo

open System
open System.IO
open Spectre.Console
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Errors
open LongNet.Experiments

/// Usage text.
let help =
    """longnet demo [--out DIR] [--minutes M] [--corpus PATH] [--seed S] [--from-scratch | --base CKPT] [--long N] [--windows N]
longnet demo --make-base PATH [--steps N] [--run-dir DIR] [--corpus PATH] [--seed S]

The main job: a LongNet language model (dilated attention, groups (1024,1) (2048,2) (4096,4) (8192,8),
8 heads, a logarithmic distance bias for positions, training length 8192) trained for a few minutes on the .NET SDK's own reference documentation
(whole files in order; a third of the files held out, chosen by name), then measured as the LongNet paper measures context use:
perplexity of the same held-out targets given 256 … 7936 tokens of context, loss by position, one
forward over 1,048,576 held-out tokens (seconds, peak memory); plus the KV cache against the full
forward and samples. Writes report.json, report.md, samples.txt, loss.png, context.png, position.png,
logs and checkpoint.ckpt.

  --out DIR        the report folder (default: ./longnet-demo, or longnet-demo-2, -3 … if it exists)
  --minutes M      training time budget in minutes (default 5); the step count is fitted to it
  --corpus PATH    a text file or folder instead of builtin:dotnet-docs
  --seed S         seed (default 1)
  --from-scratch   start from freshly initialised weights
  --base CKPT      start from this checkpoint's weights and tokenizer (default: the base checkpoint
                   shipped in LongNet.Experiments, written to DIR/base.ckpt; see docs/model.md)
  --make-base PATH train the base checkpoint instead: the demo's model from scratch for --steps steps
                   (default 1500; seeded, no time budget), its weights saved in bfloat16 to PATH; the
                   full run (logs, resumable checkpoint) in --run-dir (default PATH.run)
  --long N         tokens of the long forward (default 1048576; 0 skips it)
  --windows N      held-out windows per context length (default 32)

Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [
        "--out"
        "--minutes"
        "--corpus"
        "--seed"
        "--base"
        "--long"
        "--windows"
        "--make-base"
        "--steps"
        "--run-dir"
    ]

/// The default report folder: ./longnet-demo, or the first free longnet-demo-N.
let private freeFolder () =
    let baseName = Path.GetFullPath "longnet-demo"

    let taken (dir: string) =
        Directory.Exists dir
        && not (Seq.isEmpty (Directory.EnumerateFileSystemEntries dir))

    if not (taken baseName) then
        baseName
    else
        Seq.initInfinite (fun i -> $"{baseName}-{i + 2}") |> Seq.find (taken >> not)

/// A section heading on the console.
let heading (text: string) =
    if AnsiConsole.Profile.Capabilities.Interactive then
        AnsiConsole.Write(Rule($"[bold]{Markup.Escape text}[/]").LeftJustified())
    else
        printfn "\n== %s" text

/// The console hooks of the experiments: headings, lines and the training progress display.
let consoleHooks: Demo.Hooks =
    {
        Heading = heading
        Log = fun line -> Console.WriteLine line
        Train = TrainProgress.run
    }

/// `longnet demo --make-base PATH`: trains and writes the demo's base checkpoint.
let private makeBase (p: Args.Parsed) : int =
    let path = Path.GetFullPath(Args.required p "--make-base")

    for option in [ "--out"; "--minutes"; "--base"; "--long"; "--windows" ] do
        if (Args.optional p option).IsSome then
            raise (Args.UsageError $"{option} does not go with --make-base.")

    if Args.has p "--from-scratch" then
        raise (Args.UsageError "--from-scratch does not go with --make-base (the base is always trained from scratch).")

    let steps = Args.intOption p "--steps" 1L 10_000_000L 1500L |> int
    let seed = Args.intOption p "--seed" 0L Int64.MaxValue 1L

    let runDir =
        Args.optional p "--run-dir"
        |> Option.defaultValue (path + ".run")
        |> Path.GetFullPath

    heading $"Training the demo's base checkpoint: {steps} steps, seed {seed}"

    let header =
        Demo.makeBase
            {
                Path = path
                Steps = steps
                Corpus = Args.optional p "--corpus" |> Option.defaultValue Corpus.referenceDocsName
                Config = Demo.baseConfig steps seed
                RunDir = runDir
            }
            consoleHooks
        |> orFail

    printfn
        "wrote %s: %d steps, %s tokens, %.0f s of training (run folder %s)"
        path
        header.Step
        (header.TokensSeen.ToString("N0"))
        header.ElapsedSeconds
        runDir

    0

/// Runs `longnet demo`.
let run (argv: string list) : int =
    Errors.guard "demo" (fun () ->
        let p = Args.parse valueOptions [ "--help"; "--from-scratch" ] argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        elif (Args.optional p "--make-base").IsSome then
            makeBase p
        else
            if (Args.optional p "--steps").IsSome || (Args.optional p "--run-dir").IsSome then
                raise (Args.UsageError "--steps and --run-dir go with --make-base.")

            let minutes =
                Args.optional p "--minutes"
                |> Option.map (Args.toFloat "--minutes" true)
                |> Option.defaultValue 5.0

            let seed = Args.intOption p "--seed" 0L Int64.MaxValue 1L

            let longTokens =
                Args.intOption p "--long" 0L (int64 Int32.MaxValue - 1L) 1_048_576L |> int

            let windows = Args.intOption p "--windows" 1L 100_000L 32L |> int

            let start =
                match Args.has p "--from-scratch", Args.optional p "--base" with
                | true, Some _ -> raise (Args.UsageError "--from-scratch and --base exclude each other.")
                | true, None -> Demo.FromScratch
                | false, Some path when not (File.Exists path) ->
                    raise (Args.UsageError $"--base: checkpoint '{path}' does not exist.")
                | false, Some path -> Demo.FromCheckpoint(Path.GetFullPath path)
                | false, None -> Demo.FromScratch // replaced below by the shipped base, when there is one

            let outDir =
                match Args.optional p "--out" with
                | Some dir when
                    Directory.Exists dir
                    && not (Seq.isEmpty (Directory.EnumerateFileSystemEntries dir))
                    ->
                    fail $"'{dir}' exists and is not empty; choose a new --out (nothing was changed)."
                | Some dir -> Path.GetFullPath dir
                | None -> freeFolder ()

            let start =
                match start with
                | Demo.FromScratch when not (Args.has p "--from-scratch") ->
                    let shipped = Path.Combine(outDir, "base.ckpt")

                    if Demo.extractBase shipped then
                        Demo.FromCheckpoint shipped
                    else
                        eprintfn "note: this build ships no base checkpoint; the demo starts from scratch."
                        Demo.FromScratch
                | s -> s

            let settings: Demo.Settings =
                {
                    OutDir = outDir
                    Minutes = minutes
                    Corpus = Args.optional p "--corpus" |> Option.defaultValue Corpus.referenceDocsName
                    Config =
                        match start with
                        | Demo.FromScratch -> Demo.scratchConfig (max 10 (int (minutes * 60.0))) seed
                        | Demo.FromCheckpoint _ -> Demo.continueConfig seed
                    Start = start
                    Contexts = Demo.defaultContexts
                    Targets = ContextUse.defaultTargets
                    Windows = windows
                    LongTokens = longTokens
                    CachePositions = 1000
                }

            heading "LongNet demo: a Transformer whose attention is dilated attention, measured on long context"
            let report = Demo.run settings consoleHooks |> orFail

            printfn
                "\nwrote %s (report.md, report.json, context.png, position.png, …) in %.1f minutes"
                outDir
                (report.SecondsTotal / 60.0)

            0)
