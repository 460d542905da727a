/// A whole run's configuration — model, training and tokenizer — as named presets and as a JSON file:
/// `{ "preset": "demo", "model": { … }, "train": { … }, "tokenizer": { "kind": "byte" } }`, where every
/// section and field is optional and missing values come from the preset (default "demo").
namespace LongNet.Training

open System.IO
open System.Text.Json.Nodes
open LongNet
open LongNet.Modules
open LongNet.Text

/// Which tokenizer a run uses.
type TokenizerChoice =
    /// UTF-8 bytes (259 ids).
    | ByteTokens
    /// BPE from a `vocab.json` and a `merges.txt` file.
    | BpeFiles of vocab: string * merges: string
    /// Byte-level BPE learnt from the run's training documents, up to `vocabSize` ids (`BytePairEncoding.train`).
    | LearnedBpe of vocabSize: int
    /// Byte-level BPE from a merges file written by `BytePairEncoding.toText`.
    | ByteBpeFile of merges: string
    /// A tiktoken vocabulary shipped with the library: "gpt2" or "cl100k_base".
    | TiktokenVocabulary of encoding: string
    /// The tokenizer stored in the checkpoint a run resumed from.
    | FromCheckpoint

/// A run: model, training and tokenizer.
type RunConfig =
    {
        /// The model's hyper-parameters (vocabSize is set from the tokenizer).
        Model: ModelConfig
        /// The training hyper-parameters.
        Train: TrainConfig
        /// The tokenizer.
        Tokenizer: TokenizerChoice
    }

