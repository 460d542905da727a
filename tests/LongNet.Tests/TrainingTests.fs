/// Training and text: resumed runs equal uninterrupted ones, checkpoints are atomic and self-checking,
/// AdamW matches libtorch's, the schedule, sampling filters, tokenizers, corpora, evaluation and
/// generation — and bad inputs give errors that say what to do. Serial: training runs seed libtorch's
/// global generator, which parallel tests would also draw from.
[<Xunit.Collection("serial")>]
module LongNet.Tests.TrainingTests

open System
open System.IO
open Xunit
open FsCheck
open FsCheck.FSharp
open FsCheck.Xunit
open TorchSharp
open LongNet
open LongNet.Modules
open LongNet.Text
open LongNet.Training
open LongNet.Tests.TestSupport

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

let private text =
    String.replicate 40 "The river ran past the mill and under the old stone bridge. "

let private tokens = Text.Encoding.UTF8.GetBytes text |> Array.map int

/// A tiny run: 2 layers, embed 16, dropout and accumulation so that every random source matters.
let private tinyRun (precision: Precision) : RunConfig =
    { RunConfig.tiny with
        Model =
            { RunConfig.tiny.Model with
                EmbedDim = 16
                Heads = 2
                FeedForwardDim = 24
                Groups = Groups.ofPairsOrRaise [ 8, 1; 16, 2 ]
                Dropout = 0.1
            }
        Train =
            { RunConfig.tiny.Train with
                Steps = 6
                BatchSize = 2
                SeqLen = 24
                Accumulation = 2
                WarmupSteps = 2
                Precision = precision
                EvalTokens = 64
            }
    }

let private losses (session: TrainSession) (count: int) =
    [
        for _ in 1..count do
            match session.TrainStep tokens with
            | Ok r -> r.Loss
            | Error e -> failwith e
    ]

let private resumeMatches (precision: Precision) =
    init.Force()
    use dir = new TempDir("training")
    let config = tinyRun precision
    let tokenizer = Tokenizer.byteLevel ()

    let uninterrupted =
        use s = TrainSession.Create(config, tokenizer) |> Result.defaultWith failwith
        losses s 6

    let first =
        use s = TrainSession.Create(config, tokenizer) |> Result.defaultWith failwith
        let l = losses s 3
        s.Save(dir.File "run.ckpt")
        l

    let second =
        let loaded = Checkpoint.load (dir.File "run.ckpt") |> Result.defaultWith failwith
        use s = TrainSession.Resume(loaded, None) |> Result.defaultWith failwith
        Assert.Equal(3, s.Step)
        losses s 3

    let resumed = first @ second

    for a, b in List.zip uninterrupted resumed do
        Assert.True(abs (a - b) <= 1e-6, $"uninterrupted {uninterrupted} vs resumed {resumed}")

[<Fact>]
let ``a resumed run gives the same losses as an uninterrupted one (fp32)`` () = resumeMatches Fp32

[<Fact>]
let ``a resumed run gives the same losses as an uninterrupted one (bf16 with fp32 master weights)`` () =
    resumeMatches Bf16

[<Fact>]
let ``a failed save leaves the previous checkpoint loadable and no temporary file`` () =
    init.Force()
    use dir = new TempDir("training")
    let path = dir.File "run.ckpt"

    use s =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    losses s 1 |> ignore
    s.Save path
    let before = File.ReadAllBytes path

    let failing () =
        AtomicFile.write path (fun stream ->
            stream.Write(Array.zeroCreate<byte> 1000, 0, 1000)
            raise (IOException "disk full"))

    Assert.Throws<IOException>(failing) |> ignore
    Assert.Equal<byte[]>(before, File.ReadAllBytes path)
    Assert.Equal<string[]>([| path |], Directory.GetFiles dir.Path)

    match Checkpoint.load path with
    | Ok loaded ->
        Assert.Equal(1, loaded.Header.Step)

        for KeyValue(_, t) in loaded.Tensors do
            t.Dispose()
    | Error e -> failwith e

