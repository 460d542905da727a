/// Teaching copying: copy problems (random tokens, the second half a repeat from 16 … 64 tokens back)
/// and the warm-up stream (the training text in order with random spans inserted and each repeated once,
/// no further back than asked; unchanged at share 0); deterministic; bad settings refused; training steps
/// read problems, then the stream, while each phase lasts.
[<Xunit.Collection("serial")>]
module LongNet.Tests.CopyWarmupTests

open System
open Xunit
open TorchSharp
open LongNet
open LongNet.Text
open LongNet.Training

let private input = Array.init 20_000 id

[<Fact>]
let ``share 0 leaves the text unchanged`` () =
    Assert.Equal<int[]>(input, CopyWarmup.stream 1L 0.0 1000 512 input)

[<Fact>]
let ``the stream is deterministic in its seed`` () =
    Assert.Equal<int[]>(CopyWarmup.stream 7L 0.3 1000 512 input, CopyWarmup.stream 7L 0.3 1000 512 input)
    Assert.NotEqual<int[]>(CopyWarmup.stream 7L 0.3 1000 512 input, CopyWarmup.stream 8L 0.3 1000 512 input)

[<Fact>]
let ``the text appears in order, and every repeat copies an inserted span within reach`` () =
    let reach = 1000
    let ids = 300
    let out, parts = CopyWarmup.streamWithParts 3L 0.4 reach ids input

    // the text's tokens, in order, once each
    let text =
        Array.zip out parts
        |> Array.filter (fun (_, p) -> p = StreamPart.Text)
        |> Array.map fst

    Assert.Equal<int[]>(input, text)

    // maximal runs of one kind of token: (start, tokens)
    let runs kind =
        [
            let mutable i = 0

            while i < parts.Length do
                if parts.[i] = kind then
                    let j = Array.FindIndex(parts, i, (fun p -> p <> kind))
                    let j = if j < 0 then parts.Length else j
                    yield i, out.[i .. j - 1]
                    i <- j
                else
                    i <- i + 1
        ]

    let spans = runs StreamPart.Span

    for _, span in spans do
        Assert.InRange(span.Length, CopyWarmup.minSpan, CopyWarmup.maxSpan)
        Assert.All(span, (fun t -> Assert.InRange(t, 0, ids - 1)))

    let copies = runs StreamPart.Copy
    Assert.NotEmpty copies

    // a run of repeats may hold several adjacent ones: each piece equals a span within reach before it
    for start, tokens in copies do
        let mutable k = 0

        while k < tokens.Length do
            let matched =
                spans
                |> List.tryFind (fun (s, span) ->
                    s < start + k
                    && start + k - s <= reach
                    && k + span.Length <= tokens.Length
                    && tokens.[k .. k + span.Length - 1] = span)

            match matched with
            | Some(_, span) -> k <- k + span.Length
            | None -> failwith $"the repeat at {start + k} copies no span inserted within {reach} tokens before it"

    let ratio = float out.Length / float input.Length
    Assert.InRange(ratio, 1.1, 1.4)

[<Fact>]
let ``a copy problem repeats half of its random tokens from 16 to 64 back`` () =
    let rng = Rng.Create 5L

    for _ in 1..200 do
        let p = CopyWarmup.copyProblem rng 100
        Assert.Equal(CopyWarmup.problemLength + 1, p.Length)
        Assert.All(p, (fun t -> Assert.InRange(t, 0, 99)))
        let span = CopyWarmup.problemLength / 2

        // some distance d and start s make p[s + d .. s + d + span - 1] = p[s .. s + span - 1]
        let found =
            [ CopyWarmup.minSpan .. span ]
            |> List.exists (fun d ->
                [ 0 .. p.Length - d - span ]
                |> List.exists (fun s -> p.[s + d .. s + d + span - 1] = p.[s .. s + span - 1]))

        Assert.True(found, "no repeat found")

