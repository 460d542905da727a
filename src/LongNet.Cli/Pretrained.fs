/// `longnet logits` and `longnet export`: run any model — a LongNet checkpoint or a Hugging Face
/// Llama/Mistral folder — on token ids from `.npy`, and write a model with the Llama layout as a
/// Hugging Face folder (config.json + model.safetensors) that Python tools load unchanged.
module LongNet.Cli.Pretrained

open System
open System.IO
open TorchSharp
open LongNet
open LongNet.Interop
open LongNet.Modules
open LongNet.Training
open LongNet.Cli.Args
open LongNet.Cli.Errors

/// The help text of `longnet logits`.
let logitsHelp =
    $"""longnet logits --model PATH --tokens IDS.npy --out LOGITS.npy [--attention KIND …]

Runs a model on token ids. PATH is a LongNet checkpoint or a Hugging Face folder of a Llama or
Mistral model (config.json with model.safetensors, or model.safetensors.index.json and its shards;
float32, float16 or bfloat16 tensors). IDS.npy holds int64 token ids [batch, seq]; LOGITS.npy gets
float32 logits [batch, seq, vocab]. Hugging Face models are imported with dense attention, computing
what the original computes. The model's own attention is used unless:
  --attention KIND  dilated, dense or select-merge for every block (dilated uses the model's groups)
  --block-size B    select-merge: rows per block (default 64)
  --top-k K         select-merge: key blocks kept per query block besides its own (default 4)
  --merge-factor M  select-merge: adjacent query blocks sharing one selection (default 1)
  --no-sink         select-merge: do not always keep block 0
  --original-positions  select-merge: rotate at original positions (default: renumbered after selection)

Exit codes: 0 done, 2 bad command line or input, 1 failure."""

/// The help text of `longnet export`.
let exportHelp =
    """longnet export --model PATH --out DIR [--dtype float32|float16|bfloat16]

Writes a model with the Llama layout (RMSNorm, SwiGLU, RoPE, no biases; e.g. one imported from a
Hugging Face folder) as a Hugging Face folder: DIR/config.json ("LlamaForCausalLM") and
DIR/model.safetensors with Hugging Face tensor names, in --dtype (default float32). PATH is a LongNet
checkpoint or a Hugging Face folder. Files are written atomically.

Exit codes: 0 done, 2 bad command line, 1 failure."""

/// Whether `path` is a Hugging Face folder (it holds config.json).
let private isHuggingFace (path: string) =
    Directory.Exists path && File.Exists(Path.Combine(path, "config.json"))

/// The model at `path` (a LongNet checkpoint or a Hugging Face folder) with `adapt` applied to its
/// configuration, in eval mode.
let loadModel (path: string) (adapt: ModelConfig -> ModelConfig) : LongNetModel =
    Native.ensureLoaded () |> ignore

    if isHuggingFace path then
        let model, pretrained = HuggingFace.load path adapt |> orFail

        for note in pretrained.Notes do
            eprintfn "note: %s" note

        model
    elif File.Exists path then
        let loaded = Checkpoint.load path |> orFail

        try
            let model = new LongNetModel(adapt loaded.Header.Model)

            match Checkpoint.loadWeights model loaded.Tensors with
            | Ok() ->
                model.eval ()
                model
            | Error e ->
                model.Dispose()
                fail $"'{path}': {e}"
        finally
            for KeyValue(_, t) in loaded.Tensors do
                t.Dispose()
    else
        raise (UsageError $"--model: '{path}' is neither a LongNet checkpoint nor a folder with config.json.")

/// Runs `longnet logits` and returns the exit code.
let runLogits (argv: string list) : int =
    guard "logits" (fun () ->
        let p =
            parse ([ "model"; "tokens"; "out" ] @ ModelOptions.valueOptions) ModelOptions.switches argv

        for option in ModelOptions.scalingOptions do
            if (optional p option).IsSome then
                raise (UsageError $"{option} is a training option; logits runs the model's own positions.")

        let modelPath, tokensPath, outPath =
            required p "model", required p "tokens", required p "out"

        if not (File.Exists tokensPath) then
            raise (UsageError $"--tokens: file not found: {tokensPath}")

        Native.ensureLoaded () |> ignore
        use scope = torch.NewDisposeScope()

        let tokens =
            try
                Npy.readTensor tokensPath
            with :? InvalidDataException as e ->
                raise (UsageError $"--tokens: {e.Message}")

        if tokens.dtype <> torch.ScalarType.Int64 || tokens.Dimensions <> 2L then
            let shape = String.Join(", ", tokens.shape)
            raise (UsageError $"--tokens must hold int64 ids [batch, seq]; got {tokens.dtype} [{shape}].")

        use model =
            loadModel modelPath (fun c ->
                { c with
                    Attention = ModelOptions.attentionOf p c
                })

        let logits =
            try
                use _ = torch.no_grad ()
                model.forward tokens
            with :? ArgumentException as e ->
                raise (UsageError $"--tokens: {e.Message}")

        Npy.writeTensor outPath (logits.to_type(torch.ScalarType.Float32).contiguous())
        let shape = String.Join(" × ", logits.shape)
        printfn "wrote %s: float32 logits %s" outPath shape
        0)

/// Runs `longnet export` and returns the exit code.
let runExport (argv: string list) : int =
    guard "export" (fun () ->
        let p = parse [ "model"; "out"; "dtype" ] [] argv
        let modelPath, outDir = required p "model", required p "out"

        let dtype =
            match optional p "dtype" |> Option.defaultValue "float32" with
            | "float32" -> torch.ScalarType.Float32
            | "float16" -> torch.ScalarType.Float16
            | "bfloat16" -> torch.ScalarType.BFloat16
            | other -> raise (UsageError $"--dtype must be float32, float16 or bfloat16, got '{other}'.")

        use model = loadModel modelPath id
        HuggingFace.save model outDir dtype |> orFail
        printfn "wrote %s (config.json, model.safetensors in %s)" outDir (string dtype)
        0)
