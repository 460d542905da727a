/// The LongNet model with one sequence split over simulated ranks (`SequenceSlice`): logits, loss and
/// parameter gradients equal the single-process model's (float64, within 1e-10), split evaluation equals
/// single-process evaluation, and bad splits are refused with errors naming the parameter.
/// Serial: the models are built after seeding libtorch's global generator.
[<Xunit.Collection("serial")>]
module LongNet.Tests.SequenceParallelModelTests

open System
open Xunit
open TorchSharp
open LongNet
open LongNet.Distributed
open LongNet.Modules
open LongNet.Text
open LongNet.Training

let private tolerance = 1e-10

let private init = lazy (Native.ensureLoaded () |> ignore)

/// A small model: 3 heads of width 4, groups (4,1) (8,2) (16,4), no dropout (the split must be exact).
let private modelConfig (architecture: Architecture) (position: PositionEncoding) (subLayerNorm: bool) =
    { RunConfig.tiny.Model with
        VocabSize = 23
        EmbedDim = 12
        Heads = 3
        Layers = 2
        FeedForwardDim = 20
        Groups = Groups.ofPairsOrRaise [ 4, 1; 8, 2; 16, 4 ]
        Architecture = architecture
        Position = position
        SubLayerNorm = subLayerNorm
        Dropout = 0.0
        MaxPositions = 64
    }

/// `count` models with the same float64 initialisation, built one after another (the generator is global).
let private models (config: ModelConfig) (count: int) =
    Array.init count (fun _ ->
        torch.manual_seed 31L |> ignore
        let m = new LongNetModel(config)
        m.``to`` torch.ScalarType.Float64 |> ignore
        m)

let private maxDiff (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float>()

let private tokenBatch (batch: int64) (n: int64) (vocabulary: int) =
    torch.manual_seed 32L |> ignore
    torch.randint (int64 vocabulary, [| batch; n |], dtype = torch.int64)

let private gradients (model: LongNetModel) =
    model.parameters () |> Seq.map (fun p -> p.grad.detach().clone()) |> Seq.toArray

[<Theory>]
[<InlineData(1, "decoder", "rope", false)>]
[<InlineData(2, "decoder", "xpos", false)>]
[<InlineData(3, "encoder", "rope", true)>]
[<InlineData(4, "decoder", "none", false)>]
let ``the model split over P ranks gives the whole sequence's logits and summed gradients equal its gradients``
    (ranks: int, architecture: string, position: string, subLayerNorm: bool)
    =
    init.Force()
    use scope = torch.NewDisposeScope()

    let architecture = if architecture = "encoder" then Encoder else Decoder

    let position =
        match position with
        | "rope" -> Rope Rope.defaultRope
        | "xpos" -> XPos Rope.defaultXPos
        | _ -> NoPosition

    let config = modelConfig architecture position subLayerNorm
    // n = 37: not a multiple of P or of any segment; segments cross every slice boundary
    let n = 37L
    let tokens = tokenBatch 2L (n + 1L) config.VocabSize
    let input, target = tokens.narrow (1L, 0L, n), tokens.narrow (1L, 1L, n)
    let all = models config (ranks + 1)
    let whole = all.[0]
    let expectedLogits = whole.forward input
    (Evaluate.crossEntropy expectedLogits target).backward()
    let expectedGradients = gradients whole

    let results =
        Simulated.run ranks (fun comm ->
            use scope = torch.NewDisposeScope()
            let model = all.[comm.Rank + 1]
            let slice = SequenceSlice(comm, n)

            let part (t: torch.Tensor) =
                t.narrow (1L, slice.Start, slice.Length)

            let logits = model.ForwardSlice(part input, slice)
            // this rank's tokens' share of the whole sequence's mean loss
            use share = (float slice.Length / float n).ToScalar()
            let loss = (Evaluate.crossEntropy logits (part target)).mul share

            loss.backward ()
            DataParallel.sumGradients comm (model.parameters ())
            let kept = logits.detach().clone()
            kept.DetachFromDisposeScope(), gradients model |> Array.map _.DetachFromDisposeScope())

    let logits = torch.cat (results |> Array.map fst, 1L)
    Assert.True(maxDiff expectedLogits logits <= tolerance, $"logits differ by {maxDiff expectedLogits logits:E2}")

    for _, grads in results do
        let worst = Array.map2 maxDiff expectedGradients grads |> Array.max
        Assert.True(worst <= tolerance, $"parameter gradients differ by {worst:E2}")

    for m in all do
        m.Dispose()

[<Fact>]
let ``split evaluation on 3 ranks gives the single-process perplexity`` () =
    init.Force()
    let config = modelConfig Decoder (Rope Rope.defaultRope) false
    let all = models config 4
    let rng = Random 5
    let tokens = Array.init 400 (fun _ -> rng.Next config.VocabSize)

    let expected =
        match Evaluate.perplexity all.[0] tokens 29 200 with
        | Ok r -> r.MeanNll
        | Error e -> failwith e

    let split =
        Simulated.run 3 (fun comm ->
            match Evaluate.perplexitySplit comm all.[comm.Rank + 1] tokens 29 200 with
            | Ok r -> r.MeanNll
            | Error e -> failwith e)

    for nll in split do
        Assert.True(abs (nll - expected) <= tolerance, $"split NLL {nll} vs single process {expected}")

    for m in all do
        m.Dispose()

[<Fact>]
let ``a slice of the wrong length is refused with an error naming tokens`` () =
    init.Force()
    let config = modelConfig Decoder NoPosition false
    let model = (models config 1).[0]

    let errors =
        Simulated.run 2 (fun comm ->
            let slice = SequenceSlice(comm, 9L)
            // rank 0 holds 5 positions, rank 1 holds 4; both pass 3
            let error =
                Assert.Throws<ArgumentException>(fun () ->
                    model.ForwardSlice(torch.zeros ([| 1L; 3L |], dtype = torch.int64), slice)
                    |> ignore)

            error.ParamName, error.Message)

    for name, message in errors do
        Assert.Equal("tokens", name)
        Assert.Contains("tokens must be [batch,", message)

    model.Dispose()

[<Fact>]
let ``a split shorter than the rank count is refused: every rank needs a position`` () =
    init.Force()

    let names =
        Simulated.run 3 (fun comm ->
            try
                SequenceSlice(comm, 2L) |> ignore
                "accepted"
            with :? ArgumentException as e ->
                e.ParamName)

    Assert.All(names, (fun name -> Assert.Equal("n", name)))

    let config =
        { RunConfig.tiny with
            Train = { RunConfig.tiny.Train with SeqLen = 2 }
        }

    let results =
        Simulated.run 3 (fun comm ->
            match TrainSession.Create(config, Tokenizer.byteLevel (), comm) with
            | Ok session ->
                (session :> IDisposable).Dispose()
                "created"
            | Error e -> e)

    for message in results do
        Assert.StartsWith("train.seqLen: 2 positions cannot be split over 3 ranks", message)
