/// Loading what the model commands need — checkpoints, corpora — and writing their files, with
/// failures as `CommandError`s that say what to do.
module LongNet.Cli.Loading

open System.IO
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Cli.Errors

/// Loads a checkpoint's model (weights only) and tokenizer.
let loadModel (path: string) : LongNetModel * ITokenizer * CheckpointHeader =
    Native.ensureLoaded () |> ignore
    let loaded = Checkpoint.load path |> orFail

    try
        let tokenizer = Tokenizer.ofSpec loaded.Header.Tokenizer |> orFail
        let model = new LongNetModel(loaded.Header.Model)

        match Checkpoint.loadWeights model loaded.Tensors with
        | Ok() -> model, tokenizer, loaded.Header
        | Error e ->
            model.Dispose()
            fail $"checkpoint '{path}' does not match its own configuration ({e}); it is damaged."
    finally
        for KeyValue(_, t) in loaded.Tensors do
            t.Dispose()

/// Loads and tokenizes a corpus (a file or folder).
let loadCorpus (tokenizer: ITokenizer) (path: string) : Corpus =
    let corpus = Corpus.load tokenizer path |> orFail

    if corpus.Train.Length < 2 then
        fail $"corpus '{path}' holds only {corpus.Train.Length} training tokens; give more text."

    corpus

/// Writes text to a file atomically (UTF-8, no byte-order mark), creating its folder if missing.
let writeText (path: string) (text: string) =
    AtomicFile.ensureFolderOf path
    AtomicFile.writeText path text

/// Writes the run configuration as `config.json` in `outDir` (atomically).
let writeConfig (outDir: string) (config: RunConfig) =
    writeText (Path.Combine(outDir, "config.json")) (JsonFields.write (RunConfig.toJson config))
