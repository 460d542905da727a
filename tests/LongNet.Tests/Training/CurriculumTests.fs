/// The short-to-long curriculum: the length doubles in equal stages, every step trains on the same
/// number of tokens, a resumed curriculum run equals an uninterrupted one, and bad settings are refused
/// naming the field. Also the built-in long-context corpus: whole files, every third held out.
[<Xunit.Collection("serial")>]
module LongNet.Tests.CurriculumTests

open System
open Xunit
open TorchSharp
open LongNet
open LongNet.Text
open LongNet.Training
open LongNet.Tests.TestSupport

let private init =
    lazy
        (Native.ensureLoaded () |> ignore
         torch.set_num_threads 1)

let private curriculum =
    { TrainConfig.defaults with
        SeqLen = 4096
        BatchSize = 2
        CurriculumStartLength = 512
        CurriculumSteps = 300
    }

[<Fact>]
let ``the sequence length doubles in equal stages, then stays at seqLen`` () =
    let at = TrainConfig.sequenceLengthAt curriculum

    Assert.Equal<int list>(
        [ 512; 512; 1024; 1024; 2048; 2048; 4096; 4096 ],
        [ at 1; at 100; at 101; at 200; at 201; at 300; at 301; at 5000 ]
    )

    Assert.Equal(
        4096,
        TrainConfig.sequenceLengthAt
            { curriculum with
                CurriculumStartLength = 0
            }
            1
    )

[<Fact>]
let ``every step of a curriculum trains on batchSize × seqLen tokens`` () =
    for step in [ 1; 150; 250; 301 ] do
        let length = TrainConfig.sequenceLengthAt curriculum step
        Assert.Equal(2 * 4096, length * TrainConfig.batchSizeAt curriculum step)

[<Fact>]
let ``curriculum settings out of range are refused naming the field`` () =
    let refused (c: TrainConfig) (field: string) =
        match TrainConfig.validate c with
        | Error e -> Assert.Equal(field, e.Parameter)
        | Ok _ -> failwith $"accepted {c.CurriculumStartLength}/{c.CurriculumSteps}"

    refused
        { curriculum with
            CurriculumStartLength = 3000
        }
        "curriculumStartLength"

    refused
        { curriculum with
            CurriculumStartLength = 4096
        }
        "curriculumStartLength"

    refused
        { curriculum with
            CurriculumStartLength = -1
        }
        "curriculumStartLength"

    refused { curriculum with CurriculumSteps = 0 } "curriculumSteps"

    refused
        { curriculum with
            Task = PasskeySamples
        }
        "curriculumStartLength"

[<Fact>]
let ``a curriculum run trains short sequences first and resumes exactly`` () =
    init.Force()
    use dir = new TempDir("curriculum")

    let tokens =
        Text.Encoding.UTF8.GetBytes(String.replicate 60 "Stone bridges cross the river. ")
        |> Array.map int

    let config =
        { RunConfig.tiny with
            Model =
                { RunConfig.tiny.Model with
                    Groups = Groups.ofPairsOrRaise [ 8, 1; 32, 2 ]
                }
            Train =
                { RunConfig.tiny.Train with
                    Steps = 6
                    BatchSize = 1
                    SeqLen = 32
                    WarmupSteps = 2
                    CurriculumStartLength = 8
                    CurriculumSteps = 4
                }
        }

    let tokenizer = Tokenizer.byteLevel ()

    let run (steps: int) (session: TrainSession) =
        [
            for _ in 1..steps ->
                match session.TrainStep tokens with
                | Ok r -> r
                | Error e -> failwith e
        ]

    let whole =
        use s = TrainSession.Create(config, tokenizer) |> Result.defaultWith failwith
        run 6 s

    Assert.All(whole, (fun r -> Assert.Equal(32L, r.Tokens)))

    // the same run without the curriculum draws other (full-length) windows from step 1
    let flat =
        let plain =
            { config with
                Train =
                    { config.Train with
                        CurriculumStartLength = 0
                        CurriculumSteps = 0
                    }
            }

        use s = TrainSession.Create(plain, tokenizer) |> Result.defaultWith failwith
        run 1 s

    Assert.NotEqual(flat.Head.Loss, whole.Head.Loss)

    let first =
        use s = TrainSession.Create(config, tokenizer) |> Result.defaultWith failwith
        let r = run 3 s
        s.Save(dir.File "run.ckpt")
        r

    let loaded = Checkpoint.load (dir.File "run.ckpt") |> Result.defaultWith failwith
    use resumed = TrainSession.Resume(loaded, None) |> Result.defaultWith failwith

    for KeyValue(_, t) in loaded.Tensors do
        t.Dispose()

    let second = run 3 resumed
    Assert.Equal<float list>(whole |> List.map _.Loss, (first @ second) |> List.map _.Loss)

[<Fact>]
let ``the built-in long-context corpus holds out a third of its whole files, by file name`` () =
    match Corpus.readSource Corpus.referenceDocsName with
    | Error e when Corpus.referenceDocumentFiles () |> List.isEmpty ->
        Assert.Contains("no .NET reference documentation", e)
    | Error e -> failwith e
    | Ok source ->
        let names = Corpus.referenceDocumentFiles () |> List.map fst
        Assert.Equal(Some(names |> List.map Corpus.isHeldOutFile), source.HeldOut)

        let held =
            List.zip (Option.get source.HeldOut) source.Documents
            |> List.filter fst
            |> List.map snd

        // about a third, and the rule depends on the name alone
        Assert.InRange(float held.Length / float names.Length, 0.2, 0.45)
        Assert.Equal(Corpus.isHeldOutFile "System.Runtime.xml", Corpus.isHeldOutFile "System.Runtime.xml")

        Assert.Equal(source.Documents.Length - held.Length, source.TrainingDocuments.Length)

        // held-out documents never appear among the training ones
        let training = Set.ofList source.TrainingDocuments
        Assert.All(held, (fun d -> Assert.False(training.Contains d)))
