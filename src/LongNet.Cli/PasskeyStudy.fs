/// `longnet passkey-study`: the end-to-end CASM experiment in one seeded command. For each attention
/// kind it trains a tiny byte-level model on generated passkey samples at a short length T with plain
/// RoPE, fine-tunes a copy with CRD NTK, and measures passkey accuracy at T·factor for plain RoPE, PI,
/// NTK and YaRN (on the base weights, s = length / T) and CRD NTK (on the fine-tuned weights, dynamic
/// NTK at inference). Writes results.json, results.md and one heatmap per row to the output folder.
module LongNet.Cli.PasskeyStudy

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Args
open LongNet.Cli.Errors
open LongNet.Experiments

/// Usage text.
let help =
    """longnet passkey-study --out DIR [--train-length 256] [--factors 1,2,4,8,16] [--depths 0,0.25,0.5,0.75,1]
              [--trials 4] [--steps 3000] [--sparse-steps 1000] [--sparse-length 2T] [--crd-steps 1000]
              [--attentions dense,dilated,select-merge,select-merge-trainable] [--seed 1] [--batch 8]
              [--embed 64] [--layers 2] [--heads 4] [--learning-rate 0.003] [--block-size 16] [--top-k 4]
              [--local-blocks 1]

The CASM passkey experiment, reproducible from its seed: for each attention kind, train a tiny byte-level
model (smeared keys) on generated passkey samples of --train-length tokens (plain RoPE, --steps steps),
fine-tune a copy with CRD NTK (--crd-steps steps, scales 1 … the largest factor), then evaluate passkey
retrieval at train-length × each factor, for plain RoPE, PI, NTK and YaRN on the base model (s = length / T)
and CRD NTK on the fine-tuned one (same learning rate, its own warm-up).

Select-merge models continue the dense base model for --sparse-steps steps on samples of --sparse-length
tokens (default twice the train length, so selection has more blocks to choose from) with their own attention (blocks
of --block-size, --top-k, --local-blocks, a sink block and renumbered positions): select-merge with the
paper's correlation selection, select-merge-trainable with the trainable one. Dilated uses the geometric
groups (T/4·2^i, min(2^i, heads)) until one segment spans the longest prompt and its answer (so --factors
changes the dilated model).

Writes DIR/results.json, DIR/results.md, DIR/heatmap-<attention>-<scaling>.png and the training runs
under DIR/runs/. Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [
        "--out"
        "--train-length"
        "--factors"
        "--depths"
        "--trials"
        "--steps"
        "--crd-steps"
        "--sparse-steps"
        "--sparse-length"
        "--attentions"
        "--seed"
        "--batch"
        "--embed"
        "--layers"
        "--heads"
        "--learning-rate"
        "--block-size"
        "--top-k"
        "--local-blocks"
    ]

/// The scalings compared, in table order: (name, whether it runs on the CRD-fine-tuned weights).
let scalings =
    [ "none", false; "pi", false; "ntk", false; "yarn", false; "crd-ntk", true ]

/// The model of the study for one attention kind, trained at `trainLength` tokens; the dilated model's
/// groups (T/4·2^i, 2^i) grow until one segment holds `longest` positions (the longest prompt with its
/// answer), so the model depends on the evaluated lengths.
let modelFor
    (attention: string)
    (trainLength: int)
    (longest: int)
    (embed: int)
    (layers: int)
    (heads: int)
    (blockSize: int)
    (topK: int)
    (localBlocks: int)
    : ModelConfig =
    // (T/4·2^i, min(2^i, heads)) until the segment spans the longest prompt: a rate ≤ heads lets the
    // per-head offsets cover every position of every segment
    let groups =
        List.unfold
            (fun (w, r) ->
                if w / 2 >= max trainLength longest then
                    None
                else
                    Some((w, min r heads), (2 * w, 2 * r)))
            (max 1 (trainLength / 4), 1)

    { ModelConfig.defaults with
        EmbedDim = embed
        Layers = layers
        Heads = heads
        FeedForwardDim = 2 * embed
        // smeared keys let one layer match "the token after the one I saw": retrieval then forms in a few
        // thousand steps (dense, 256 tokens: 100 % at 3,000 steps with them, 42 % without)
        SmearedKeys = true
        // a 1,048,576-token prompt and its answer
        MaxPositions = 1 <<< 21
        Groups = Groups.ofPairsOrRaise groups
        Attention =
            match attention with
            | "dilated" -> AttentionKind.Dilated
            | "dense" -> AttentionKind.Dense
            | "select-merge"
            | "select-merge-trainable" ->
                AttentionKind.SelectMerge
                    {
                        BlockSize = blockSize
                        TopK = topK
                        MergeFactor = 1
                        Sink = true
                        RenumberPositions = true
                        LocalBlocks = localBlocks
                        Selection =
                            if attention = "select-merge" then
                                Casm.BlockSelection.Correlation
                            else
                                Casm.BlockSelection.Trainable
                    }
            | other ->
                raise (
                    UsageError
                        $"--attentions takes dense, dilated, select-merge and select-merge-trainable, got '{other}'."
                )
    }

/// Trains one run in `outDir` (deleting whatever the folder held first), starting from the weights of
/// the checkpoint `init` if given, and returns the path of its checkpoint.
let private trainRun (outDir: string) (config: RunConfig) (init: string option) : string =
    let checkpoint = TrainLoop.checkpointPath outDir

    if Directory.Exists outDir then
        Directory.Delete(outDir, true)

    let tokenizer = RunConfig.tokenizer config |> orFail
    use session = TrainSession.Create(config, tokenizer) |> orFail

    init
    |> Option.iter (fun path -> Checkpoint.withTensors path session.LoadWeights |> orFail |> orFail)

    Loading.writeConfig outDir session.Config
    printfn "training %s: %s, %d steps" outDir (ModelOptions.describe session.Config.Model) config.Train.Steps

    let corpus = Passkey.corpus tokenizer config.Train.SeqLen

    let outcome =
        TrainProgress.run
            session
            corpus
            {
                OutDir = outDir
                TimeBudget = None
                FitStepsToBudget = false
            }

    if outcome.Interrupted then
        fail "interrupted."

    match List.tryLast outcome.Validation with
    | Some(_, v) -> printfn "  validation loss %.4f, checkpoint %s" v checkpoint
    | None -> ()

    checkpoint

/// One row of the study: an attention kind with a scaling, and its cells.
type Row =
    {
        /// dense, dilated or select-merge.
        Attention: string
        /// none, pi, ntk, yarn or crd-ntk.
        Scaling: string
        /// The grid: lengths × depths.
        Cells: PasskeyCell list
        /// What happened out of the ordinary while the row was evaluated (a retry), if anything.
        Note: string option
    }

let private accuracy (cells: PasskeyCell list) =
    float (cells |> List.sumBy _.Correct) / float (cells |> List.sumBy _.Trials)

/// The markdown table: one row per (attention, scaling), one column per length (accuracy over depths).
let markdown (trainLength: int) (lengths: int list) (rows: Row list) : string =
    let b = StringBuilder()

    let header =
        lengths
        |> List.map (fun l -> $"{l} ({l / trainLength}×)")
        |> String.concat " | "

    b.AppendLine($"| attention | scaling | {header} |") |> ignore

    b.AppendLine("|---|---|" + String.replicate lengths.Length "---:|") |> ignore

    for r in rows do
        let cells =
            lengths
            |> List.map (fun l -> $"{100.0 * accuracy (r.Cells |> List.filter (fun c -> c.Length = l)):F0}%%")
            |> String.concat " | "

        b.AppendLine($"| {r.Attention} | {r.Scaling} | {cells} |") |> ignore

    for r in rows do
        r.Note
        |> Option.iter (fun note -> b.AppendLine($"\n{r.Attention} / {r.Scaling}: {note}") |> ignore)

    b.ToString()

let private json (settings: JsonObject) (rows: Row list) =
    let array = JsonArray()

    for r in rows do
        let o = JsonObject()
        o["attention"] <- JsonValue.Create r.Attention
        o["scaling"] <- JsonValue.Create r.Scaling
        let cells = JsonArray()

        for c in r.Cells do
            let x = JsonObject()
            x["length"] <- JsonValue.Create c.Length
            x["depth"] <- JsonValue.Create c.Depth
            x["correct"] <- JsonValue.Create c.Correct
            x["trials"] <- JsonValue.Create c.Trials
            cells.Add x

        o["cells"] <- cells
        r.Note |> Option.iter (fun note -> o["note"] <- JsonValue.Create note)
        array.Add o

    let root = JsonObject()
    root["settings"] <- settings
    root["rows"] <- array
    JsonFields.write root

/// Runs `longnet passkey-study`.
let run (argv: string list) : int =
    Errors.guard "passkey-study" (fun () ->
        let p = parse valueOptions [ "--help" ] argv

        if has p "--help" then
            printfn "%s" help
            0
        else
            let out = required p "--out"
            let trainLength = intOption p "--train-length" 32L 65_536L 256L |> int

            let factors =
                optional p "--factors"
                |> Option.map (toIntList "--factors" 1L 1024L)
                |> Option.defaultValue [ 1L; 2L; 4L; 8L; 16L ]
                |> List.map int

            let depths =
                optional p "--depths"
                |> Option.map Passkey.parseDepths
                |> Option.defaultValue [ 0.0; 0.25; 0.5; 0.75; 1.0 ]

            let trials = intOption p "--trials" 1L 10_000L 4L |> int
            let steps = intOption p "--steps" 1L 1_000_000L 3000L |> int
            let crdSteps = intOption p "--crd-steps" 1L 1_000_000L 1000L |> int
            let sparseSteps = intOption p "--sparse-steps" 1L 1_000_000L 1000L |> int

            let sparseLength =
                intOption p "--sparse-length" 32L 65_536L (2L * int64 trainLength) |> int

            let seed = intOption p "--seed" 0L (int64 Int32.MaxValue) 1L |> int
            let batch = intOption p "--batch" 1L 4096L 8L |> int
            let embed = intOption p "--embed" 2L 4096L 64L |> int
            let layers = intOption p "--layers" 1L 64L 2L |> int
            let heads = intOption p "--heads" 1L 64L 4L |> int
            let blockSize = intOption p "--block-size" 1L 65_536L 16L |> int
            let topK = intOption p "--top-k" 0L 65_536L 4L |> int
            let localBlocks = intOption p "--local-blocks" 0L 65_536L 1L |> int

            let learningRate =
                optional p "--learning-rate"
                |> Option.map (toFloat "--learning-rate" true)
                |> Option.defaultValue 3e-3

            if learningRate >= 1.0 then
                raise (UsageError $"--learning-rate must be in (0, 1), got {learningRate}.")

            let attentions =
                (optional p "--attentions"
                 |> Option.defaultValue "dense,dilated,select-merge,select-merge-trainable")
                    .Split(',', StringSplitOptions.TrimEntries)
                |> List.ofArray

            // the longest prompt and the answer generated after it
            let longest = List.max factors * trainLength + PasskeyEvaluation.generatedTokens

            for a in attentions do
                modelFor a trainLength longest embed layers heads blockSize topK localBlocks
                |> ignore

            Native.ensureLoaded () |> ignore
            let tokenizer = Tokenizer.byteLevel ()
            let minimum = Passkey.minimumSampleLength tokenizer

            if trainLength < minimum then
                raise (UsageError $"--train-length must be ≥ {minimum} (a passkey sample's frame), got {trainLength}.")

            if sparseLength < minimum then
                raise (
                    UsageError $"--sparse-length must be ≥ {minimum} (a passkey sample's frame), got {sparseLength}."
                )

            let lengths = factors |> List.map (fun f -> f * trainLength)
            let largest = float (List.max factors)
            let watch = Diagnostics.Stopwatch.StartNew()

            let train =
                { RunConfig.tiny.Train with
                    Task = PasskeySamples
                    Steps = steps
                    BatchSize = batch
                    SeqLen = trainLength
                    LearningRate = learningRate
                    WarmupSteps = min 100 (max 0 (steps - 1))
                    LogEvery = 50
                    CheckpointEvery = 0
                    EvalTokens = 4096
                    Seed = int64 seed
                }

            // the dense base model, trained once: a row of its own and the start of every select-merge model
            let denseBase =
                lazy
                    (trainRun
                        (Path.Combine(out, "runs", "dense-base"))
                        {
                            Model = modelFor "dense" trainLength longest embed layers heads blockSize topK localBlocks
                            Train = train
                            Tokenizer = ByteTokens
                        }
                        None)

            let rows =
                [
                    for attention in attentions do
                        let model =
                            modelFor attention trainLength longest embed layers heads blockSize topK localBlocks

                        let baseRun =
                            {
                                Model = model
                                Train = train
                                Tokenizer = ByteTokens
                            }

                        let baseCheckpoint =
                            if attention = "dense" then
                                denseBase.Force()
                            elif attention.StartsWith "select-merge" then
                                // sparse attention continues a dense model's training, as the CASM paper
                                // fine-tunes pretrained models: the retrieval circuit forms under dense
                                // attention, then the block selection learns to keep it fed
                                trainRun
                                    (Path.Combine(out, "runs", $"{attention}-base"))
                                    { baseRun with
                                        Train =
                                            { train with
                                                Steps = sparseSteps
                                                SeqLen = sparseLength
                                                WarmupSteps = min 100 (max 0 (sparseSteps - 1))
                                            }
                                    }
                                    (Some(denseBase.Force()))
                            else
                                trainRun (Path.Combine(out, "runs", $"{attention}-base")) baseRun None

                        let crdModel =
                            { model with
                                PositionScaling =
                                    CrdNtk
                                        {
                                            MinScale = 1.0
                                            MaxScale = max 1.0 largest
                                            CycleSteps = max 1 (crdSteps / 2)
                                            TrainedLength = trainLength
                                            MinLength = minimum
                                        }
                            }

                        let crdRun =
                            { baseRun with
                                Model = crdModel
                                Train =
                                    { train with
                                        Steps = crdSteps
                                        WarmupSteps = min 100 (max 0 (crdSteps - 1))
                                    }
                            }

                        let crdCheckpoint =
                            trainRun (Path.Combine(out, "runs", $"{attention}-crd")) crdRun (Some baseCheckpoint)

                        for scaling, fineTuned in scalings do
                            // each row reads its weights from the checkpoint, so no tensor lives across rows
                            let evaluate () =
                                Checkpoint.withTensors
                                    (if fineTuned then crdCheckpoint else baseCheckpoint)
                                    (fun weights ->
                                        Passkey.evaluateScaled
                                            model
                                            weights
                                            scaling
                                            trainLength
                                            tokenizer
                                            lengths
                                            depths
                                            trials
                                            seed)
                                |> orFail

                            // A libtorch failure in a long run (the temporary-Scalar race fixed in TensorOps
                            // once ended a study after 20 minutes) would otherwise lose every row: the row is
                            // evaluated again, from the same seed, and the retry is recorded in the results.
                            let cells, note =
                                try
                                    evaluate (), None
                                with :? System.Runtime.InteropServices.ExternalException as e ->
                                    let message = firstLine e
                                    eprintfn "warning: %s %s: %O; evaluating the row again" attention scaling e

                                    evaluate (),
                                    Some $"evaluated twice: the first attempt failed in libtorch ({message})"

                            let row =
                                {
                                    Attention = attention
                                    Scaling = scaling
                                    Cells = cells
                                    Note = note
                                }

                            printfn
                                "%-12s %-8s %s   (%.0f s)"
                                attention
                                scaling
                                (lengths
                                 |> List.map (fun l ->
                                     $"{100.0 * accuracy (cells |> List.filter (fun c -> c.Length = l)), 4:F0}%%")
                                 |> String.concat " ")
                                watch.Elapsed.TotalSeconds

                            yield row
                ]

            let settings = JsonObject()
            settings["command"] <- JsonValue.Create("longnet passkey-study " + String.Join(" ", argv))
            settings["trainLength"] <- JsonValue.Create trainLength

            settings["lengths"] <-
                JsonArray(lengths |> List.map (fun l -> JsonValue.Create l :> JsonNode) |> Array.ofList)

            settings["trials"] <- JsonValue.Create trials
            settings["steps"] <- JsonValue.Create steps
            settings["crdSteps"] <- JsonValue.Create crdSteps
            settings["sparseSteps"] <- JsonValue.Create sparseSteps
            settings["sparseLength"] <- JsonValue.Create sparseLength
            settings["seed"] <- JsonValue.Create seed
            settings["learningRate"] <- JsonValue.Create learningRate
            settings["seconds"] <- JsonValue.Create(Math.Round(watch.Elapsed.TotalSeconds, 1))
            settings["processors"] <- JsonValue.Create Environment.ProcessorCount
            Directory.CreateDirectory out |> ignore
            Loading.writeText (Path.Combine(out, "results.json")) (json settings rows)
            let table = markdown trainLength lengths rows
            Loading.writeText (Path.Combine(out, "results.md")) table
            printfn "\n%s" table

            for r in rows do
                let path = Path.Combine(out, $"heatmap-{r.Attention}-{r.Scaling}.png")

                Plots.attempt path (fun file ->
                    Passkey.heatmapTitled
                        $"Passkey accuracy, {r.Attention} attention, {r.Scaling} (rows: depth, columns: length)"
                        file
                        lengths
                        depths
                        r.Cells)
                |> ignore

            printfn "wrote %s (%.0f s)" out watch.Elapsed.TotalSeconds
            0)
