/// Tokenizers: byte-level (no files needed; 256 byte ids plus specials), LongNet's own byte-level BPE,
/// and through `Microsoft.ML.Tokenizers` BPE from a user's `vocab.json` and `merges.txt`, SentencePiece
/// BPE from a Llama or Mistral `tokenizer.model`, and the GPT-2 and cl100k tiktoken vocabularies. A
/// tokenizer is described by a `TokenizerSpec` that a checkpoint stores in full, so a checkpoint is
/// usable on its own.
namespace LongNet.Text

open System
open System.IO
open System.Collections.Generic
open System.Text
open Microsoft.ML.Tokenizers

/// What a checkpoint stores to rebuild its tokenizer.
type TokenizerSpec =
    /// UTF-8 bytes 0 … 255 plus `<bos>` 256, `<eos>` 257, `<pad>` 258.
    | ByteLevel
    /// Byte-pair encoding with the given `vocab.json` and `merges.txt` contents.
    | Bpe of vocabJson: string * merges: string
    /// LongNet's own byte-level BPE (see `BytePairEncoding`).
    | ByteBpe of merges: BpeMerges
    /// A SentencePiece BPE model: the bytes of a Llama 1/2 or Mistral `tokenizer.model`.
    | SentencePiece of model: byte[]
    /// A tiktoken vocabulary shipped with Microsoft.ML.Tokenizers: "gpt2" or "cl100k_base".
    | Tiktoken of encoding: string
    /// No text form: a model imported without a tokenizer takes and gives token ids in [0, vocabSize).
    | IdsOnly of vocabSize: int

/// Turns text into token ids and back.
type ITokenizer =
    /// A short description, e.g. "byte-level (259 ids)".
    abstract Name: string
    /// The number of ids; every id is in [0, VocabSize).
    abstract VocabSize: int
    /// The id that separates documents, if the vocabulary has one.
    abstract EndOfText: int option
    /// The id a prompt starts with, as the model was trained (Llama's `<s>`); None where models are
    /// trained on plain text.
    abstract PromptStart: int option
    /// Token ids of `text`.
    abstract Encode: text: string -> int[]
    /// Text of `ids` (special ids are skipped; invalid UTF-8 becomes U+FFFD).
    abstract Decode: ids: int[] -> string
    /// The description a checkpoint stores.
    abstract Spec: TokenizerSpec

/// The byte-level tokenizer: every UTF-8 byte is one token.
[<Sealed>]
type ByteTokenizer() =
    /// The id of `<bos>`.
    static member BeginOfText = 256
    /// The id of `<eos>` (the document separator).
    static member EndOfTextId = 257
    /// The id of `<pad>`.
    static member Padding = 258

    interface ITokenizer with
        member _.Name = "byte-level (259 ids: 256 bytes, <bos>, <eos>, <pad>)"
        member _.VocabSize = 259
        member _.EndOfText = Some ByteTokenizer.EndOfTextId
        member _.PromptStart = None

        member _.Encode text =
            Encoding.UTF8.GetBytes text |> Array.map int

        member _.Decode ids =
            ids
            |> Array.filter (fun i -> i >= 0 && i < 256)
            |> Array.map byte
            |> Encoding.UTF8.GetString

        member _.Spec = ByteLevel

/// A BPE tokenizer over `Microsoft.ML.Tokenizers.BpeTokenizer`.
[<Sealed>]
type BpeTextTokenizer private (inner: BpeTokenizer, vocabJson: string, merges: string) =
    let vocabSize = (inner.Vocabulary.Values |> Seq.max) + 1

    let endOfText =
        [ "<|endoftext|>"; "</s>"; "<eos>" ]
        |> List.tryPick (fun t ->
            match inner.Vocabulary.TryGetValue t with
            | true, id -> Some id
            | _ -> None)

    /// Builds the tokenizer from the contents of `vocab.json` and `merges.txt`.
    static member Create(vocabJson: string, merges: string) : BpeTextTokenizer =
        use vocab = new MemoryStream(Encoding.UTF8.GetBytes vocabJson)
        use mergeStream = new MemoryStream(Encoding.UTF8.GetBytes merges)
        BpeTextTokenizer(BpeTokenizer.Create(vocab, mergeStream), vocabJson, merges)

    interface ITokenizer with
        member _.Name = $"BPE ({vocabSize} ids)"
        member _.VocabSize = vocabSize
        member _.EndOfText = endOfText
        member _.PromptStart = None
        member _.Encode text = inner.EncodeToIds(text) |> Array.ofSeq
        member _.Decode ids = inner.Decode(ids)
        member _.Spec = Bpe(vocabJson, merges)

