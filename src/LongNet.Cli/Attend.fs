/// `longnet attend`: dilated attention on `.npy` files in `[batch, seq, heads, headDim]`, computed in
/// the files' dtype (float32 or float64), optionally with the gradients for an upstream gradient.
module LongNet.Cli.Attend

open System
open System.IO
open TorchSharp
open LongNet
open LongNet.Cli.Args

/// The command's help text.
let help =
    """longnet attend --q Q.npy --k K.npy --v V.npy --segments W1,W2,... --rates R1,R2,... --out OUT.npy
               [--causal] [--offsets paper|blocks] [--scale S] [--check-inputs]
               [--dout DOUT.npy --grads PREFIX]

Dilated attention on .npy inputs laid out [batch, seq, heads, headDim] (float32 or float64; the
output has the inputs' dtype). With --dout, also writes PREFIX.dq.npy, PREFIX.dk.npy, PREFIX.dv.npy:
the true gradients of the output for that upstream gradient. A config that leaves (head, position)
pairs uncovered is legal: those outputs are 0 and a warning goes to stderr."""

let private shapeOf (t: torch.Tensor) = "[" + String.Join(", ", t.shape) + "]"

let private readInput (option: string) (path: string) =
    if not (File.Exists path) then
        raise (UsageError $"--{option}: file not found: {path}")

    try
        Npy.readTensor path
    with :? InvalidDataException as e ->
        raise (UsageError $"--{option}: {e.Message}")

/// Parses the group options shared by attend, plan and bench into a validated config.
let configOf (p: Parsed) : DilatedConfig =
    let segments =
        required p "segments"
        |> toIntList "segments" 1L (int64 Int32.MaxValue)
        |> List.map int

    let rates =
        required p "rates"
        |> toIntList "rates" 1L (int64 Int32.MaxValue)
        |> List.map int

    let offsets =
        match optional p "offsets" |> Option.map HeadOffsets.parse with
        | None -> Paper
        | Some(Ok o) -> o
        | Some(Error e) -> raise (UsageError $"--offsets: {e.Message}")

    let scale = optional p "scale" |> Option.map (toFloat "scale" true)

    match DilatedConfig.create segments rates offsets (has p "causal") scale with
    | Ok c -> c
    | Error e ->
        let option =
            match e.Parameter with
            | "dilationRate"
            | "dilationRates" -> "rates"
            | "scale" -> "scale"
            | "offsets" -> "offsets"
            | _ -> "segments"

        raise (UsageError $"--{option}: {e.Message}")

/// Runs `longnet attend` and returns the exit code.
let run (argv: string list) : int =
    let p =
        parse
            [
                "q"
                "k"
                "v"
                "segments"
                "rates"
                "offsets"
                "scale"
                "out"
                "dout"
                "grads"
            ]
            [ "causal"; "check-inputs" ]
            argv

    let config = configOf p
    let outPath = required p "out"
    let gradients = optional p "dout", optional p "grads"

    match gradients with
    | Some _, None -> raise (UsageError "--dout needs --grads PREFIX for the gradient files.")
    | None, Some _ -> raise (UsageError "--grads needs --dout DOUT.npy (the upstream gradient).")
    | _ -> ()

    Native.ensureLoaded () |> ignore
    use scope = torch.NewDisposeScope()
    let load name = readInput name (required p name)
    let q, k, v = load "q", load "k", load "v"

    for name, t in [ "q", q; "k", k; "v", v ] do
        if t.Dimensions <> 4L then
            raise (UsageError $"--{name} must be 4-D [batch, seq, heads, headDim], got shape {shapeOf t}.")

    for name, t in [ "k", k; "v", v ] do
        if t.shape <> q.shape || t.dtype <> q.dtype then
            raise (
                UsageError
                    $"--{name} must match --q in shape and dtype: {shapeOf q} {q.dtype} vs {shapeOf t} {t.dtype}."
            )

    let heads = int q.shape.[2]
    let n = q.shape.[1]
    let summary = Plan.summarise config (int n) heads (int q.shape.[3]) false

    if summary.UncoveredPairs > 0L then
        eprintfn
            "warning: %d of %d (head, position) pairs (%.1f%%) are covered by no group; their outputs are 0."
            summary.UncoveredPairs
            (n * int64 heads)
            (100.0 * summary.UncoveredShare)

    let withGrad (t: torch.Tensor) =
        if (fst gradients).IsSome then
            t.detach().requires_grad_ true
        else
            t

    let qh, kh, vh =
        withGrad (Inputs.bshdToBhsd q), withGrad (Inputs.bshdToBhsd k), withGrad (Inputs.bshdToBhsd v)

    let out =
        try
            fst (DilatedAttention.forwardWithLse (has p "check-inputs") config qh kh vh)
        with :? ArgumentException as e ->
            raise (UsageError e.Message)

    Npy.writeTensor outPath (Inputs.bhsdToBshd(out).detach().contiguous())

    match gradients with
    | Some doutPath, Some prefix ->
        let dout = readInput "dout" doutPath

        if dout.shape <> q.shape then
            raise (UsageError $"--dout must have the inputs' shape {shapeOf q}, got {shapeOf dout}.")

        out.backward (ResizeArray [ Inputs.bshdToBhsd(dout).to_type out.dtype ])

        for suffix, t in [ "dq", qh; "dk", kh; "dv", vh ] do
            Npy.writeTensor $"{prefix}.{suffix}.npy" (Inputs.bhsdToBshd(t.grad).contiguous())
    | _ -> ()

    0
