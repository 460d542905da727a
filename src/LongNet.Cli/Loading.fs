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
let loadModel (path: string) : LongNetModel * ITokenizer * CheckpointHeader = Checkpoint.loadModel path |> orFail

/// Tokenizes a corpus's documents and splits them.
let corpusOf (tokenizer: ITokenizer) (source: Corpus.Source) : Corpus =
    let corpus = Corpus.ofSource tokenizer source |> orFail

    if corpus.Train.Length < 2 then
        fail $"corpus {source.Description} holds only {corpus.Train.Length} training tokens; give more text."

    corpus

/// Loads and tokenizes a corpus (a file or folder, or the built-in `builtin:dotnet-docs`).
let loadCorpus (tokenizer: ITokenizer) (path: string) : Corpus =
    corpusOf tokenizer (Corpus.readSource path |> orFail)

/// Writes text to a file atomically (UTF-8, no byte-order mark), creating its folder if missing.
let writeText (path: string) (text: string) =
    AtomicFile.ensureFolderOf path
    AtomicFile.writeText path text

/// Writes the run configuration as `config.json` in `outDir` (atomically).
let writeConfig (outDir: string) (config: RunConfig) =
    writeText (Path.Combine(outDir, "config.json")) (JsonFields.write (RunConfig.toJson config))
