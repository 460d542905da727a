/// The copy warm-up's stream: deterministic, the training text in order with some chunks repeated no
/// further back than asked, about (1 + share) times as long, unchanged at share 0; bad settings refused.
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
    Assert.Equal<int[]>(input, CopyWarmup.stream 1L 0.0 1000 input)

[<Fact>]
let ``the stream is deterministic in its seed`` () =
    Assert.Equal<int[]>(CopyWarmup.stream 7L 0.3 1000 input, CopyWarmup.stream 7L 0.3 1000 input)
    Assert.NotEqual<int[]>(CopyWarmup.stream 7L 0.3 1000 input, CopyWarmup.stream 8L 0.3 1000 input)

[<Fact>]
let ``the text appears in order, and every repeat copies an earlier span within reach`` () =
    let reach = 1000
    let out = CopyWarmup.stream 3L 0.4 reach input
    let first = Collections.Generic.Dictionary<int, int>()
    let mutable expected = 0

    for i in 0 .. out.Length - 1 do
        let t = out.[i]

        match first.TryGetValue t with
        | true, f ->
            // a repeat: its original lies at most reach (+ the chunk it sits in) tokens back
            Assert.True(i - f <= reach + CopyWarmup.maxChunk, $"token {t} repeated {i - f} positions back")
        | _ ->
            Assert.Equal(expected, t) // first occurrences follow the text
            expected <- expected + 1
            first.[t] <- i

    Assert.Equal(input.Length, expected)
    let ratio = float out.Length / float input.Length
    Assert.InRange(ratio, 1.25, 1.55)

[<Fact>]
let ``bad settings are refused naming the parameter`` () =
    let e =
        Assert.Throws<ArgumentException>(fun () -> CopyWarmup.stream 1L 1.0 1000 input |> ignore)

    Assert.Equal("share", e.ParamName)

    let e =
        Assert.Throws<ArgumentException>(fun () -> CopyWarmup.stream 1L 0.2 10 input |> ignore)

    Assert.Equal("reach", e.ParamName)

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
            { c with SeqLen = 200 }, "copyWarmupShare"
            { c with Task = PasskeySamples }, "copyWarmupShare"
        ] do
        match TrainConfig.validate bad with
        | Error e -> Assert.Equal(field, e.Parameter)
        | Ok _ -> failwith $"accepted {bad.CopyWarmupShare} / {bad.CopyWarmupSteps}"

[<Fact>]
let ``training steps read the warm-up stream while the warm-up lasts`` () =
    Native.ensureLoaded () |> ignore
    torch.set_num_threads 1
    let random = Random 5
    let text = Array.init 4000 (fun _ -> random.Next 256)

    let config share =
        { RunConfig.tiny with
            Train =
                { RunConfig.tiny.Train with
                    Steps = 4
                    BatchSize = 1
                    SeqLen = 320 // the warm-up repeats chunks of up to 256 tokens
                    WarmupSteps = 1
                    CopyWarmupShare = share
                    CopyWarmupSteps = (if share > 0.0 then 2 else 0)
                }
        }

    let losses share =
        use s =
            TrainSession.Create(config share, Tokenizer.byteLevel ())
            |> Result.defaultWith failwith

        [
            for _ in 1..4 ->
                match s.TrainStep text with
                | Ok r -> r.Loss
                | Error e -> failwith e
        ]

    let plain = losses 0.0
    let warm = losses 0.5
    // same seed and initialisation: only the stream read by the first steps differs
    Assert.NotEqual(plain.Head, warm.Head)
    Assert.Equal<float list>(warm, losses 0.5)
