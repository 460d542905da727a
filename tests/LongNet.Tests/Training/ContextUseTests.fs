/// Context use: the same targets are scored at every context length, a segment-local model gains
/// nothing from context beyond its segment, position buckets add up to the whole, the layer-by-layer
/// long forward equals the plain forward, and bad requests are refused before any work.
[<Xunit.Collection("serial")>]
module LongNet.Tests.ContextUseTests

open System
open Xunit
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Training

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

let private model (segments: int list) (rates: int list) =
    torch.manual_seed 3L |> ignore

    let m =
        new LongNetModel(
            { ModelConfig.defaults with
                VocabSize = 23
                EmbedDim = 12
                Layers = 2
                Heads = 2
                FeedForwardDim = 16
                Groups = Groups.ofPairsOrRaise (List.zip segments rates)
            }
        )

    m.``to`` torch.ScalarType.Float64 |> ignore
    m

let private text (n: int) =
    let r = Random 5
    Array.init n (fun _ -> r.Next 23)

// NLL of each target of `tokens.[start .. start + length]` from the plain forward, float64.
let private plainNll (m: LongNetModel) (tokens: int[]) (start: int) (length: int) =
    use _ = torch.no_grad ()
    use scope = torch.NewDisposeScope()
    let data = Array.init (length + 1) (fun j -> int64 tokens.[start + j])
    let x = torch.tensor(data).view(1L, int64 length + 1L)
    let logits = m.forward (x.narrow (1L, 0L, int64 length))

    let nll =
        torch.nn.functional.cross_entropy (
            logits.reshape (-1L, 23L),
            x.narrow(1L, 1L, int64 length).reshape -1L,
            reduction = torch.nn.Reduction.None
        )

    nll.data<float>().ToArray()

[<Fact>]
let ``perplexity at each context scores the last targets of windows cut to that context`` () =
    init.Force()
    use m = model [ 8; 32 ] [ 1; 2 ]
    let tokens = text 600
    let contexts, targets, windows = [ 4; 20; 40 ], 8, 3

    let results =
        ContextUse.perplexityByContext m tokens contexts targets windows
        |> Result.defaultWith failwith

    let starts = ContextUse.windowStarts tokens.Length (40 + targets) windows
    Assert.Equal(3, starts.Length)

    for r in results do
        let expected =
            starts
            |> Array.collect (fun s ->
                let shift = 40 - r.Context
                let nll = plainNll m tokens (s + shift) (r.Context + targets)
                nll.[r.Context ..])
            |> Array.average

        Assert.Equal(int64 (windows * targets), r.Targets)
        Assert.True(abs (r.MeanNll - expected) < 1e-5, $"context {r.Context}: {r.MeanNll} vs {expected}")

[<Fact>]
let ``a model that attends only inside segments of w gains nothing from context beyond w`` () =
    init.Force()
    use m = model [ 8 ] [ 1 ]
    let tokens = text 400

    // targets = one whole segment at the end of every window: it sees only itself, whatever the context
    let results =
        ContextUse.perplexityByContext m tokens [ 8; 16; 64 ] 8 4
        |> Result.defaultWith failwith

    let first = results.Head.MeanNll

    for r in results do
        Assert.True(abs (r.MeanNll - first) < 1e-9, $"context {r.Context}: {r.MeanNll} vs {first}")

[<Fact>]
let ``losses by position bucket add up to the mean over every target`` () =
    init.Force()
    use m = model [ 8; 32 ] [ 1; 2 ]
    let tokens = text 500
    let length = 40

    let buckets =
        ContextUse.lossByPosition m tokens length [ 0; 5; 17; 40 ] 3
        |> Result.defaultWith failwith

    let starts = ContextUse.windowStarts tokens.Length length 3

    let expected =
        starts |> Array.collect (fun s -> plainNll m tokens s length) |> Array.average

    let total =
        (buckets |> List.sumBy (fun b -> b.MeanNll * float b.Targets))
        / float (buckets |> List.sumBy _.Targets)

    Assert.Equal<int list>([ 0; 5; 17 ], buckets |> List.map _.From)
    Assert.Equal<int list>([ 4; 16; 39 ], buckets |> List.map _.To)
    Assert.True(abs (total - expected) < 1e-9, $"{total} vs {expected}")