[<Fact>]
let ``bad settings are refused naming the parameter`` () =
    let e =
        Assert.Throws<ArgumentException>(fun () -> CopyWarmup.stream 1L 1.0 1000 512 input |> ignore)

    Assert.Equal("share", e.ParamName)

    let e =
        Assert.Throws<ArgumentException>(fun () -> CopyWarmup.stream 1L 0.2 10 512 input |> ignore)

    Assert.Equal("reach", e.ParamName)

    let e =
        Assert.Throws<ArgumentException>(fun () -> CopyWarmup.stream 1L 0.2 1000 1 input |> ignore)

    Assert.Equal("ids", e.ParamName)

    let e =
        Assert.Throws<ArgumentException>(fun () -> CopyWarmup.copyProblem (Rng.Create 1L) 1 |> ignore)

    Assert.Equal("ids", e.ParamName)

[<Fact>]
let ``copy warm-up settings out of range are refused naming the field`` () =
    let c =
        { TrainConfig.defaults with
            SeqLen = 1024
            CopyWarmupShare = 0.3
            CopyWarmupSteps = 100
        }

    Assert.True((TrainConfig.validate c).IsOk)

    for bad, field in
        [
            { c with CopyWarmupShare = 1.0 }, "copyWarmupShare"
            { c with CopyWarmupSteps = 0 }, "copyWarmupSteps"
            { c with
                SeqLen = CopyWarmup.minWindow - 1
            },
            "copyWarmupShare"
            { c with Task = PasskeySamples }, "copyWarmupShare"
            { c with CopyProblemSteps = -1 }, "copyProblemSteps"
            { c with
                CurriculumStartLength = 256
                CurriculumSteps = 10
            },
            "curriculumStartLength"
            { c with
                CopyWarmupShare = 0.0
                CopyWarmupSteps = 0
                CopyProblemSteps = 5
                Task = PasskeySamples
            },
            "copyProblemSteps"
        ] do
        match TrainConfig.validate bad with
        | Error e -> Assert.Equal(field, e.Parameter)
        | Ok _ -> failwith $"accepted {bad.CopyWarmupShare} / {bad.CopyWarmupSteps}"

/// Four training steps of the tiny model with `train` on `text`, from the same seed and initialisation.
let private fourSteps (train: TrainConfig) (text: int[]) : StepReport list =
    Native.ensureLoaded () |> ignore
    torch.set_num_threads 1

    use s =
        TrainSession.Create({ RunConfig.tiny with Train = train }, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    [
        for _ in 1..4 ->
            match s.TrainStep text with
            | Ok r -> r
            | Error e -> failwith e
    ]

[<Fact>]
let ``training steps read the warm-up stream while the warm-up lasts`` () =
    let random = Random 5
    let text = Array.init 4000 (fun _ -> random.Next 256)

    let losses share =
        let train =
            { RunConfig.tiny.Train with
                Steps = 4
                BatchSize = 1
                SeqLen = CopyWarmup.minWindow
                WarmupSteps = 1
                CopyWarmupShare = share
                CopyWarmupSteps = (if share > 0.0 then 2 else 0)
            }

        fourSteps train text |> List.map _.Loss

    let plain = losses 0.0
    let warm = losses 0.5
    // same seed and initialisation: only the stream read by the first steps differs
    Assert.NotEqual(plain.Head, warm.Head)
    Assert.Equal<float list>(warm, losses 0.5)

[<Fact>]
let ``training steps solve copy problems first, then read the text`` () =
    let random = Random 6
    let text = Array.init 4000 (fun _ -> random.Next 256)

    let reports problems =
        let train =
            { RunConfig.tiny.Train with
                Steps = 4
                BatchSize = 2
                SeqLen = 64
                WarmupSteps = 1
                CopyProblemSteps = problems
            }

        fourSteps train text |> List.map (fun r -> r.Tokens, r.Loss)

    let plain = reports 0
    let withProblems = reports 2
    let problemTokens = int64 (CopyWarmup.problemsPerStep * CopyWarmup.problemLength)
    // two steps of problems (8 × 128 tokens each), then text windows (2 × 64 tokens)
    Assert.Equal<int64 list>([ problemTokens; problemTokens; 128L; 128L ], withProblems |> List.map fst)
    Assert.Equal<int64 list>([ 128L; 128L; 128L; 128L ], plain |> List.map fst)
    Assert.NotEqual(snd plain.Head, snd withProblems.Head)
    // deterministic
    Assert.Equal<(int64 * float) list>(withProblems, reports 2)
