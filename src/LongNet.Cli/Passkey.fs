/// `longnet passkey`: passkey retrieval of a checkpoint over a grid of prompt lengths × depths;
/// prints an accuracy table, and optionally writes JSON and a heatmap (PNG).
module LongNet.Cli.Passkey

open System
open System.IO
open System.Text.Json.Nodes
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Args
open LongNet.Cli.Errors
open LongNet.Experiments

/// Usage text.
let help =
    """longnet passkey --checkpoint PATH --lengths 1024,4096 [--depths 0,0.25,0.5,0.75,1] [--trials N] [--seed S]
                [--scaling NAME] [--attention KIND [--block-size B] [--top-k K] …] [--json PATH] [--heatmap PATH]

Passkey retrieval: for every prompt length and depth, N prompts of filler text with a random 5-digit
pass key hidden at that depth, ending "What is the pass key? The pass key is"; the model continues
greedily and a trial counts when the generated digits equal the pass key exactly.

  --checkpoint PATH   a checkpoint written by `longnet train`
  --lengths L,…       prompt lengths in tokens
  --depths D,…        depths in [0, 1] of the pass key (default 0,0.25,0.5,0.75,1)
  --trials N          prompts per cell (default 5)
  --seed S            seed of the pass keys (default 1)
  --scaling NAME      evaluate with this RoPE scaling instead of the checkpoint's, at s = max(1, length/T):
                      none, pi, ntk, yarn, dynamic-ntk, crd-ntk (= dynamic NTK, CRD's inference rule)
  --trained-length T  T for --scaling (default: the checkpoint's training sequence length)
  --attention KIND    evaluate the checkpoint's weights with this attention instead of its own: dilated,
                      dense or select-merge (e.g. select-and-merge on a model trained with dense attention)
  --block-size B      select-merge: rows per block (default: the checkpoint's, else 64)
  --top-k K           select-merge: key blocks kept per query block besides its own (default: the checkpoint's, else 4)
  --merge-factor M    select-merge: adjacent query blocks sharing one selection (default 1)
  --local-blocks L    select-merge: blocks right before each query block it always keeps (default: the checkpoint's)
  --selection RULE    select-merge: correlation or trainable (default: the checkpoint's)
  --no-sink           select-merge: do not always keep block 0
  --original-positions  select-merge: rotate at original positions (default: renumbered after selection)
  --json PATH         also write the results as JSON
  --heatmap PATH      also draw the accuracy grid as a PNG heatmap

Exit codes: 0 done, 2 bad command line, 1 failure."""

let private valueOptions =
    [
        "--checkpoint"
        "--lengths"
        "--depths"
        "--trials"
        "--seed"
        "--json"
        "--heatmap"
        "--scaling"
        "--trained-length"
        "--attention"
        "--block-size"
        "--top-k"
        "--merge-factor"
        "--local-blocks"
        "--selection"
    ]

/// Parses a comma-separated list of depths, each in [0, 1].
let parseDepths (text: string) : float list =
    text.Split(',', StringSplitOptions.TrimEntries)
    |> Array.map (fun d ->
        let v = Args.toFloat "--depths" false d

        if v < 0.0 || v > 1.0 then
            raise (Args.UsageError $"--depths must be numbers in [0, 1], got '{d}'.")

        v)
    |> List.ofArray

let private writeJson (path: string) (checkpoint: string) (cells: PasskeyCell list) =
    let array = JsonArray()

    for c in cells do
        let o = JsonObject()
        o["length"] <- JsonValue.Create c.Length
        o["depth"] <- JsonValue.Create c.Depth
        o["correct"] <- JsonValue.Create c.Correct
        o["trials"] <- JsonValue.Create c.Trials
        o["accuracy"] <- JsonValue.Create(float c.Correct / float c.Trials)
        array.Add o

    let root = JsonObject()
    root["checkpoint"] <- JsonValue.Create checkpoint
    root["cells"] <- array
    Loading.writeText path (root.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))