[<Fact>]
let ``default buckets grow by 4 from 256 and end at the window length`` () =
    Assert.Equal<int list>([ 0; 256; 1024; 4096; 8192 ], ContextUse.defaultBuckets 8192)
    Assert.Equal<int list>([ 0; 256; 1024; 3000 ], ContextUse.defaultBuckets 3000)
    Assert.Equal<int list>([ 0; 100 ], ContextUse.defaultBuckets 100)

[<Fact>]
let ``the layer-by-layer chunked forward gives the plain forward's losses`` () =
    init.Force()
    use m = model [ 8; 32 ] [ 1; 4 ]
    let tokens = text 200
    let n = 150
    let expected = plainNll m tokens 0 n

    use _ = torch.no_grad ()
    use scope = torch.NewDisposeScope()

    let x =
        torch.tensor(Array.init (n + 1) (fun j -> int64 tokens.[j])).view(1L, int64 n + 1L)

    let chunked =
        m.NllChunked(x.narrow (1L, 0L, int64 n), x.narrow (1L, 1L, int64 n), 7).data<float>().ToArray()

    for j in 0 .. n - 1 do
        Assert.True(abs (chunked.[j] - expected.[j]) < 1e-9, $"position {j}: {chunked.[j]} vs {expected.[j]}")

    let long = ContextUse.longForward m tokens n |> Result.defaultWith failwith

    Assert.True(abs (long.MeanNll - Array.average expected) < 1e-9)
    Assert.Equal(int64 n, long.Tokens)

[<Fact>]
let ``bad context requests are refused naming what is wrong`` () =
    init.Force()
    use m = model [ 8 ] [ 1 ]
    let tokens = text 100

    let refused contexts targets (fragment: string) =
        match ContextUse.perplexityByContext m tokens contexts targets 2 with
        | Error e -> Assert.Contains(fragment, e)
        | Ok _ -> failwith $"accepted contexts {contexts}"

    refused [ 16; 8 ] 4 "ascending"
    refused [ 0; 8 ] 4 "≥ 1"
    refused [ 8; 200 ] 4 "the text has 100"
    refused [] 4 "at least one"
    refused [ 8 ] 0 "targets"

[<Fact>]
let ``a long forward that would not fit in memory is refused up front with the estimate`` () =
    init.Force()
    torch.manual_seed 1L |> ignore

    use wide =
        new LongNetModel(
            { ModelConfig.defaults with
                VocabSize = 23
                EmbedDim = 4096
                Layers = 1
                Heads = 8
                FeedForwardDim = 16
            }
        )

    let length = 1 <<< 20

    match ContextUse.longForward wide (Array.zeroCreate (length + 1)) length with
    | Error e ->
        Assert.Contains("MB", e)
        Assert.Contains("needs about", e)
    | Ok _ -> failwith "a 1M-token forward of a 4096-wide model was not refused"

[<Fact>]
let ``the peak of a piece of work is measured where Linux can reset it`` () =
    init.Force()

    let resettable =
        try
            use file =
                new IO.FileStream("/proc/self/clear_refs", IO.FileMode.Open, IO.FileAccess.Write)

            file.Write([| byte '5' |], 0, 1)
            true
        with _ ->
            false // not Linux, or a sandbox that refuses the reset: nothing to check

    if resettable then
        let peak =
            ProcessMemory.measure (fun () ->
                use big = torch.ones (50_000_000L) // 200 MB of float32, touched
                big.sum().item<float32>() |> ignore)

        match peak with
        | Some p -> Assert.True(p.AboveBaselineMb > 150.0, $"peak above baseline {p.AboveBaselineMb} MB")
        | None -> failwith "the peak was not measured although /proc/self/clear_refs can be reset"

[<Fact>]
let ``status lines are read with and without a space before a wide value`` () =
    Assert.Equal(1948.0, ProcessMemory.kbOfLine "VmHWM:\t    1948 kB")
    Assert.Equal(12345678.0, ProcessMemory.kbOfLine "VmHWM:\t12345678 kB")
