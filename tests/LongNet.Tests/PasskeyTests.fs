/// Passkey prompts: exact token length, the pass-key sentence at the requested depth, the closing
/// question last, exact-match scoring, and errors naming the parameter.
module LongNet.Tests.PasskeyTests

open System
open Xunit
open FsCheck
open FsCheck.FSharp
open FsCheck.Xunit
open LongNet.Text

let private bytes = Tokenizer.byteLevel ()

[<Property(MaxTest = 100)>]
let ``a prompt has exactly the target length, one pass-key sentence near the depth, and ends with the question``
    (extra: NonNegativeInt)
    (depthSeed: NonNegativeInt)
    =
    let passkey = "40372"
    let frame = Passkey.frameLength bytes passkey
    let target = frame + extra.Get % 3000
    let depth = float (depthSeed.Get % 1001) / 1000.0
    let p = Passkey.build bytes target depth passkey
    let needle = Passkey.needle passkey
    let budget = target - frame

    let longestSentence =
        Passkey.fillerSentences |> Array.map (fun s -> s.Length + 1) |> Array.max

    let wanted = int (Math.Floor(depth * float budget))

    p.Tokens.Length = target
    && p.Text.EndsWith Passkey.question
    && p.Text.IndexOf needle = p.NeedleStart
    && p.Text.LastIndexOf needle = p.NeedleStart
    && p.NeedleStart <= wanted
    && wanted - p.NeedleStart < longestSentence

[<Fact>]
let ``depth 0 puts the pass key first and depth 1 just before the question`` () =
    let first = Passkey.build bytes 1000 0.0 "12345"
    Assert.StartsWith("The pass key is 12345. Remember it. 12345 is the pass key.", first.Text)
    let last = Passkey.build bytes 1000 1.0 "12345"

    Assert.EndsWith(
        "The pass key is 12345. Remember it. 12345 is the pass key. What is the pass key? The pass key is",
        last.Text
    )

    Assert.StartsWith(
        "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
        last.Text
    )

[<Fact>]
let ``the pass key sits at a sentence boundary near the middle at depth 0.5`` () =
    let p = Passkey.build bytes 4096 0.5 "99999"
    let before = p.Text.Substring(0, p.NeedleStart)
    Assert.True(before.EndsWith ". ")
    Assert.InRange(p.NeedleStart, 2048 - 60 - 30, 2048)

[<Fact>]
let ``the shortest prompt is the frame alone`` () =
    let frame = Passkey.frameLength bytes "123"
    let p = Passkey.build bytes frame 0.3 "123"
    Assert.Equal(Passkey.needle "123" + Passkey.question, p.Text)

[<Theory>]
[<InlineData("12345", " 12345.", true)>]
[<InlineData("12345", "12345 is the key", true)>]
[<InlineData("12345", " 12346", false)>]
[<InlineData("12345", " 123456", false)>]
[<InlineData("12345", " 1234", false)>]
[<InlineData("12345", "", false)>]
[<InlineData("12345", " the 12345", false)>]
let ``scoring is an exact match of the generated digits`` (passkey: string, generated: string, expected: bool) =
    Assert.Equal(expected, Passkey.score passkey generated)

[<Fact>]
let ``random pass keys have five digits`` () =
    let rng = Random(3)

    for _ in 1..100 do
        let key = Passkey.randomPasskey rng
        Assert.Equal(5, key.Length)
        Assert.True(key |> Seq.forall Char.IsAsciiDigit)

[<Theory>]
[<InlineData(-0.1)>]
[<InlineData(1.5)>]
[<InlineData(Double.NaN)>]
let ``a depth outside 0 to 1 is rejected naming depth`` (depth: float) =
    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> Passkey.build bytes 1000 depth "12345" |> ignore)

    Assert.Equal("depth", e.ParamName)

[<Fact>]
let ``a length shorter than the frame is rejected naming targetLength`` () =
    let frame = Passkey.frameLength bytes "12345"

    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> Passkey.build bytes (frame - 1) 0.5 "12345" |> ignore)

    Assert.Equal("targetLength", e.ParamName)
    Assert.Contains(string frame, e.Message)

[<Fact>]
let ``a pass key that is not digits is rejected naming passkey`` () =
    let e =
        Assert.Throws<ArgumentException>(fun () -> Passkey.build bytes 1000 0.5 "12a45" |> ignore)

    Assert.Equal("passkey", e.ParamName)