/// The tokenizer defined by byte-level BPE merges (see `BytePairEncoding`).
[<Sealed>]
type ByteBpeTokenizer(merges: BpeMerges) =
    let ranks =
        let d = Dictionary<int64, int>()

        merges.Merges
        |> Array.iteri (fun i (a, b) -> d.[(int64 a <<< 32) ||| int64 (uint32 b)] <- i)

        d

    let expansions =
        let table = Array.zeroCreate<byte[]>(256 + merges.Merges.Length)

        for i in 0..255 do
            table.[i] <- [| byte i |]

        merges.Merges
        |> Array.iteri (fun i (a, b) -> table.[256 + i] <- Array.append table.[a] table.[b])

        table

    let cache =
        Collections.Concurrent.ConcurrentDictionary<string, int[]>(StringComparer.Ordinal)

    let encodeChunk (chunk: string) : int[] =
        let word = ResizeArray(Encoding.UTF8.GetBytes chunk |> Array.map int)
        let mutable go = word.Count > 1

        while go do
            let mutable bestRank = Int32.MaxValue
            let mutable at = -1

            for i in 0 .. word.Count - 2 do
                match ranks.TryGetValue((int64 word.[i] <<< 32) ||| int64 (uint32 word.[i + 1])) with
                | true, r when r < bestRank ->
                    bestRank <- r
                    at <- i
                | _ -> ()

            if at < 0 then
                go <- false
            else
                let a, b = merges.Merges.[bestRank]
                let created = 256 + bestRank
                let mutable i = 0

                while i < word.Count - 1 do
                    if word.[i] = a && word.[i + 1] = b then
                        word.[i] <- created
                        word.RemoveAt(i + 1)

                    i <- i + 1

                go <- word.Count > 1

        word.ToArray()

    /// The merges this tokenizer applies.
    member _.Merges = merges

    interface ITokenizer with
        member _.Name = $"byte-level BPE ({merges.VocabSize} ids)"
        member _.VocabSize = merges.VocabSize
        member _.EndOfText = Some merges.EndOfText
        member _.PromptStart = None

        member _.Encode text =
            let ids = ResizeArray<int>(text.Length / 3 + 1)

            for m in BytePairEncoding.chunkPattern.Matches text do
                let chunk = m.Value

                let encoded =
                    match cache.TryGetValue chunk with
                    | true, e -> e
                    | _ ->
                        let e = encodeChunk chunk

                        if cache.Count < 1_000_000 then
                            cache.TryAdd(chunk, e) |> ignore

                        e

                ids.AddRange encoded

            ids.ToArray()

        member _.Decode ids =
            let bytes = ResizeArray<byte>()

            for id in ids do
                if id >= 0 && id < expansions.Length then
                    bytes.AddRange expansions.[id]

            Encoding.UTF8.GetString(bytes.ToArray())

        member _.Spec = ByteBpe merges

/// A SentencePiece BPE tokenizer (Llama 1/2, Mistral) over `Microsoft.ML.Tokenizers.LlamaTokenizer`.
/// `Encode` gives the text's pieces alone (so encoded fragments join); `PromptStart` is `<s>`, which
/// generation puts before a prompt as Hugging Face does.
[<Sealed>]
type SentencePieceTextTokenizer private (inner: SentencePieceTokenizer, model: byte[]) =
    let vocabSize = (inner.Vocabulary.Values |> Seq.max) + 1

    /// Builds the tokenizer from the bytes of a `tokenizer.model` (raises on a malformed model).
    static member Create(model: byte[]) : SentencePieceTextTokenizer =
        use stream = new MemoryStream(model, false)
        SentencePieceTextTokenizer(LlamaTokenizer.Create(stream, true, false), model)

    /// The beginning-of-sentence id.
    member _.BeginOfSentence = inner.BeginningOfSentenceId

    interface ITokenizer with
        member _.Name = $"SentencePiece BPE ({vocabSize} ids)"
        member _.VocabSize = vocabSize
        member _.EndOfText = Some inner.EndOfSentenceId
        member _.PromptStart = Some inner.BeginningOfSentenceId

        member _.Encode text =
            inner.EncodeToIds(text, false, false, true, true) |> Array.ofSeq

        member _.Decode ids = inner.Decode(ids, false)
        member _.Spec = SentencePiece model

