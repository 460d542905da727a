/// Command-line options that choose a model's attention kind and RoPE position scaling
/// (`longnet train`), and the help text that documents them.
module LongNet.Cli.ModelOptions

open LongNet.Modules
open LongNet.Cli.Args

/// The options that take a value.
let valueOptions =
    [
        "--attention"
        "--block-size"
        "--top-k"
        "--merge-factor"
        "--local-blocks"
        "--selection"
        "--scaling"
        "--scale"
        "--trained-length"
        "--crd-max-scale"
        "--crd-cycle-steps"
        "--crd-min-length"
    ]

/// The options that choose a RoPE position scaling (training only).
let scalingOptions = valueOptions |> List.skipWhile (fun o -> o <> "--scaling")

/// The switches.
let switches = [ "--no-sink"; "--original-positions" ]

/// Help lines for these options.
let help =
    """  --attention KIND  dilated (default), dense, or select-merge (CASM)
  --block-size B    select-merge: rows per block (default 64)
  --top-k K         select-merge: key blocks kept per query block besides its own (default 4)
  --merge-factor M  select-merge: adjacent query blocks sharing one selection (default 1)
  --local-blocks L  select-merge: blocks right before each query block that it always keeps (default 0)
  --selection RULE  select-merge: correlation (the paper's, default) or trainable (the block scores
                    also weight the chosen blocks, so training shapes them)
  --no-sink         select-merge: do not always keep block 0
  --original-positions  select-merge: rotate at original positions (default: renumbered after selection)
  --scaling NAME    RoPE position scaling: none (default), pi, ntk, dynamic-ntk, yarn, crd-ntk
  --scale S         pi, ntk, yarn: the context extension factor s ≥ 1 (default 1)
  --trained-length T  dynamic-ntk, yarn, crd-ntk: the trained context length (default: the sequence length)
  --crd-max-scale S   crd-ntk: the largest NTK scale of the schedule (default 16)
  --crd-cycle-steps C crd-ntk: steps per cycle of the growing scale ceiling (default 200)
  --crd-min-length L  crd-ntk: the shortest randomly truncated sample (default: a quarter of T, and
                      for --task passkey at least the shortest passkey sample)"""

/// The options that only select-and-merge attention reads.
let private selectMergeOptions =
    [
        "--block-size"
        "--top-k"
        "--merge-factor"
        "--local-blocks"
        "--selection"
        "--no-sink"
        "--original-positions"
    ]

let private given (p: Parsed) (name: string) = has p name || (optional p name).IsSome

/// Raises UsageError naming the first of `names` given in `p`, which `reason` says does nothing.
let private refuse (p: Parsed) (names: string list) (reason: string) =
    match names |> List.tryFind (given p) with
    | Some name -> raise (UsageError $"{name} {reason}")
    | None -> ()

/// The attention kind `p` asks for (`--attention` and the select-merge options) on top of `model`'s:
/// without `--attention` a select-merge model keeps its kind with the given options changed. Raises
/// UsageError naming an unknown kind, an out-of-range value, or a select-merge option without it.
let attentionOf (p: Parsed) (model: ModelConfig) : AttentionKind =
    let current =
        match model.Attention with
        | AttentionKind.SelectMerge o -> o
        | _ -> ModelConfig.defaultSelectMerge

    let options =
        {
            BlockSize = intOption p "--block-size" 1L 1_000_000L (int64 current.BlockSize) |> int
            TopK = intOption p "--top-k" 0L 1_000_000L (int64 current.TopK) |> int
            MergeFactor = intOption p "--merge-factor" 1L 1_000_000L (int64 current.MergeFactor) |> int
            Sink = current.Sink && not (has p "--no-sink")
            RenumberPositions = current.RenumberPositions && not (has p "--original-positions")
            LocalBlocks = intOption p "--local-blocks" 0L 1_000_000L (int64 current.LocalBlocks) |> int
            Selection =
                match optional p "--selection" with
                | None -> current.Selection
                | Some text ->
                    match ModelConfig.tryParseSelection text with
                    | Some selection -> selection
                    | None -> raise (UsageError $"--selection must be correlation or trainable, got '{text}'.")
        }

    let kind =
        match optional p "--attention" with
        | None ->
            match model.Attention with
            | AttentionKind.SelectMerge _ -> AttentionKind.SelectMerge options
            | other -> other
        | Some "dilated" -> AttentionKind.Dilated
        | Some "dense" -> AttentionKind.Dense
        | Some "select-merge" -> AttentionKind.SelectMerge options
        | Some other -> raise (UsageError $"--attention must be dilated, dense or select-merge, got '{other}'.")

    match kind with
    | AttentionKind.SelectMerge _ -> ()
    | _ -> refuse p selectMergeOptions "applies only to --attention select-merge."

    kind