[<Fact>]
let ``a truncated or altered checkpoint is reported as damaged`` () =
    init.Force()
    use dir = new TempDir("training")
    let path = dir.File "run.ckpt"

    use s =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    s.Save path
    let bytes = File.ReadAllBytes path
    File.WriteAllBytes(dir.File "cut.ckpt", bytes.[.. bytes.Length / 2])
    bytes.[bytes.Length / 2] <- bytes.[bytes.Length / 2] ^^^ 1uy
    File.WriteAllBytes(dir.File "flipped.ckpt", bytes)
    File.WriteAllText(dir.File "text.ckpt", "hello")

    for name in [ "cut.ckpt"; "flipped.ckpt"; "text.ckpt" ] do
        match Checkpoint.load (dir.File name) with
        | Ok _ -> failwith $"{name} loaded"
        | Error e -> Assert.Contains("damaged", e)

[<Fact>]
let ``a missing checkpoint error says how to make one`` () =
    match Checkpoint.load "/nonexistent/run/checkpoint.ckpt" with
    | Error e -> Assert.Contains("train a model first", e)
    | Ok _ -> failwith "loaded a missing file"

[<Fact>]
let ``weights of a different model are refused, naming the weight`` () =
    init.Force()
    use dir = new TempDir("training")

    use s =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    s.Save(dir.File "run.ckpt")
    let loaded = Checkpoint.load (dir.File "run.ckpt") |> Result.defaultWith failwith
    use other = new LongNetModel({ s.Config.Model with EmbedDim = 32 })

    match Checkpoint.loadWeights other loaded.Tensors with
    | Error e -> Assert.Contains("embed_tokens.weight", e)
    | Ok() -> failwith "mismatched weights accepted"

[<Fact>]
let ``refused weights leave every parameter as it was`` () =
    init.Force()
    use model = new LongNetModel((tinyRun Fp32).Model)
    use scope = torch.NewDisposeScope()

    let before =
        [
            for struct (name, p) in model.named_parameters () -> name, p.detach().clone()
        ]

    // every weight fits but the last one, which is missing
    let tensors =
        before
        |> List.take (before.Length - 1)
        |> List.map (fun (name, t) -> $"model.{name}", t.add (1.0.ToScalar()))
        |> Map.ofList

    Assert.True((Checkpoint.loadWeights model tensors).IsError)

    for struct (name, p) in model.named_parameters () do
        Assert.True(p.allclose (before |> List.find (fun (n, _) -> n = name) |> snd, 0.0, 0.0), $"{name} changed")