[<Property(MaxTest = 100)>]
let ``a prompt at a filler phase keeps the frame and length, and its filler is the repeating text from that phase``
    (extra: NonNegativeInt)
    (depthSeed: NonNegativeInt)
    (phaseSeed: NonNegativeInt)
    =
    let passkey = "40372"
    let frame = Passkey.frameLength bytes passkey
    let target = frame + extra.Get % 1000
    let depth = float (depthSeed.Get % 1001) / 1000.0
    let phase = phaseSeed.Get
    let p = Passkey.buildAtPhase bytes target depth passkey phase
    let needle = Passkey.needle passkey

    let cycle =
        Passkey.fillerSentences |> Array.map (fun s -> s + " ") |> String.concat ""

    let filler = p.Text.Remove(p.NeedleStart, needle.Length)
    let filler = filler.Substring(0, filler.Length - Passkey.question.Length)

    let expected =
        String(Array.init filler.Length (fun i -> cycle.[(phase + i) % cycle.Length]))
    // the needle starts the text, follows a sentence's ". ", or closes the filler
    let atBoundary =
        p.NeedleStart = 0
        || p.Text.Substring(0, p.NeedleStart).EndsWith ". "
        || p.NeedleStart = target - frame

    let wanted = int (Math.Floor(depth * float (target - frame)))
    // no sentence of the filler starts between the needle and the wanted position
    let skipped =
        [ p.NeedleStart + 1 .. min wanted (filler.Length - 1) ]
        |> List.exists (fun i -> filler.Substring(0, i).EndsWith ". ")

    p.Tokens.Length = target
    && p.Text.EndsWith Passkey.question
    && p.Text.IndexOf needle = p.NeedleStart
    && filler = expected
    && atBoundary
    && p.NeedleStart <= wanted
    && not skipped

/// The prompt as the first version of `build` laid it out (whole sentences from the first, the last cut
/// at the budget, the needle at the last sentence end ≤ depth·budget), written out independently.
let private sentenceByDefinition (target: int) (depth: float) (passkey: string) =
    let budget = target - Passkey.frameLength bytes passkey
    let sentences = Passkey.fillerSentences |> Array.map (fun s -> s + " ")
    let filler = Text.StringBuilder()
    let ends = ResizeArray [ 0 ]
    let mutable i = 0

    while filler.Length < budget do
        let s = sentences.[i % sentences.Length]
        filler.Append(s.Substring(0, min s.Length (budget - filler.Length))) |> ignore
        ends.Add filler.Length
        i <- i + 1

    let at =
        ends
        |> Seq.filter (fun e -> e <= int (Math.Floor(depth * float budget)))
        |> Seq.max

    let filler = filler.ToString()

    filler.Substring(0, at)
    + Passkey.needle passkey
    + filler.Substring at
    + Passkey.question

[<Fact>]
let ``phase 0 lays the prompt out sentence by sentence from the first filler sentence`` () =
    let frame = Passkey.frameLength bytes "55555"

    for target in [ frame; frame + 1; frame + 17; 700; 1000 ] do
        for depth in [ 0.0; 0.3; 0.5; 0.99; 1.0 ] do
            Assert.Equal(
                sentenceByDefinition target depth "55555",
                (Passkey.buildAtPhase bytes target depth "55555" 0).Text
            )

            Assert.Equal(sentenceByDefinition target depth "55555", (Passkey.build bytes target depth "55555").Text)

[<Fact>]
let ``a phase near Int32.MaxValue is the same prompt as its remainder in the filler cycle`` () =
    let cycle =
        Passkey.fillerSentences |> Array.sumBy (fun s -> (bytes.Encode(s + " ")).Length)

    let huge = Int32.MaxValue
    let p = Passkey.buildAtPhase bytes 900 0.5 "12345" huge
    Assert.Equal<int[]>((Passkey.buildAtPhase bytes 900 0.5 "12345" (huge % cycle)).Tokens, p.Tokens)

[<Fact>]
let ``training samples include the depth-1 layout: the key right before the question`` () =
    let rng = Random(2)
    let closing = bytes.Encode(" is the pass key. What is the pass key?")

    let last =
        [ 1..200 ]
        |> List.filter (fun _ ->
            let s = Passkey.trainingSample bytes 300 rng

            [ 0 .. s.Length - closing.Length ]
            |> List.exists (fun i -> s.[i .. i + closing.Length - 1] = closing))

    Assert.InRange(last.Length, 10, 60)

[<Fact>]
let ``training samples put the pass key at many different token positions`` () =
    let rng = Random(11)
    let needle = bytes.Encode "The pass key is "

    let starts =
        [
            for _ in 1..200 do
                let sample = Passkey.trainingSample bytes 256 rng

                yield
                    [ 0 .. sample.Length - needle.Length ]
                    |> List.find (fun i -> sample.[i .. i + needle.Length - 1] = needle)
        ]
        |> List.distinct

    // sentence-boundary snapping alone would allow about a dozen positions at this length
    Assert.True(starts.Length >= 60, $"only {starts.Length} distinct pass-key positions in 200 samples")

[<Fact>]
let ``a negative phase is rejected naming phase`` () =
    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () -> Passkey.buildAtPhase bytes 1000 0.5 "12345" -1 |> ignore)

    Assert.Equal("phase", e.ParamName)

[<Fact>]
let ``the passkey corpus holds no training text and 32 fixed-seed validation samples of seqLen + 1 tokens`` () =
    let seqLen = Passkey.minimumSampleLength bytes + 7
    let corpus = Passkey.corpus bytes seqLen
    Assert.Empty corpus.Train
    Assert.Equal(32, corpus.Documents)
    Assert.Equal(32 * (seqLen + 1), corpus.Validation.Length)
    Assert.Equal(int64 corpus.Validation.Length, corpus.Characters)
    Assert.Equal<int[]>(corpus.Validation, (Passkey.corpus bytes seqLen).Validation)
    let rng = Random(20_241_005)
    Assert.Equal<int[]>(Passkey.trainingSample bytes (seqLen + 1) rng, corpus.Validation.[..seqLen])
