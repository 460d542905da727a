/// `longnet demo`: the main job. Trains a small LongNet on a corpus every .NET SDK carries (the
/// reference assemblies' XML documentation; a bundled text otherwise) for a few minutes, shows
/// progress, reports perplexity at 1×, 4× and 16× the training length, checks that KV-cache decoding
/// equals the full forward, generates a sample, and writes a report folder (markdown, plots, logs,
/// checkpoint).
module LongNet.Cli.ModelDemo

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text
open System.Text.Json.Nodes
open Spectre.Console
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Errors

/// Usage text.
let help =
    """longnet demo [--out DIR] [--minutes M] [--corpus PATH] [--preset NAME] [--steps N] [--seed S]

Trains a small LongNet language model for a few minutes on the .NET SDK's own reference documentation
(found next to the running runtime; a bundled text if absent), then reports perplexity at 1×, 4× and
16× the training length, checks the KV cache against the full forward, generates a sample, and writes
a report folder: report.md, loss.png, perplexity.png, perplexity.json, sample.txt, train_log.csv,
validation_log.csv, config.json and checkpoint.ckpt.

  --out DIR      the report folder (default: ./longnet-demo, or longnet-demo-2, -3 … if it exists)
  --minutes M    training time budget in minutes (default 5); the step count is fitted to it
  --corpus PATH  train on this text file or folder instead of the default corpus
  --preset NAME  tiny, demo (default) or small
  --steps N      at most this many steps (default: the preset's)
  --seed S       seed (default 1)

Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [ "--out"; "--minutes"; "--corpus"; "--preset"; "--steps"; "--seed" ]

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

let private heading (text: string) =
    if AnsiConsole.Profile.Capabilities.Interactive then
        AnsiConsole.Write(Rule($"[bold]{Markup.Escape text}[/]").LeftJustified())
    else
        printfn "\n== %s" text

/// A prompt taken from the first held-out document: its first line (a member name in the default
/// corpus) and a newline, or its first 60 characters.
let private promptFrom (tokenizer: ITokenizer) (validation: int[]) =
    let firstDocument =
        match tokenizer.EndOfText with
        | Some eot ->
            match Array.tryFindIndex ((=) eot) validation with
            | Some i -> validation.[.. i - 1]
            | None -> validation
        | None -> validation
        |> Array.truncate 2000
        |> tokenizer.Decode

    match firstDocument.IndexOf '\n' with
    | i when i > 0 && i <= 80 -> firstDocument.Substring(0, i + 1)
    | _ -> firstDocument.Substring(0, min 60 firstDocument.Length)

let private markdownCode (text: string) =
    "```text\n" + text.Replace("```", "'''").TrimEnd() + "\n```"

/// Runs `longnet demo`.
let run (argv: string list) : int =
    Errors.guard "demo" (fun () ->
        let p = Args.parse valueOptions [ "--help" ] argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let total = Stopwatch.StartNew()

            let minutes =
                Args.optional p "--minutes"
                |> Option.map (Args.toFloat "--minutes" true)
                |> Option.defaultValue 5.0

            let preset =
                match RunConfig.preset (Args.optional p "--preset" |> Option.defaultValue "demo") with
                | Ok c -> c
                | Error e -> raise (Args.UsageError e)

            let steps =
                Args.optional p "--steps"
                |> Option.map (Args.toInt "--steps" 1L 10_000_000L >> int)

            let seed =
                Args.optional p "--seed" |> Option.map (Args.toInt "--seed" 0L Int64.MaxValue)

            let outDir =
                match Args.optional p "--out" with
                | Some dir when
                    Directory.Exists dir
                    && not (Seq.isEmpty (Directory.EnumerateFileSystemEntries dir))
                    ->
                    fail $"'{dir}' exists and is not empty; choose a new --out (nothing was changed)."
                | Some dir -> Path.GetFullPath dir
                | None -> freeFolder ()

            let config =
                { preset with
                    Train =
                        { preset.Train with
                            Steps = defaultArg steps preset.Train.Steps
                            Seed = defaultArg seed preset.Train.Seed
                            WarmupSteps =
                                min preset.Train.WarmupSteps (max 1 ((defaultArg steps preset.Train.Steps) / 5))
                        }
                }

            Native.ensureLoaded () |> ignore
            let tokenizer = Tokenizer.byteLevel ()

            heading "LongNet demo: a Transformer whose attention is dilated attention"

            printfn
                "machine: %d cores, %s, .NET %s, libtorch threads %d"
                Environment.ProcessorCount
                RuntimeInformation.OSDescription
                (string Environment.Version)
                (TorchSharp.torch.get_num_threads ())

            printfn "report folder: %s" outDir

            heading "1. corpus"

            let corpus =
                match Args.optional p "--corpus" with
                | Some path -> Loading.loadCorpus tokenizer path
                | None ->
                    let documents, description = Corpus.defaultDocuments 4_000_000L
                    Corpus.build tokenizer description documents |> orFail

            printfn
                "%s: %s documents, %s characters → %s training and %s validation tokens (%s)"
                corpus.Description
                (corpus.Documents.ToString("N0"))
                (corpus.Characters.ToString("N0"))
                (corpus.Train.Length.ToString("N0"))
                (corpus.Validation.Length.ToString("N0"))
                tokenizer.Name

            heading "2. training"
            use session = TrainSession.Create(config, tokenizer) |> orFail
            Directory.CreateDirectory outDir |> ignore
            Train.describe session corpus
            printfn "time budget: %.1f minutes (the step count is fitted to it after the first steps)" minutes

            let outcome =
                TrainLoop.run
                    session
                    corpus
                    {
                        OutDir = outDir
                        TimeBudget = Some(TimeSpan.FromMinutes minutes)
                        FitStepsToBudget = true
                    }

            // the configuration as run (the fitted step count included), for `longnet train --config`
            Loading.writeConfig outDir session.Config
            let reports = outcome.Reports
            let trainSeconds = reports |> List.sumBy _.StepSeconds
            let trainTokens = reports |> List.sumBy _.Tokens
            let tokensPerSecond = float trainTokens / trainSeconds

            let lastLoss =
                reports |> List.tryLast |> Option.map _.Loss |> Option.defaultValue nan

            let validationLoss = outcome.Validation |> List.tryLast |> Option.map snd

            printfn
                "trained %d steps, %s tokens in %.0f s: %.0f tokens/s; final training loss %.3f%s%s"
                session.Step
                (trainTokens.ToString("N0"))
                trainSeconds
                tokensPerSecond
                lastLoss
                (match validationLoss with
                 | Some v -> $", validation loss {v:F3}"
                 | None -> "")
                (if outcome.OutOfTime then " (stopped by the time budget)"
                 elif outcome.Interrupted then " (interrupted)"
                 else "")

            let log = TrainLoop.readLog (TrainLoop.logPath outDir)

            Plots.attempt (Path.Combine(outDir, "loss.png")) (fun path ->
                Plots.lossCurve
                    path
                    (log |> Array.map (fst >> float))
                    (log |> Array.map (fun (_, v) -> v.[0]))
                    (outcome.Validation |> List.map (fun (s, l) -> float s, l) |> Array.ofList))
            |> ignore

            heading "3. perplexity at longer sequences than trained"
            let seqLen = config.Train.SeqLen
            let largest = List.max config.Model.SegmentLengths
            let lengths = [ seqLen; 4 * seqLen; 16 * seqLen ]
            let evalTokens = max (16 * seqLen) 16384

            let usable = lengths |> List.filter (fun l -> l + 1 <= corpus.Validation.Length)

            if usable.Length < lengths.Length then
                printfn
                    "note: the validation text has %d tokens, too few for lengths %A"
                    corpus.Validation.Length
                    (lengths |> List.except usable)

            let results =
                LongNet.Training.Evaluate.perplexities session.Model corpus.Validation usable evalTokens
                |> orFail

            Evaluate.printTable seqLen results

            let lengthNote =
                if config.Model.SegmentLengths |> List.forall (fun w -> seqLen % w = 0) then
                    $"Every segment length divides the training length {seqLen}, and dilated attention is local to each group's segments: a window of 4× or 16× the training length is attended exactly as consecutive training-length windows, so the perplexity does not degrade with length (dense attention would meet distances it never saw in training)."
                else
                    $"The largest segment ({largest}) does not divide the training length {seqLen}: longer windows let segments reach across training-length boundaries, to distances not seen in training."

            printfn "%s" lengthNote
            let jsonPath = Path.Combine(outDir, "perplexity.json")

            if not results.IsEmpty then
                Evaluate.writeResults jsonPath (TrainLoop.checkpointPath outDir) seqLen results
                |> ignore

            heading "4. KV cache: incremental decoding = full forward"
            let prompt = promptFrom tokenizer corpus.Validation
            let promptIds = tokenizer.Encode prompt

            let sampleSettings =
                {
                    MaxNewTokens = max 600 (2 * largest + 100)
                    Sampling = Sampling.defaults
                    StopAtEndOfText = false
                }

            let sampled =
                LongNet.Training.Generate.tokens
                    session.Model
                    promptIds
                    sampleSettings
                    tokenizer.EndOfText
                    (Rng.Create config.Train.Seed)
                    ignore
                |> orFail

            let sequence = Array.append promptIds sampled

            let deviation =
                LongNet.Training.Generate.cacheDeviation session.Model sequence promptIds.Length

            printfn
                "decoded %d positions (%.1f× the largest segment %d) one token at a time: max |Δ logit| vs the full forward = %s"
                sequence.Length
                (float sequence.Length / float largest)
                largest
                (deviation.ToString("0.00e+00", Globalization.CultureInfo.InvariantCulture))

            heading "5. generation"

            let greedy =
                LongNet.Training.Generate.tokens
                    session.Model
                    promptIds
                    {
                        MaxNewTokens = 200
                        Sampling = Sampling.greedy
                        StopAtEndOfText = true
                    }
                    tokenizer.EndOfText
                    (Rng.Create config.Train.Seed)
                    ignore
                |> orFail
                |> tokenizer.Decode

            let sampledText = tokenizer.Decode sampled
            printfn "prompt: %s" (prompt.TrimEnd())
            printfn "--- greedy ---\n%s%s" prompt greedy
            printfn "--- sampled (temperature 0.8, top-k 40, top-p 0.95) ---\n%s%s" prompt sampledText

            Loading.writeText
                (Path.Combine(outDir, "sample.txt"))
                $"prompt:\n{prompt}\n\ngreedy:\n{prompt}{greedy}\n\nsampled (temperature 0.8, top-k 40, top-p 0.95, seed {config.Train.Seed}):\n{prompt}{sampledText}\n"

            heading "6. report"
            let m = config.Model

            let table =
                results
                |> List.map (fun r ->
                    $"| {r.Length} | {float r.Length / float seqLen:F0}× | {r.Tokens} | {r.MeanNll:F4} | {r.Perplexity:F3} |")
                |> String.concat "\n"

            let command =
                let args = if argv.IsEmpty then "" else " " + String.Join(" ", argv)
                $"dotnet run -c Release --project src/LongNet.Cli -- demo{args}"

            let now = DateTime.Now.ToString("yyyy-MM-dd HH:mm")

            let deviationText =
                deviation.ToString("0.00e+00", Globalization.CultureInfo.InvariantCulture)

            let validationText =
                match validationLoss with
                | Some v -> $", validation loss {v:F3} (perplexity {exp v:F2})"
                | None -> ""

            let groupsText =
                String.Join(" ", List.map2 (fun w r -> $"({w}, {r})") m.SegmentLengths m.DilationRates)

            let report =
                $"""# LongNet demo report

