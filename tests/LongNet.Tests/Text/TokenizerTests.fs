/// The tokenizers a pretrained model brings: tiktoken vocabularies give the published ids, a
/// SentencePiece BPE model (written here byte by byte from the published protobuf schema) tokenizes as
/// SentencePiece's BPE rule says (prompts start with `<s>`), every spec survives a checkpoint, and an
/// ids-only model refuses text with a message saying why.
module LongNet.Tests.TokenizerTests

open System
open System.IO
open System.Text
open Xunit
open LongNet.Text
open LongNet.Training
open LongNet.Tests.TestSupport

[<Fact>]
let ``the GPT-2 vocabulary gives GPT-2's published ids`` () =
    let t = Tokenizer.ofSpec (Tiktoken "gpt2") |> Result.defaultWith failwith
    Assert.Equal<int[]>([| 15496; 995 |], t.Encode "Hello world")
    Assert.Equal<int[]>([| 31373; 995 |], t.Encode "hello world")
    Assert.Equal(Some 50256, t.EndOfText)
    Assert.Equal(50257, t.VocabSize)
    Assert.Equal("Hello world", t.Decode [| 15496; 995 |])

[<Fact>]
let ``the cl100k vocabulary gives cl100k's published ids`` () =
    let t = Tokenizer.ofSpec (Tiktoken "cl100k_base") |> Result.defaultWith failwith
    Assert.Equal<int[]>([| 15339; 1917 |], t.Encode "hello world")
    Assert.Equal(Some 100257, t.EndOfText)
    Assert.Equal("hello world", t.Decode(t.Encode "hello world"))

[<Fact>]
let ``an unknown tiktoken encoding is refused naming the known ones`` () =
    match Tokenizer.ofSpec (Tiktoken "p99k_base") with
    | Ok _ -> failwith "accepted an unknown encoding"
    | Error e ->
        Assert.Contains("p99k_base", e)
        Assert.Contains("cl100k_base", e)

/// Protocol-buffer wire format: varint keys and values, length-delimited strings and messages, fixed32 floats.
module private Proto =
    let varint (value: uint64) : byte[] =
        let out = ResizeArray<byte>()
        let mutable v = value

        while v >= 0x80UL do
            out.Add(byte (v &&& 0x7FUL ||| 0x80UL))
            v <- v >>> 7

        out.Add(byte v)
        out.ToArray()

    let key (field: int) (wire: int) =
        varint (uint64 ((field <<< 3) ||| wire))

    let int (field: int) (value: int) =
        Array.append (key field 0) (varint (uint64 (int64 value)))

    let bool (field: int) (value: bool) = int field (if value then 1 else 0)

    let bytes (field: int) (value: byte[]) =
        Array.concat [ key field 2; varint (uint64 value.Length); value ]

    let text (field: int) (value: string) =
        bytes field (Encoding.UTF8.GetBytes value)

    let float32 (field: int) (value: float32) =
        Array.append (key field 5) (BitConverter.GetBytes value)

/// sentencepiece_model.proto: a piece of the vocabulary (piece = 1, score = 2, type = 3; NORMAL = 1,
/// UNKNOWN = 2, CONTROL = 3, BYTE = 6).
let private piece (text: string) (score: float32) (kind: int) =
    Proto.bytes 1 (Array.concat [ Proto.text 1 text; Proto.float32 2 score; Proto.int 3 kind ])

/// The pieces of the hand-made model, by id: <unk>, <s>, </s>, then "▁" and letters (score 0) and
/// merged pieces whose scores rank the merges: "he" before "ll" before "hell" before "▁hell".
let pieces =
    [
        "<unk>", 0.0f, 2
        "<s>", 0.0f, 3
        "</s>", 0.0f, 3
        "▁hell", -4.0f, 1
        "hell", -3.0f, 1
        "ll", -2.0f, 1
        "he", -1.0f, 1
        "▁", -5.0f, 1
        "h", -6.0f, 1
        "e", -7.0f, 1
        "l", -8.0f, 1
        "o", -9.0f, 1
        "w", -10.0f, 1
        "r", -11.0f, 1
        "d", -12.0f, 1
    ]