/// The model configuration with the attention and scaling options of `p` applied; `seqLen` is the
/// default trained length and `shortestSample` the shortest sample the task can train (1 for text,
/// `Passkey.minimumSampleLength` for passkey samples): the CRD minimum length defaults to
/// max(T/4, shortestSample), capped at T. Raises UsageError naming a flag that would do nothing here
/// (a select-merge flag without select-merge attention, a scaling flag its `--scaling` does not read)
/// or a `--crd-min-length` below `shortestSample`.
let apply (p: Parsed) (seqLen: int) (shortestSample: int) (model: ModelConfig) : ModelConfig =
    let attention = attentionOf p model

    let scalingName = optional p "--scaling"
    let crdOptions = [ "--crd-max-scale"; "--crd-cycle-steps"; "--crd-min-length" ]

    match scalingName with
    | Some("pi" | "ntk" | "yarn") -> ()
    | _ -> refuse p [ "--scale" ] "applies only to --scaling pi, ntk or yarn."

    match scalingName with
    | Some("dynamic-ntk" | "yarn" | "crd-ntk") -> ()
    | _ -> refuse p [ "--trained-length" ] "applies only to --scaling dynamic-ntk, yarn or crd-ntk."

    match scalingName with
    | Some "crd-ntk" -> ()
    | _ -> refuse p crdOptions "applies only to --scaling crd-ntk."

    let scale =
        optional p "--scale"
        |> Option.map (fun s ->
            let v = toFloat "--scale" true s

            if v < 1.0 then
                raise (UsageError $"--scale must be a number ≥ 1, got '{s}'.")

            v)
        |> Option.defaultValue 1.0

    let trained = intOption p "--trained-length" 1L 1_073_741_824L (int64 seqLen) |> int

    let scaling =
        match optional p "--scaling" with
        | None -> model.PositionScaling
        | Some "none" -> PlainRope
        | Some "pi" -> Interpolation scale
        | Some "ntk" -> NtkAware scale
        | Some "dynamic-ntk" -> DynamicNtk trained
        | Some "yarn" ->
            Yarn
                {
                    Scale = scale
                    TrainedLength = trained
                    Alpha = 1.0
                    Beta = 32.0
                }
        | Some "crd-ntk" ->
            let maxScale =
                optional p "--crd-max-scale"
                |> Option.map (toFloat "--crd-max-scale" true)
                |> Option.defaultValue ModelConfig.defaultCrd.MaxScale

            if maxScale < 1.0 then
                raise (UsageError $"--crd-max-scale must be a number ≥ 1, got {maxScale}.")

            let minLength =
                intOption
                    p
                    "--crd-min-length"
                    1L
                    (int64 trained)
                    (int64 (min trained (max (trained / 4) shortestSample)))
                |> int

            if given p "--crd-min-length" && minLength < shortestSample then
                raise (
                    UsageError
                        $"--crd-min-length must be ≥ {shortestSample} (the shortest sample of this task), got {minLength}."
                )

            CrdNtk
                {
                    MinScale = 1.0
                    MaxScale = maxScale
                    CycleSteps =
                        intOption p "--crd-cycle-steps" 1L 100_000_000L (int64 ModelConfig.defaultCrd.CycleSteps)
                        |> int
                    TrainedLength = trained
                    MinLength = minLength
                }
        | Some other ->
            raise (UsageError $"--scaling must be none, pi, ntk, dynamic-ntk, yarn or crd-ntk, got '{other}'.")

    { model with
        Attention = attention
        PositionScaling = scaling
    }

/// A short description of a model's attention and scaling for reports.
let describe (model: ModelConfig) : string =
    let attention =
        match model.Attention with
        | AttentionKind.SelectMerge o ->
            $"""select-merge (block {o.BlockSize}, top-{o.TopK}, merge {o.MergeFactor}{(if o.LocalBlocks > 0 then $", {o.LocalBlocks} local" else "")}{(if o.Sink then ", sink" else "")}{(if o.RenumberPositions then ", renumbered" else "")}{(if o.Selection = LongNet.Casm.BlockSelection.Trainable then
                                                                                                                                                                                                                                                     ", trainable selection"
                                                                                                                                                                                                                                                 else
                                                                                                                                                                                                                                                     "")})"""
        | kind -> ModelConfig.attentionName kind

    $"{attention} attention, scaling {ModelConfig.scalingName model.PositionScaling}"