Generated {now} by `{command}` in {total.Elapsed.TotalMinutes:F1} minutes
on {Environment.ProcessorCount} CPU cores ({RuntimeInformation.OSDescription}, .NET {Environment.Version}).

## Corpus

{corpus.Description}: {corpus.Documents:N0} documents, {corpus.Characters:N0} characters →
{corpus.Train.Length:N0} training and {corpus.Validation.Length:N0} validation tokens ({tokenizer.Name}).
Every {Corpus.validationStride}th document is held out for validation.

## Model

A decoder-only Transformer whose attention is dilated attention: {m.Layers} pre-LN blocks, embedding
{m.EmbedDim}, {m.Heads} heads, {FeedForwardKind.name m.FeedForward} feed-forward {m.FeedForwardDim}, groups
(w, r) = {groupsText}, RoPE, tied embeddings —
{session.Model.ParameterCount:N0} parameters.

## Training

{session.Step} steps of {config.Train.BatchSize} × {seqLen} tokens ({trainTokens:N0} tokens) in {trainSeconds:F0} s:
**{tokensPerSecond:F0} tokens/s**. AdamW (β = {config.Train.Beta1}, {config.Train.Beta2}; weight decay {config.Train.WeightDecay}),
peak learning rate {config.Train.LearningRate} with {config.Train.WarmupSteps} warm-up steps and a cosine decay, gradient clipping at
{config.Train.GradClip}, {Precision.name config.Train.Precision}, seed {config.Train.Seed}. Final training loss {lastLoss:F3}{validationText}.