[<Fact>]
let ``a bf16 run fine-tunes the weights it loaded, not its fresh initialisation`` () =
    init.Force()

    use s =
        TrainSession.Create(tinyRun Bf16, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    // fp32 weights a quarter away from the fresh ones (as a checkpoint of another run would be)
    let loaded =
        [
            for struct (name, p) in s.Model.named_parameters () ->
                use _ = torch.NewDisposeScope()

                $"model.{name}",
                p.detach().to_type(torch.ScalarType.Float32).add((0.25).ToScalar()).DetachFromDisposeScope()
        ]
        |> Map.ofList

    try
        s.LoadWeights loaded |> Result.defaultWith failwith
        s.TrainStep tokens |> Result.defaultWith failwith |> ignore

        // one step of lr 3e-3 moves a weight by about 3e-3; the fresh initialisation is 0.25 away
        for struct (name, p) in s.Model.named_parameters () do
            use _ = torch.NewDisposeScope()

            let d =
                (p.to_type (torch.ScalarType.Float32) - loaded.[$"model.{name}"]).abs().max().item<float32>()

            Assert.True(d < 0.05f, $"{name} is {d} from the loaded weights after one step")

        Assert.True((s.LoadWeights loaded).IsError, "weights loaded after the first step")
    finally
        for KeyValue(_, t) in loaded do
            t.Dispose()

[<Fact>]
let ``resuming with a different configuration lists the differing fields`` () =
    let stored = tinyRun Fp32

    let requested =
        { stored with
            Model = { stored.Model with Heads = 4 }
            Train =
                { stored.Train with
                    LearningRate = 0.5
                    Steps = 99
                }
        }

    let diffs = RunConfig.resumeDifferences requested stored.Model stored.Train
    Assert.Equal(2, diffs.Length)
    Assert.Contains(diffs, fun d -> d.StartsWith "model.heads")
    Assert.Contains(diffs, fun d -> d.StartsWith "train.learningRate")

    Assert.Empty(
        RunConfig.resumeDifferences
            { stored with
                Train = { stored.Train with Steps = 99 }
            }
            stored.Model
            stored.Train
    )

[<Fact>]
let ``a NaN loss stops training with an error that says what to do`` () =
    init.Force()

    use s =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    do
        use _ = torch.no_grad ()

        for p in s.Model.parameters () do
            p.fill_ (nan) |> ignore

    match s.TrainStep tokens with
    | Error e ->
        Assert.Contains("NaN", e)
        Assert.Contains("learning rate", e)
        Assert.Equal(0, s.Step)
    | Ok _ -> failwith "a NaN loss was accepted"

[<Fact>]
let ``training an encoder is refused, naming the field`` () =
    init.Force()

    let config =
        { tinyRun Fp32 with
            Model =
                { (tinyRun Fp32).Model with
                    Architecture = Encoder
                }
        }

    match TrainSession.Create(config, Tokenizer.byteLevel ()) with
    | Error e -> Assert.Contains("model.architecture", e)
    | Ok s ->
        (s :> IDisposable).Dispose()
        failwith "an encoder was trained on next-token prediction"

[<Fact>]
let ``too little training text is refused before any step`` () =
    init.Force()

    use s =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    match s.TrainStep tokens.[..10] with
    | Error e -> Assert.Contains("`seqLen`", e)
    | Ok _ -> failwith "trained on 11 tokens with sequences of 24"

[<Fact>]
let ``AdamW matches libtorch's AdamW`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    torch.manual_seed 5L |> ignore
    let start = torch.randn (4L, 3L, dtype = torch.float64)
    let ours = torch.nn.Parameter(start.clone ())
    let theirs = torch.nn.Parameter(start.clone ())

    let settings =
        {
            Beta1 = 0.9
            Beta2 = 0.95
            Epsilon = 1e-8
            WeightDecay = 0.1
        }

    use mine = new AdamW([ "w", ours ], settings)

    let reference = torch.optim.AdamW([ theirs ], 0.01, 0.9, 0.95, 1e-8, 0.1)

    for step in 1..5 do
        let target = torch.randn (4L, 3L, dtype = torch.float64)
        mine.ZeroGrad()
        reference.zero_grad ()
        (ours - target).square().sum().backward()
        (theirs - target).square().sum().backward()
        mine.Step 0.01
        reference.step () |> ignore
        let d = (ours - theirs).abs().max().item<float>()
        Assert.True(d < 1e-12, $"step {step}: {d}")

[<Fact>]
let ``gradient clipping scales the global norm down to the limit`` () =
    init.Force()
    use scope = torch.NewDisposeScope()
    let p = torch.nn.Parameter(torch.zeros (3L, dtype = torch.float64))
    use optimizer = new AdamW([ "p", p ], TrainConfig.adamW TrainConfig.defaults)
    (p * torch.tensor ([| 3.0; 4.0; 0.0 |], dtype = torch.float64)).sum().backward()
    Assert.Equal(5.0, optimizer.ClipGradients 1.0, 12)
    Assert.Equal(1.0, p.grad.norm().item<float>(), 5)

[<Fact>]
let ``the schedule warms up linearly and decays along a cosine to the floor`` () =
    let s =
        {
            Peak = 1.0
            FloorRatio = 0.1
            WarmupSteps = 10
            TotalSteps = 110
        }

    Assert.Equal(0.1, Schedule.learningRate s 1, 12)
    Assert.Equal(1.0, Schedule.learningRate s 10, 12)
    Assert.Equal(0.55, Schedule.learningRate s 60, 12)
    Assert.Equal(0.1, Schedule.learningRate s 110, 12)
    Assert.Equal(0.1, Schedule.learningRate s 500, 12)

[<Fact>]
let ``greedy sampling is the argmax`` () =
    let logits = [| 0.1; 2.5; -1.0; 2.4 |]
    Assert.Equal(1, Sampling.next Sampling.greedy (Rng.Create 1L) logits)

[<Fact>]
let ``top-k keeps exactly the k largest logits`` () =
    let filtered = Sampling.topK 2 [| 0.1; 2.5; -1.0; 2.4; 0.3 |]

    let kept =
        filtered
        |> Array.indexed
        |> Array.filter (snd >> Double.IsFinite)
        |> Array.map fst

    Assert.Equal<int[]>([| 1; 3 |], kept)

[<Fact>]
let ``top-p keeps the smallest set of likely tokens reaching p`` () =
    // probabilities 0.5, 0.3, 0.15, 0.05
    let logits = [| 0.5; 0.3; 0.15; 0.05 |] |> Array.map log

    let kept p =
        Sampling.topP p logits |> Array.filter Double.IsFinite |> Array.length

    Assert.Equal(1, kept 0.4)
    Assert.Equal(2, kept 0.7)
    Assert.Equal(3, kept 0.9)
    Assert.Equal(4, kept 1.0)

[<Fact>]
let ``sampling draws tokens in proportion to their probabilities and never outside top-k`` () =
    let rng = Rng.Create 11L

    let settings =
        {
            Greedy = false
            Temperature = 1.0
            TopK = 2
            TopP = 1.0
        }

    let logits = [| log 0.6; log 0.3; log 0.1 |]
    let draws = Array.init 20000 (fun _ -> Sampling.next settings rng logits)
    Assert.DoesNotContain(2, draws)
    let share = float (draws |> Array.filter ((=) 0) |> Array.length) / 20000.0
    Assert.InRange(share, 0.64, 0.69) // 0.6 / 0.9

[<Fact>]
let ``the random generator resumes from its state`` () =
    let a = Rng.Create 42L
    a.NextUInt64() |> ignore
    let b = Rng(a.State)
    Assert.Equal<uint64 list>([ for _ in 1..5 -> a.NextUInt64() ], [ for _ in 1..5 -> b.NextUInt64() ])

let private validText =
    let pieces =
        ([ 'a' .. 'z' ] @ [ ' '; '\n'; 'é'; 'ß'; 'ж'; '中'; '→'; '\t' ] |> List.map string)
        @ [ "😀"; "𝔸" ]

    Gen.elements pieces |> Gen.listOf |> Gen.map String.Concat

[<Property>]
let ``the byte-level tokenizer round-trips any text`` () =
    Prop.forAll (Arb.fromGen validText) (fun text ->
        let t = Tokenizer.byteLevel ()
        let ids = t.Encode text
        t.Decode ids = text && ids |> Array.forall (fun i -> i >= 0 && i < t.VocabSize))

[<Fact>]
let ``a BPE tokenizer from vocab.json and merges.txt encodes with merges and decodes back`` () =
    use dir = new TempDir("training")
    File.WriteAllText(dir.File "vocab.json", """{"a":0,"b":1,"c":2,"ab":3,"abc":4}""")
    File.WriteAllText(dir.File "merges.txt", "#version: 0.2\na b\nab c\n")

    match Tokenizer.bpeFromFiles (dir.File "vocab.json") (dir.File "merges.txt") with
    | Error e -> failwith e
    | Ok t ->
        Assert.Equal(5, t.VocabSize)
        Assert.Equal<int[]>([| 4; 3 |], t.Encode "abcab")
        Assert.Equal("abcab", t.Decode [| 4; 3 |])

        match Tokenizer.ofSpec t.Spec with
        | Ok again -> Assert.Equal<int[]>([| 4; 3 |], again.Encode "abcab")
        | Error e -> failwith e

[<Fact>]
let ``a missing BPE vocabulary is named in the error`` () =
    match Tokenizer.bpeFromFiles "/nonexistent/vocab.json" "/nonexistent/merges.txt" with
    | Error e -> Assert.Contains("vocab.json", e)
    | Ok _ -> failwith "loaded a missing vocabulary"

[<Fact>]
let ``an empty or missing corpus is an error naming it`` () =
    use dir = new TempDir("training")
    File.WriteAllText(dir.File "empty.txt", "")
    let t = Tokenizer.byteLevel ()

    match Corpus.load t (dir.File "empty.txt") with
    | Error e -> Assert.Contains("empty", e)
    | Ok _ -> failwith "an empty corpus was accepted"

    match Corpus.load t (dir.File "missing.txt") with
    | Error e -> Assert.Contains("does not exist", e)
    | Ok _ -> failwith "a missing corpus was accepted"

    Directory.CreateDirectory(dir.File "folder") |> ignore

    match Corpus.load t (dir.File "folder") with
    | Error e -> Assert.Contains("empty", e)
    | Ok _ -> failwith "an empty folder was accepted"

[<Fact>]
let ``the corpus holds out every 20th document, or the tail of a short text`` () =
    let t = Tokenizer.byteLevel ()
    let documents = [ for i in 0..39 -> $"document {i}" ]
    let c = Corpus.build t "test" documents |> Result.defaultWith failwith
    let held = t.Decode c.Validation
    Assert.Contains("document 19", held)
    Assert.Contains("document 39", held)
    Assert.DoesNotContain("document 18", held)

    let single =
        Corpus.build t "test" [ String.replicate 100 "x" ]
        |> Result.defaultWith failwith
    // 100 bytes + <eos> = 101 tokens: the last ceil(10.1) = 11 are held out
    Assert.Equal(11, single.Validation.Length)
    Assert.Equal(90, single.Train.Length)

[<Fact>]
let ``XML documentation becomes plain text members`` () =
    use dir = new TempDir("training")

    File.WriteAllText(
        dir.File "doc.xml",
        """<?xml version="1.0"?><doc><members>
<member name="M:System.Text.StringBuilder.Append(System.Char)">
<summary>Appends a <see cref="T:System.Char" /> to this <see langword="null" /> instance.</summary>
<param name="value">The character.</param><returns>A reference to this instance.</returns></member>
<member name="T:System.Empty"></member></members></doc>"""
    )

    match Corpus.xmlDocumentation (dir.File "doc.xml") with
    | [ single ] ->
        Assert.StartsWith("StringBuilder.Append(Char)\n", single)
        Assert.Contains("Appends a Char to this null instance.", single)
        Assert.Contains("value: The character.", single)
        Assert.Contains("Returns: A reference to this instance.", single)
    | other -> failwith $"expected one member, got {other}"

[<Fact>]
let ``the default corpus comes from the SDK's reference documentation when present`` () =
    let documents, description = Corpus.defaultDocuments 200_000L
    Assert.NotEmpty documents

    if not (List.isEmpty (Corpus.referenceDocFolders ())) then
        Assert.Contains("XML documentation", description)

[<Fact>]
let ``evaluation needs length + 1 tokens and reports the perplexity`` () =
    init.Force()

    use s =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    match Evaluate.perplexity s.Model tokens.[..20] 24 1000 with
    | Error e -> Assert.Contains("at least 25", e)
    | Ok _ -> failwith "evaluated 21 tokens at length 24"

    match Evaluate.perplexities s.Model tokens [ 24; 96 ] 200 with
    | Ok [ a; b ] ->
        Assert.Equal(8, a.Windows)
        Assert.Equal(2, b.Windows)
        Assert.Equal(Math.Exp a.MeanNll, a.Perplexity, 9)
    | other -> failwith $"{other}"

[<Fact>]
let ``generation refuses an empty prompt and one past maxPositions`` () =
    init.Force()

    use model =
        new LongNetModel(
            { (tinyRun Fp32).Model with
                MaxPositions = 50
            }
        )

    let settings =
        {
            MaxNewTokens = 10
            Sampling = Sampling.greedy
            StopAtEndOfText = false
        }

    match Generate.tokens model [||] settings None (Rng.Create 1L) ignore with
    | Error e -> Assert.Contains("empty", e)
    | Ok _ -> failwith "generated from an empty prompt"

    match Generate.tokens model (Array.create 45 65) settings None (Rng.Create 1L) ignore with
    | Error e -> Assert.Contains("shorten the prompt", e)
    | Ok _ -> failwith "generated past maxPositions"

[<Fact>]
let ``greedy generation is reproducible and matches stepping the full forward`` () =
    init.Force()
    torch.manual_seed 9L |> ignore
    use model = new LongNetModel((tinyRun Fp32).Model)

    let settings =
        {
            MaxNewTokens = 40
            Sampling = Sampling.greedy
            StopAtEndOfText = false
        }

    let prompt = tokens.[..4]

    let a =
        Generate.tokens model prompt settings None (Rng.Create 1L) ignore
        |> Result.defaultWith failwith

    let b =
        Generate.tokens model prompt settings None (Rng.Create 2L) ignore
        |> Result.defaultWith failwith

    Assert.Equal<int[]>(a, b)

    // the last generated token is the argmax of the full forward over prompt + the others
    use _ = torch.no_grad ()
    model.eval ()
    let sequence = Array.append prompt a.[.. a.Length - 2] |> Array.map int64
    let logits = model.forward (torch.tensor(sequence).view(1L, -1L))

    let last =
        logits.select(0L, 0L).select(0L, int64 sequence.Length - 1L).argmax().item<int64>()

    Assert.Equal(int64 a.[a.Length - 1], last)
    Assert.True(Generate.cacheDeviation model (Array.append prompt a) prompt.Length < 1e-4)

[<Fact>]
let ``run configuration files fill missing fields from the preset and reject unknown ones`` () =
    match RunConfig.ofJsonText "config" "." """{ "preset": "tiny", "train": { "steps": 7 } }""" with
    | Ok c ->
        Assert.Equal(7, c.Train.Steps)
        Assert.Equal(RunConfig.tiny.Model, c.Model)
    | Error e -> failwith e

    match RunConfig.ofJsonText "config" "." """{ "preset": "longctx", "train": { "seqLen": 1024 } }""" with
    | Ok c -> Assert.Equal(RunConfig.longContext.Tokenizer, c.Tokenizer)
    | Error e -> failwith e

    // a non-default copy-problem count is read, and survives a write and a read
    match RunConfig.ofJsonText "config" "." """{ "preset": "tiny", "train": { "copyProblemSteps": 7 } }""" with
    | Ok c ->
        Assert.Equal(7, c.Train.CopyProblemSteps)

        match RunConfig.ofJsonText "config" "." ((RunConfig.toJson c).ToJsonString()) with
        | Ok again -> Assert.Equal(c.Train, again.Train)
        | Error e -> failwith e
    | Error e -> failwith e

    match RunConfig.ofJsonText "config" "." """{ "train": { "stepz": 7 } }""" with
    | Error e -> Assert.Contains("train.stepz", e)
    | Ok _ -> failwith "unknown field accepted"

    match RunConfig.ofJsonText "config" "." """{ "train": { "learningRate": 2 } }""" with
    | Error e -> Assert.Contains("train.learningRate", e)
    | Ok _ -> failwith "learning rate 2 accepted"

    match RunConfig.ofJsonText "config" "." "{ not json" with
    | Error e -> Assert.Contains("not valid JSON", e)
    | Ok _ -> failwith "bad JSON accepted"

[<Fact>]
let ``a detached model outlives its session, keeps the trained weights and the session stops training`` () =
    init.Force()

    let session =
        TrainSession.Create(tinyRun Fp32, Tokenizer.byteLevel ())
        |> Result.defaultWith failwith

    losses session 2 |> ignore

    let weights =
        Checkpoint.weights session.Model |> List.map (fun (n, t) -> n, t.clone ())

    let model = session.DetachModel()
    (session :> IDisposable).Dispose()

    use model = model
    Assert.False(model.training)

    for name, expected in weights do
        let actual = Checkpoint.weights model |> List.find (fun (n, _) -> n = name) |> snd
        Assert.True(actual.eq(expected).all().item<bool>(), $"weight {name} changed by detaching")
        expected.Dispose()

    use logits = model.forward (torch.tensor([| 1L; 2L; 3L |]).view(1L, -1L))
    Assert.Equal<int64[]>([| 1L; 3L; 259L |], logits.shape)

    match session.TrainStep tokens with
    | Error e -> Assert.Contains("detached", e)
    | Ok _ -> failwith "a session trained after its model was detached"

    Assert.Throws<InvalidOperationException>(fun () -> session.DetachModel() |> ignore)
    |> ignore

[<Fact>]
let ``the passkey grid scores each trial like a hand-made prompt and generation with the same keys`` () =
    init.Force()
    torch.manual_seed 3L |> ignore
    let bytes = Tokenizer.byteLevel ()
    use model = new LongNetModel((tinyRun Fp32).Model)
    let lengths, depths, trials, seed = [ 100; 130 ], [ 0.0; 1.0 ], 2, 17
    let seen = ResizeArray<PasskeyCell>()

    let cells =
        PasskeyEvaluation.evaluate model bytes lengths depths trials seed seen.Add
        |> Result.defaultWith failwith

    Assert.Equal<PasskeyCell list>(cells, List.ofSeq seen)

    Assert.Equal<(int * float) list>(
        [ 100, 0.0; 100, 1.0; 130, 0.0; 130, 1.0 ],
        cells |> List.map (fun c -> c.Length, c.Depth)
    )

    let rng = Random(seed)

    let settings =
        {
            MaxNewTokens = PasskeyEvaluation.generatedTokens
            Sampling = Sampling.greedy
            StopAtEndOfText = true
        }

    for c in cells do
        let correct =
            List.init trials (fun _ ->
                let key = Passkey.randomPasskey rng
                let prompt = Passkey.build bytes c.Length c.Depth key

                Generate.tokens model prompt.Tokens settings bytes.EndOfText (Rng.Create 0L) ignore
                |> Result.defaultWith failwith
                |> bytes.Decode
                |> Passkey.score key)
            |> List.filter id
            |> List.length

        Assert.Equal(correct, c.Correct)
        Assert.Equal(trials, c.Trials)

    let table = PasskeyEvaluation.table lengths depths cells
    Assert.Equal(3, table.Split('\n').Length)
    Assert.StartsWith("depth \\ length", table)

    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () ->
            PasskeyEvaluation.evaluate model bytes lengths depths 0 seed ignore |> ignore)

    Assert.Equal("trials", e.ParamName)

    let e =
        Assert.Throws<ArgumentOutOfRangeException>(fun () ->
            PasskeyEvaluation.evaluate model bytes [ 5 ] depths 1 seed ignore |> ignore)

    Assert.Equal("targetLength", e.ParamName)