/// Draws an accuracy grid (rows: depth, columns: length) as a PNG heatmap titled `title`.
let heatmapTitled (title: string) (path: string) (lengths: int list) (depths: float list) (cells: PasskeyCell list) =
    let grid =
        Array2D.init depths.Length lengths.Length (fun i j ->
            let c = cells |> List.find (fun c -> c.Depth = depths.[i] && c.Length = lengths.[j])

            float c.Correct / float c.Trials)

    use plot = new ScottPlot.Plot()
    let map = plot.Add.Heatmap(grid)
    // a fixed scale: 0 % and 100 % keep their colours whatever the grid holds
    map.ManualRange <- System.Nullable(ScottPlot.Range(0.0, 1.0))
    plot.Add.ColorBar(map) |> ignore
    // the heatmap draws row 0 at the top; cell (i, j) is centred on (j, rows − 1 − i)
    let rows = depths.Length

    for i in 0 .. rows - 1 do
        for j in 0 .. lengths.Length - 1 do
            let label =
                plot.Add.Text($"{100.0 * grid.[i, j]:F0}%%", float j, float (rows - 1 - i))

            label.LabelAlignment <- ScottPlot.Alignment.MiddleCenter

            label.LabelFontColor <-
                if grid.[i, j] > 0.5 then
                    ScottPlot.Colors.Black
                else
                    ScottPlot.Colors.White

    plot.Axes.Bottom.SetTicks(Array.init lengths.Length float, lengths |> List.map (fun l -> $"{l}") |> Array.ofList)

    plot.Axes.Left.SetTicks(
        Array.init rows (fun i -> float (rows - 1 - i)),
        depths
        |> List.map (fun d -> d.ToString(Globalization.CultureInfo.InvariantCulture))
        |> Array.ofList
    )

    plot.Axes.Bottom.Label.Text <- "prompt length (tokens)"
    plot.Axes.Left.Label.Text <- "depth"
    plot.Title title
    plot.SavePng(path, 900, 540) |> ignore

let private heatmap (path: string) (lengths: int list) (depths: float list) (cells: PasskeyCell list) =
    heatmapTitled "Passkey retrieval accuracy (rows: depth, columns: length)" path lengths depths cells

/// The scaling `name` (none, pi, ntk, yarn, dynamic-ntk, crd-ntk) for prompts of `length` tokens on a
/// model trained at `trained` tokens: s = max(1, length / trained) for the static methods; crd-ntk
/// evaluates as dynamic NTK (its inference rule).
let scalingFor (name: string) (trained: int) (length: int) : ScalingMethod =
    let s = max 1.0 (float length / float trained)

    match name with
    | "none" -> PlainRope
    | "pi" -> Interpolation s
    | "ntk" -> NtkAware s
    | "yarn" ->
        Yarn
            {
                Scale = s
                TrainedLength = trained
                Alpha = 1.0
                Beta = 32.0
            }
    | "dynamic-ntk"
    | "crd-ntk" -> DynamicNtk trained
    | other -> raise (Args.UsageError $"--scaling must be none, pi, ntk, yarn, dynamic-ntk or crd-ntk, got '{other}'.")

/// Passkey accuracy of `model` over lengths × depths, `trials` prompts per cell with pass keys drawn from
/// `rng` (shared across calls so that lengths evaluated one call at a time score the same prompts as one
/// call over all of them); bad sizes and generation errors end the command with their message.
let evaluateFrom
    (model: LongNetModel)
    (tokenizer: ITokenizer)
    (lengths: int list)
    (depths: float list)
    (trials: int)
    (rng: Random)
    : PasskeyCell list =
    try
        PasskeyEvaluation.evaluateFrom model tokenizer lengths depths trials rng ignore
        |> orFail
    with :? ArgumentException as e ->
        fail (firstLine e)

