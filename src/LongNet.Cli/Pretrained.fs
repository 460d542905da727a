/// `longnet logits`, `longnet import` and `longnet export`: run any model — a LongNet checkpoint or a
/// Hugging Face Llama/Mistral folder — on token ids from `.npy`, turn a Hugging Face folder into a
/// LongNet checkpoint (so every command that takes a checkpoint takes it), and write a model with the
/// Llama layout as a Hugging Face folder (config.json + model.safetensors) that Python tools load unchanged.
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

Runs a model on token ids. PATH (--model, or --checkpoint) is a LongNet checkpoint or a Hugging Face
folder of a Llama or Mistral model (config.json with model.safetensors, or model.safetensors.index.json
and its shards; float32, float16 or bfloat16 tensors). IDS.npy holds int64 token ids [batch, seq];
LOGITS.npy gets float32 logits [batch, seq, vocab]. Hugging Face models are imported with dense attention, computing
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
DIR/model.safetensors with Hugging Face tensor names, in --dtype (default float32), and its
SentencePiece tokenizer as DIR/tokenizer.model when it has one. PATH (--model, or --checkpoint) is a
LongNet checkpoint or a Hugging Face folder. Files are written atomically.

Exit codes: 0 done, 2 bad command line, 1 failure."""

/// The help text of `longnet import`.
let importHelp =
    """longnet import --from DIR --out CKPT [--dtype float32|float16|bfloat16]

Turns a Hugging Face folder of a Llama or Mistral model (config.json with model.safetensors, or
model.safetensors.index.json and its shards) into a LongNet checkpoint, so that eval, generate,
passkey, logits and train --init take it. The model keeps dense attention (it computes what the
original computes; pass --attention to those commands to change it). The folder's tokenizer.model
(SentencePiece BPE, as Llama 1/2 and Mistral ship it) goes into the checkpoint; without one the
checkpoint takes token ids only. Weights are stored in --dtype (default float32); CKPT is written
atomically.

Exit codes: 0 done, 2 bad command line, 1 failure."""

/// The tensor dtype named by --dtype (default float32).
let private dtypeOption (p: Parsed) : torch.ScalarType =
    match optional p "dtype" |> Option.defaultValue "float32" with
    | "float32" -> torch.ScalarType.Float32
    | "float16" -> torch.ScalarType.Float16
    | "bfloat16" -> torch.ScalarType.BFloat16
    | other -> raise (UsageError $"--dtype must be float32, float16 or bfloat16, got '{other}'.")

/// The model path: --model PATH, or --checkpoint CKPT (the same option under the name other commands use).
let private modelOption (p: Parsed) : string =
    match optional p "model", optional p "checkpoint" with
    | Some _, Some _ -> raise (UsageError "give --model or --checkpoint, not both (they name the same input).")
    | Some path, None
    | None, Some path -> path
    | None, None -> raise (UsageError "--model is required (a LongNet checkpoint or a Hugging Face folder).")

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
            parse ([ "model"; "checkpoint"; "tokens"; "out" ] @ ModelOptions.valueOptions) ModelOptions.switches argv

        for option in ModelOptions.scalingOptions do
            if (optional p option).IsSome then
                raise (UsageError $"{option} is a training option; logits runs the model's own positions.")

        let modelPath, tokensPath, outPath =
            modelOption p, required p "tokens", required p "out"

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
        let p = parse [ "model"; "checkpoint"; "out"; "dtype" ] [] argv
        let modelPath, outDir = modelOption p, required p "out"
        let dtype = dtypeOption p
        use model = loadModel modelPath id
        HuggingFace.save model outDir dtype |> orFail

        let tokenizer =
            if isHuggingFace modelPath then
                HuggingFace.readTokenizer modelPath model.Config.VocabSize |> orFail |> fst
            else
                (Checkpoint.readHeader modelPath |> orFail).Tokenizer

        let files =
            if HuggingFace.saveTokenizer tokenizer outDir then
                $"config.json, model.safetensors in {dtype}, {HuggingFace.tokenizerModelName}"
            else
                $"config.json, model.safetensors in {dtype}"

        printfn "wrote %s (%s)" outDir files
        0)

/// Runs `longnet import` and returns the exit code.
let runImport (argv: string list) : int =
    guard "import" (fun () ->
        let p = parse [ "from"; "out"; "dtype" ] [] argv
        let folder, outPath = required p "from", required p "out"
        let dtype = dtypeOption p

        if not (isHuggingFace folder) then
            raise (UsageError $"--from: '{folder}' is not a folder with config.json.")

        if Directory.Exists outPath then
            raise (UsageError $"--out: '{outPath}' is a folder; give the checkpoint file to write.")

        for note in HuggingFace.importCheckpoint folder outPath dtype |> orFail do
            eprintfn "note: %s" note

        printfn "wrote %s (weights in %s)" outPath (string dtype)
        0)