[<Fact>]
let ``the one-forward passkey verdict agrees with what greedy decoding would write`` () =
    let bytes = Tokenizer.byteLevel ()
    let answer = bytes.Encode " 12345"

    let verdict (choices: string) (last: int) =
        PasskeyEvaluation.verdictOfChoices bytes answer (Array.append (bytes.Encode choices) [| last |]) "12345"

    let eot = bytes.EndOfText.Value
    // every choice follows the answer, then the run of digits ends (a full stop, end of text) or goes on
    Assert.Equal(Some true, verdict " 12345" (int '.'))
    Assert.Equal(Some true, verdict " 12345" eot)
    Assert.Equal(Some false, verdict " 12345" (int '6'))
    // the first choice leaves the answer with a digit that cannot start the key, or with more whitespace
    Assert.Equal(Some false, PasskeyEvaluation.verdictOfChoices bytes answer [| int '7'; 0; 0; 0; 0; 0; 0 |] "12345")
    Assert.Equal(None, PasskeyEvaluation.verdictOfChoices bytes answer [| int ' '; int ' '; 0; 0; 0; 0; 0 |] "12345")
    // a wrong digit, or a run that ends early, after a matching prefix
    Assert.Equal(Some false, PasskeyEvaluation.verdictOfChoices bytes answer [| 32; 49; 50; 57; 0; 0; 0 |] "12345")
    Assert.Equal(Some false, PasskeyEvaluation.verdictOfChoices bytes answer [| 32; 49; 50; int '.'; 0; 0; 0 |] "12345")
    Assert.Equal(Some false, PasskeyEvaluation.verdictOfChoices bytes answer [| 32; 49; eot; 0; 0; 0; 0 |] "12345")

    Assert.Throws<ArgumentException>(fun () ->
        PasskeyEvaluation.verdictOfChoices bytes answer [| 32 |] "12345" |> ignore)
    |> ignore