/// A tiktoken tokenizer over `Microsoft.ML.Tokenizers.TiktokenTokenizer`, its ranks from a data package.
[<Sealed>]
type TiktokenTextTokenizer private (inner: TiktokenTokenizer, encoding: string) =
    // both vocabularies number their special tokens after every rank, so the last special ends the ids
    let vocabSize = (inner.SpecialTokens.Values |> Seq.max) + 1

    let endOfText =
        match inner.SpecialTokens.TryGetValue "<|endoftext|>" with
        | true, id -> Some id
        | _ -> None

    /// The encodings this tokenizer knows.
    static member Encodings = [ "gpt2"; "cl100k_base" ]

    /// Builds the tokenizer of `encoding` ("gpt2" or "cl100k_base"); raises ArgumentException for others.
    static member Create(encoding: string) : TiktokenTextTokenizer =
        match encoding with
        | "gpt2" -> TiktokenTextTokenizer(TiktokenTokenizer.CreateForModel "gpt2", encoding)
        | "cl100k_base" -> TiktokenTextTokenizer(TiktokenTokenizer.CreateForEncoding "cl100k_base", encoding)
        | other ->
            let known = String.Join(", ", TiktokenTextTokenizer.Encodings)
            raise (ArgumentException($"encoding must be one of {known}, got '{other}'.", "encoding"))

    interface ITokenizer with
        member _.Name = $"tiktoken {encoding} ({vocabSize} ids)"
        member _.VocabSize = vocabSize
        member _.EndOfText = endOfText
        member _.PromptStart = None
        member _.Encode text = inner.EncodeToIds(text) |> Array.ofSeq
        member _.Decode ids = inner.Decode(ids)
        member _.Spec = Tiktoken encoding

/// The tokenizer of a model that has none: it names the ids but cannot turn text into them.
[<Sealed>]
type IdsOnlyTokenizer(vocabSize: int) =
    let refuse () =
        raise (
            InvalidOperationException
                "this model was imported without a tokenizer (no tokenizer.model in its folder); give it token ids instead of text."
        )

    interface ITokenizer with
        member _.Name = $"token ids only ({vocabSize} ids, no tokenizer)"
        member _.VocabSize = vocabSize
        member _.EndOfText = None
        member _.PromptStart = None
        member _.Encode _ = refuse ()
        member _.Decode _ = refuse ()
        member _.Spec = IdsOnly vocabSize

/// Building tokenizers.
module Tokenizer =
    /// The byte-level tokenizer.
    let byteLevel () : ITokenizer = ByteTokenizer()

    /// Rebuilds a tokenizer from its spec; fails with a message when a BPE vocabulary is malformed.
    let ofSpec (spec: TokenizerSpec) : Result<ITokenizer, string> =
        match spec with
        | ByteLevel -> Ok(byteLevel ())
        | ByteBpe merges -> Ok(ByteBpeTokenizer merges :> ITokenizer)
        | Bpe(vocab, merges) ->
            try
                Ok(BpeTextTokenizer.Create(vocab, merges) :> ITokenizer)
            with e ->
                Error $"the BPE vocabulary could not be read ({e.Message}); check vocab.json and merges.txt."
        | SentencePiece model ->
            try
                Ok(SentencePieceTextTokenizer.Create model :> ITokenizer)
            with e ->
                Error
                    $"the SentencePiece model could not be read ({e.Message}); it must be a Llama-style tokenizer.model (SentencePiece BPE)."
        | Tiktoken encoding ->
            try
                Ok(TiktokenTextTokenizer.Create encoding :> ITokenizer)
            with e ->
                Error $"the tiktoken vocabulary '{encoding}' could not be loaded ({e.Message})."
        | IdsOnly vocabSize when vocabSize < 1 -> Error $"vocabSize must be ≥ 1, got {vocabSize}."
        | IdsOnly vocabSize -> Ok(IdsOnlyTokenizer vocabSize :> ITokenizer)

    /// A BPE tokenizer from a `vocab.json` and a `merges.txt` file.
    let bpeFromFiles (vocabPath: string) (mergesPath: string) : Result<ITokenizer, string> =
        let read (what: string) (path: string) =
            if not (File.Exists path) then
                Error $"{what} file '{path}' does not exist."
            else
                try
                    Ok(File.ReadAllText path)
                with e ->
                    Error $"{what} file '{path}' cannot be read: {e.Message}"

        match read "BPE vocabulary" vocabPath, read "BPE merges" mergesPath with
        | Ok v, Ok m -> ofSpec (Bpe(v, m))
        | Error e, _
        | _, Error e -> Error e