/// Presets, JSON and resolution of `RunConfig`.
module RunConfig =
    /// "tiny": e = 32, 2 layers, 2 heads, 64-token sequences; seconds to train (tests, smoke runs).
    let tiny: RunConfig =
        {
            Model =
                { ModelConfig.defaults with
                    EmbedDim = 32
                    Layers = 2
                    Heads = 2
                    FeedForwardDim = 96
                    Groups = Groups.ofPairsOrRaise [ 16, 1; 32, 2; 64, 4 ]
                }
            Train =
                { TrainConfig.defaults with
                    Steps = 60
                    BatchSize = 4
                    SeqLen = 64
                    LearningRate = 3e-3
                    WarmupSteps = 10
                    LogEvery = 5
                    CheckpointEvery = 0
                    EvalTokens = 2048
                }
            Tokenizer = ByteTokens
        }

    /// "demo": e = 128, 3 layers, 4 heads, SwiGLU 352, groups (64,1) (128,2) (256,4), 256-token
    /// sequences, batch 16, up to 1200 steps at lr 2e-3 (`longnet demo` fits the count to its time budget).
    let demo: RunConfig =
        {
            Model =
                { ModelConfig.defaults with
                    EmbedDim = 128
                    Layers = 3
                    Heads = 4
                    FeedForwardDim = 352
                    Groups = Groups.ofPairsOrRaise [ 64, 1; 128, 2; 256, 4 ]
                }
            Train =
                { TrainConfig.defaults with
                    Steps = 1200
                    BatchSize = 16
                    SeqLen = 256
                    LearningRate = 2e-3
                    WarmupSteps = 40
                    LogEvery = 10
                    CheckpointEvery = 100
                    EvalTokens = 8192
                }
            Tokenizer = ByteTokens
        }

    /// "small": e = 384, 6 layers, 6 heads, groups (128,1) … (1024,8), 1024-token sequences (a GPU run).
    let small: RunConfig =
        {
            Model =
                { ModelConfig.defaults with
                    EmbedDim = 384
                    Layers = 6
                    Heads = 6
                    FeedForwardDim = 1024
                    Groups = Groups.ofPairsOrRaise [ 128, 1; 256, 2; 512, 4; 1024, 8 ]
                }
            Train =
                { TrainConfig.defaults with
                    Steps = 5000
                    BatchSize = 16
                    SeqLen = 1024
                    LearningRate = 6e-4
                    WarmupSteps = 200
                    CheckpointEvery = 500
                }
            Tokenizer = ByteTokens
        }

    /// "longctx": the long-context demo's model — byte-level BPE learnt from the training text (4096 ids),
    /// e = 128, 3 layers, 8 heads, SwiGLU 352, a logarithmic distance bias (slopes 2 … 1/16 over the heads)
    /// instead of rotations, smeared keys, groups (1024,1) (2048,2)
    /// (4096,4) (8192,8) (dense first group; every head and position covered: r ≤ heads), 8192-token
    /// sequences, one per step, lr 3e-3.
    let longContext: RunConfig =
        {
            Model =
                { ModelConfig.defaults with
                    EmbedDim = 128
                    Layers = 3
                    Heads = 8
                    FeedForwardDim = 352
                    Groups = Groups.geometric 1024 2 2 4 8 |> Result.defaultWith (fun e -> e.Raise())
                    Position = DistanceBiased Rope.defaultDistanceBias
                    SmearedKeys = true
                }
            Train =
                { TrainConfig.defaults with
                    Steps = 100_000
                    BatchSize = 1
                    SeqLen = 8192
                    LearningRate = 3e-3
                    WarmupSteps = 50
                    LogEvery = 10
                    CheckpointEvery = 200
                    EvalTokens = 16384
                }
            Tokenizer = LearnedBpe 4096
        }

    /// The presets by name.
    let presets: (string * RunConfig) list =
        [ "tiny", tiny; "demo", demo; "small", small; "longctx", longContext ]

    /// The preset called `name`, or an error listing the known names.
    let preset (name: string) : Result<RunConfig, string> =
        match presets |> List.tryFind (fun (n, _) -> n = name.Trim().ToLowerInvariant()) with
        | Some(_, c) -> Ok c
        | None ->
            let names = System.String.Join(", ", presets |> List.map fst)
            Error $"unknown preset '{name}'; known presets: {names}."

    let private describe (e: ConfigError) = e.Message

    /// Reads a run configuration from JSON text; relative tokenizer paths are taken from `baseDir`.
    let ofJsonText (what: string) (baseDir: string) (text: string) : Result<RunConfig, string> =
        try
            let node = JsonFields.parse what text
            let root = JsonFields.Reader(node, "")
            root.RejectUnknown [ "preset"; "model"; "train"; "tokenizer" ]

            match preset (root.String("preset", "demo")) with
            | Error e -> Error $"{what}: {e}"
            | Ok basis ->
                let tokenizerNode = JsonFields.Reader(root.Object "tokenizer", "tokenizer")
                tokenizerNode.RejectUnknown [ "kind"; "vocab"; "merges"; "vocabSize"; "encoding" ]

                let tokenizer =
                    match tokenizerNode.String("kind", "").ToLowerInvariant() with
                    | "" -> Ok basis.Tokenizer
                    | "byte" -> Ok ByteTokens
                    | "bpe" ->
                        let path (name: string) =
                            match tokenizerNode.String(name, "") with
                            | "" ->
                                JsonFields.fail
                                    $"tokenizer.{name}"
                                    $"tokenizer.{name} must name a file for a BPE tokenizer."
                            | p -> Path.GetFullPath(Path.Combine(baseDir, p))

                        Ok(BpeFiles(path "vocab", path "merges"))
                    | "byte-bpe" ->
                        match tokenizerNode.String("merges", "") with
                        | "" ->
                            Ok(
                                LearnedBpe(
                                    tokenizerNode.Int(
                                        "vocabSize",
                                        4096,
                                        BytePairEncoding.minVocabSize,
                                        BytePairEncoding.maxVocabSize
                                    )
                                )
                            )
                        | p -> Ok(ByteBpeFile(Path.GetFullPath(Path.Combine(baseDir, p))))
                    | "tiktoken" ->
                        match tokenizerNode.String("encoding", "") with
                        | e when List.contains e TiktokenTextTokenizer.Encodings -> Ok(TiktokenVocabulary e)
                        | e ->
                            let known = System.String.Join(", ", TiktokenTextTokenizer.Encodings)

                            Error
                                $"{what}: tokenizer.encoding must be one of {known} for a tiktoken tokenizer, got \"{e}\"."
                    | other ->
                        Error
                            $"{what}: tokenizer.kind must be \"byte\", \"bpe\", \"byte-bpe\" or \"tiktoken\", got \"{other}\"."

                let model = ModelConfig.ofJson "model" basis.Model (root.Object "model")
                let train = TrainConfig.ofJson "train" basis.Train (root.Object "train")

                match tokenizer, model, train with
                | Error e, _, _ -> Error e
                | _, Error e, _
                | _, _, Error e -> Error $"{what}: {describe e}"
                | Ok t, Ok m, Ok tr -> Ok { Model = m; Train = tr; Tokenizer = t }
        with JsonFields.InvalidConfig e ->
            Error $"{what}: {e.Message}"

    /// Reads a run configuration file.
    let load (path: string) : Result<RunConfig, string> =
        if not (File.Exists path) then
            Error $"config file '{path}' does not exist; give a JSON file or a `preset` (tiny, demo, small, longctx)."
        else
            try
                let text = File.ReadAllText path
                ofJsonText $"config file '{path}'" (Path.GetDirectoryName(Path.GetFullPath path)) text
            with :? IOException as e ->
                Error $"config file '{path}' cannot be read: {e.Message}"

    /// The JSON form of a run configuration.
    let toJson (c: RunConfig) : JsonObject =
        let o = JsonObject()
        o.["model"] <- ModelConfig.toJson c.Model
        o.["train"] <- TrainConfig.toJson c.Train
        let t = JsonObject()

        match c.Tokenizer with
        | ByteTokens -> t.["kind"] <- JsonValue.Create "byte"
        | BpeFiles(v, m) ->
            t.["kind"] <- JsonValue.Create "bpe"
            t.["vocab"] <- JsonValue.Create v
            t.["merges"] <- JsonValue.Create m
        | LearnedBpe size ->
            t.["kind"] <- JsonValue.Create "byte-bpe"
            t.["vocabSize"] <- JsonValue.Create size
        | ByteBpeFile m ->
            t.["kind"] <- JsonValue.Create "byte-bpe"
            t.["merges"] <- JsonValue.Create m
        | TiktokenVocabulary encoding ->
            t.["kind"] <- JsonValue.Create "tiktoken"
            t.["encoding"] <- JsonValue.Create encoding
        | FromCheckpoint -> t.["kind"] <- JsonValue.Create "checkpoint"

        o.["tokenizer"] <- t
        o

    /// Builds the tokenizer of a run.
    let tokenizer (c: RunConfig) : Result<ITokenizer, string> =
        match c.Tokenizer with
        | ByteTokens -> Ok(Tokenizer.byteLevel ())
        | BpeFiles(v, m) -> Tokenizer.bpeFromFiles v m
        | ByteBpeFile m ->
            try
                BytePairEncoding.ofText (File.ReadAllText m)
                |> Result.map (fun merges -> ByteBpeTokenizer merges :> ITokenizer)
                |> Result.mapError (fun e -> $"merges file '{m}': {e}")
            with :? IOException as e ->
                Error $"merges file '{m}' cannot be read: {e.Message}"
        | TiktokenVocabulary encoding -> Tokenizer.ofSpec (Tiktoken encoding)
        | LearnedBpe _ ->
            Error "this run learns its tokenizer from its training text; build it with RunConfig.tokenizerFor."
        | FromCheckpoint -> Error "this run takes its tokenizer from its checkpoint; load the checkpoint instead."

    /// Builds the tokenizer of a run whose text is `source`: a learnt BPE is learnt from the source's
    /// training documents (deterministic); other choices as `tokenizer`.
    let tokenizerFor (c: RunConfig) (source: Corpus.Source) : Result<ITokenizer, string> =
        match c.Tokenizer with
        | LearnedBpe size -> Ok(ByteBpeTokenizer(BytePairEncoding.train size source.TrainingDocuments) :> ITokenizer)
        | _ -> tokenizer c

    /// The configuration with the model's vocabulary size set to the tokenizer's.
    let withVocabulary (tokenizer: ITokenizer) (c: RunConfig) : RunConfig =
        { c with
            Model =
                { c.Model with
                    VocabSize = tokenizer.VocabSize
                }
        }

    /// The differences between a requested configuration and the model and training configuration a
    /// checkpoint stores, as "section.field: requested vs stored" — empty when the run can resume.
    /// The vocabulary size (set from the tokenizer) and the total steps (which a resume may change) are
    /// not compared.
    let resumeDifferences (requested: RunConfig) (model: ModelConfig) (train: TrainConfig) : string list =
        let modelDiffs =
            ModelConfig.differences
                { requested.Model with
                    VocabSize = model.VocabSize
                }
                model
            |> List.map (fun d -> "model." + d)

        let a =
            TrainConfig.toJson
                { requested.Train with
                    Steps = train.Steps
                }

        let b = TrainConfig.toJson train

        let trainDiffs =
            [
                for name in TrainConfig.fieldNames do
                    let x, y = a.[name].ToJsonString(), b.[name].ToJsonString()

                    if x <> y then
                        $"train.{name}: {x} vs {y}"
            ]

        modelDiffs @ trainDiffs