/// A SentencePiece BPE model as Llama ships it: model_type BPE, unk 0, bos 1, eos 2, identity
/// normalizer with a dummy prefix and whitespace escaped as "▁".
let sentencePieceModel () : byte[] =
    let trainer =
        Array.concat
            [
                Proto.int 3 2 // model_type = BPE
                Proto.int 4 pieces.Length // vocab_size
                Proto.int 40 0 // unk_id
                Proto.int 41 1 // bos_id
                Proto.int 42 2 // eos_id
                Proto.int 43 -1 // pad_id
            ]

    let normalizer =
        Array.concat
            [
                Proto.text 1 "identity"
                Proto.bool 3 true // add_dummy_prefix
                Proto.bool 4 false // remove_extra_whitespaces
                Proto.bool 5 true // escape_whitespaces
            ]

    Array.concat
        [
            yield! pieces |> List.map (fun (t, s, k) -> piece t s k)
            yield Proto.bytes 2 trainer
            yield Proto.bytes 3 normalizer
        ]

/// The id of a piece of the hand-made model.
let idOf (text: string) =
    pieces |> List.findIndex (fun (t, _, _) -> t = text)

[<Fact>]
let ``a SentencePiece BPE model merges by score, and prompts start with <s>`` () =
    let t =
        Tokenizer.ofSpec (SentencePiece(sentencePieceModel ()))
        |> Result.defaultWith failwith

    // "hello" → "▁hello": ▁ h e l l o → he (−1) → ll (−2) → hell (−3) → ▁hell (−4) → [▁hell, o]
    Assert.Equal<int[]>([| idOf "▁hell"; idOf "o" |], t.Encode "hello")
    // "held" → ▁ he l d: "ld" is no piece, "▁he" neither
    Assert.Equal<int[]>([| idOf "▁"; idOf "he"; idOf "l"; idOf "d" |], t.Encode "held")
    // fragments encode alone (no <s> inside a prompt built from pieces); <s> starts a prompt
    Assert.Equal(Some 1, t.PromptStart)
    Assert.Equal(Some 2, t.EndOfText)
    Assert.Equal(pieces.Length, t.VocabSize)
    Assert.Equal("hello", t.Decode(t.Encode "hello"))

[<Fact>]
let ``a malformed SentencePiece model is refused naming the file`` () =
    match Tokenizer.ofSpec (SentencePiece [| 1uy; 2uy; 3uy |]) with
    | Ok _ -> failwith "accepted three bytes as a model"
    | Error e -> Assert.Contains("tokenizer.model", e)

[<Fact>]
let ``an ids-only tokenizer names its ids and refuses text saying why`` () =
    let t = Tokenizer.ofSpec (IdsOnly 32000) |> Result.defaultWith failwith
    Assert.Equal(32000, t.VocabSize)
    let e = Assert.Throws<InvalidOperationException>(fun () -> t.Encode "hi" |> ignore)
    Assert.Contains("token ids", e.Message)
    Assert.True(Tokenizer.ofSpec (IdsOnly 0) |> Result.isError)

[<Fact>]
let ``every tokenizer spec survives a checkpoint`` () =
    use dir = new TempDir "tokenizer-specs"

    for spec in [ SentencePiece(sentencePieceModel ()); Tiktoken "gpt2"; IdsOnly 77 ] do
        let path = Path.Combine(dir.Path, "t.ckpt")

        let header: CheckpointHeader =
            {
                Model = LongNet.Modules.ModelConfig.defaults
                Train = TrainConfig.defaults
                Tokenizer = spec
                Step = 0
                RngState = 1UL
                TokensSeen = 0L
                ElapsedSeconds = 0.0
            }

        Checkpoint.save path header []
        let back = (Checkpoint.readHeader path |> Result.defaultWith failwith).Tokenizer

        match spec, back with
        | SentencePiece a, SentencePiece b -> Assert.Equal<byte[]>(a, b)
        | a, b -> Assert.Equal(a, b)

[<Fact>]
let ``a run configuration may name a tiktoken vocabulary, and only a known one`` () =
    let ok =
        RunConfig.ofJsonText "t" "." """{ "preset": "tiny", "tokenizer": { "kind": "tiktoken", "encoding": "gpt2" } }"""
        |> Result.defaultWith failwith

    Assert.Equal(TiktokenVocabulary "gpt2", ok.Tokenizer)
    let t = RunConfig.tokenizer ok |> Result.defaultWith failwith
    Assert.Equal(50257, t.VocabSize)

    match RunConfig.ofJsonText "t" "." """{ "tokenizer": { "kind": "tiktoken", "encoding": "o9" } }""" with
    | Ok _ -> failwith "accepted an unknown encoding"
    | Error e -> Assert.Contains("tokenizer.encoding", e)
