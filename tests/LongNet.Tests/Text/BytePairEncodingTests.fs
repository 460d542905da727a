/// Byte-level BPE: training is deterministic and compresses, encoding round-trips any text, merges
/// round-trip through text and checkpoints, and malformed merges are refused naming the line.
module LongNet.Tests.BytePairEncodingTests

open System
open System.Text
open FsCheck.Xunit
open Xunit
open LongNet.Text

let private sampleText =
    String.replicate
        40
        "Initializes a new instance of the StringBuilder class. Appends a copy of the specified string to this instance. Returns: A reference to this instance after the append operation has completed.\n"

let private trained = lazy (BytePairEncoding.train 330 [ sampleText ])

[<Fact>]
let ``training learns the requested number of merges, deterministically`` () =
    let a = trained.Value
    let b = BytePairEncoding.train 330 [ sampleText ]
    Assert.Equal(330 - 257, a.Merges.Length)
    Assert.Equal(330, a.VocabSize)
    Assert.Equal<(int * int)[]>(a.Merges, b.Merges)

[<Fact>]
let ``every merge names ids defined before it`` () =
    let m = trained.Value

    m.Merges
    |> Array.iteri (fun i (a, b) -> Assert.True(a < 256 + i && b < 256 + i, $"merge {i} = ({a}, {b})"))

[<Fact>]
let ``the learnt merges compress the text they were learnt from`` () =
    let tokenizer = ByteBpeTokenizer trained.Value :> ITokenizer
    let ids = tokenizer.Encode sampleText
    let bytes = Encoding.UTF8.GetByteCount sampleText
    Assert.True(ids.Length * 3 < bytes, $"{ids.Length} ids for {bytes} bytes")

[<Fact>]
let ``the most frequent pair is merged first, ties broken by the smaller ids`` () =
    // chunks "ab" ×3, "cd" ×3 and "," ×5: (a, b) and (c, d) tie at 3, (a, b) has the smaller ids
    let m = BytePairEncoding.train 258 [ "ab,ab,ab,cd,cd,cd" ]
    Assert.Equal<(int * int)[]>([| int 'a', int 'b' |], m.Merges)

[<Fact>]
let ``training stops when no pair occurs twice`` () =
    let m = BytePairEncoding.train 1000 [ "abcdef" ]
    Assert.Empty m.Merges
    Assert.Equal(257, m.VocabSize)

[<Property(MaxTest = 200)>]
let ``encoding then decoding returns any text unchanged`` (text: FsCheck.NonNull<string>) =
    let tokenizer = ByteBpeTokenizer trained.Value :> ITokenizer
    // invalid UTF-16 (lone surrogates) cannot round-trip through UTF-8: compare with the UTF-8 view
    let expected = Encoding.UTF8.GetString(Encoding.UTF8.GetBytes text.Get)
    tokenizer.Decode(tokenizer.Encode text.Get) = expected

[<Fact>]
let ``ids are in range and the end-of-text id is the last`` () =
    let tokenizer = ByteBpeTokenizer trained.Value :> ITokenizer
    let ids = tokenizer.Encode "héllo wörld — 123 StringBuilder"
    Assert.All(ids, (fun i -> Assert.InRange(i, 0, tokenizer.VocabSize - 2)))
    Assert.Equal(Some(tokenizer.VocabSize - 1), tokenizer.EndOfText)
    Assert.Equal("", tokenizer.Decode [| tokenizer.VocabSize - 1 |])

[<Fact>]
let ``merges round-trip through their text form`` () =
    let m = trained.Value

    match BytePairEncoding.ofText (BytePairEncoding.toText m) with
    | Ok back -> Assert.Equal<(int * int)[]>(m.Merges, back.Merges)
    | Error e -> failwith e

[<Fact>]
let ``malformed merges are refused naming the line or the merge`` () =
    match BytePairEncoding.ofText "97 98\nx y\n" with
    | Error e -> Assert.Contains("line 2", e)
    | Ok _ -> failwith "accepted a malformed line"

    match BytePairEncoding.ofText "97 98\n256 300\n" with
    | Error e -> Assert.Contains("merge 1", e)
    | Ok _ -> failwith "accepted a merge naming a later id"

[<Fact>]
let ``a vocabulary size out of range is refused naming vocabSize`` () =
    let e =
        Assert.Throws<ArgumentException>(fun () -> BytePairEncoding.train 100 [ "abc" ] |> ignore)

    Assert.Equal("vocabSize", e.ParamName)

[<Fact>]
let ``a byte-level BPE tokenizer survives its checkpoint spec`` () =
    let tokenizer = ByteBpeTokenizer trained.Value :> ITokenizer

    match Tokenizer.ofSpec tokenizer.Spec with
    | Ok back -> Assert.Equal<int[]>(tokenizer.Encode sampleText, back.Encode sampleText)
    | Error e -> failwith e