![training loss](loss.png)

## Perplexity at longer sequences than trained

Consecutive windows of the validation tokens; every length predicts the same tokens.
{lengthNote}

| length | × training length | tokens | nll / token | perplexity |
| --- | --- | --- | --- | --- |
{table}

![perplexity](perplexity.png)

## KV cache

Decoding {sequence.Length} positions ({float sequence.Length / float largest:F1}× the largest segment) one token at a time
with the cache gives logits within **{deviationText}** of the full forward at every position.

## Sample

Prompt (the start of the first held-out document):

{markdownCode prompt}

Greedy:

{markdownCode (prompt + greedy)}

Sampled (temperature 0.8, top-k 40, top-p 0.95):

{markdownCode (prompt + sampledText)}

## Files and next steps

`checkpoint.ckpt` (weights, optimizer, step, random state), `config.json`, `train_log.csv`,
`validation_log.csv`, `perplexity.json`, `sample.txt`. Continue or reuse the model:

```bash
longnet eval --checkpoint {TrainLoop.checkpointPath outDir} --corpus CORPUS --lengths {String.Join(",", lengths)}
longnet generate --checkpoint {TrainLoop.checkpointPath outDir} --prompt "..." --max-new-tokens 200
longnet train --corpus CORPUS --config {Path.Combine(outDir, "config.json")} --out NEW_DIR
```
"""

            Loading.writeText (Path.Combine(outDir, "report.md")) report

            let summary = JsonObject()
            summary.["steps"] <- JsonValue.Create session.Step
            summary.["tokensPerSecond"] <- JsonValue.Create tokensPerSecond
            summary.["trainSeconds"] <- JsonValue.Create trainSeconds
            summary.["finalTrainingLoss"] <- JsonValue.Create lastLoss
            summary.["kvCacheMaxDeviation"] <- JsonValue.Create deviation
            summary.["totalSeconds"] <- JsonValue.Create total.Elapsed.TotalSeconds

            let ppl = JsonObject()

            for r in results do
                ppl.[string r.Length] <- JsonValue.Create r.Perplexity

            summary.["perplexity"] <- ppl
            Loading.writeText (Path.Combine(outDir, "summary.json")) (JsonFields.write summary)

            printfn
                "wrote %s (report.md, loss.png, perplexity.png, …) in %.1f minutes"
                outDir
                total.Elapsed.TotalMinutes

            0)