/// Passkey cells of a model of `config` with `weights` and the scaling `name` at s = max(1, length /
/// trained) for each length (one scaled model per length), pass keys from `Random(seed)` in the same
/// order as `evaluateFrom` with `Random(seed)`, so `--scaling none` scores the same prompts as the checkpoint's own scaling.
let evaluateScaled
    (config: ModelConfig)
    (weights: Map<string, TorchSharp.torch.Tensor>)
    (name: string)
    (trained: int)
    (tokenizer: ITokenizer)
    (lengths: int list)
    (depths: float list)
    (trials: int)
    (seed: int)
    : PasskeyCell list =
    let rng = Random(seed)

    [
        for length in lengths do
            let config =
                { config with
                    PositionScaling = scalingFor name trained length
                }

            use scaled = new LongNetModel(config)
            Checkpoint.loadWeights scaled weights |> orFail
            yield! evaluateFrom scaled tokenizer [ length ] depths trials rng
    ]

/// Runs `longnet passkey`.
let run (argv: string list) : int =
    Errors.guard "passkey" (fun () ->
        let p =
            Args.parse valueOptions [ "--help"; "--no-sink"; "--original-positions" ] argv

        if Args.has p "--help" then
            printfn "%s" help
            0
        else
            let checkpoint = Args.required p "--checkpoint"

            let lengths =
                Args.required p "--lengths"
                |> Args.toIntList "--lengths" 1L (int64 Int32.MaxValue)
                |> List.map int

            let depths =
                Args.optional p "--depths"
                |> Option.map parseDepths
                |> Option.defaultValue PasskeyEvaluation.defaultDepths

            let trials =
                Args.optional p "--trials"
                |> Option.map (Args.toInt "--trials" 1L 1_000_000L >> int)
                |> Option.defaultValue 5

            let seed =
                Args.optional p "--seed"
                |> Option.map (Args.toInt "--seed" 0L (int64 Int32.MaxValue) >> int)
                |> Option.defaultValue 1

            if
                (Args.optional p "--trained-length").IsSome
                && (Args.optional p "--scaling").IsNone
            then
                raise (Args.UsageError "--trained-length applies only with --scaling (T of the scaling).")

            let model, tokenizer, header = Loading.loadModel checkpoint
            use model = model

            let trained =
                intOption p "--trained-length" 1L 1_073_741_824L (int64 header.Train.SeqLen)
                |> int

            let config =
                match ModelOptions.attentionOf p model.Config with
                | kind when kind = model.Config.Attention -> model.Config
                | kind ->
                    match ModelConfig.validate { model.Config with Attention = kind } with
                    | Ok c -> c
                    | Error e -> raise (Args.UsageError $"--attention: {e.Message}")

            // the longest prompt with its answer must fit the model's positions and this machine's memory
            match ContextUse.checkForwardFits model (List.max lengths + PasskeyEvaluation.generatedTokens) with
            | Error e ->
                raise (Args.UsageError $"--lengths: a prompt of {List.max lengths} tokens and its answer: {e}")
            | Ok() -> ()

            let cells =
                match Args.optional p "--scaling" with
                | None when config = model.Config -> evaluateFrom model tokenizer lengths depths trials (Random seed)
                | None ->
                    // the same weights under another attention kind
                    printfn
                        "evaluating with %s (trained with %s)"
                        (ModelOptions.describe config)
                        (ModelOptions.describe model.Config)

                    use swapped = new LongNetModel(config)

                    Checkpoint.loadWeights swapped (Checkpoint.weights model |> Map.ofList)
                    |> orFail

                    evaluateFrom swapped tokenizer lengths depths trials (Random seed)
                | Some name ->
                    // each length with the scaling at s = max(1, length / trained length), on the same weights
                    let weights = Checkpoint.weights model |> Map.ofList
                    evaluateScaled config weights name trained tokenizer lengths depths trials seed

            printfn "%s" (PasskeyEvaluation.table lengths depths cells)

            Args.optional p "--json"
            |> Option.iter (fun path -> writeJson path checkpoint cells)

            Args.optional p "--heatmap"
            |> Option.iter (fun path -> Plots.attempt path (fun file -> heatmap file lengths depths cells) |> ignore)

            0)
