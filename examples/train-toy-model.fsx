// Training a toy LongNet language model in F# Interactive: the "tiny" preset on a repetitive text,
// 150 AdamW steps, the validation loss before and after, and a greedy continuation.
// Run after one build:  dotnet build -c Release src/LongNet && dotnet fsi examples/train-toy-model.fsx
#r "nuget: TorchSharp-cpu, 0.107.0"
#r "nuget: Microsoft.ML.Tokenizers, 2.0.1"
#r "../src/LongNet/bin/Release/net10.0/LongNet.dll"

open LongNet
open LongNet.Text
open LongNet.Training

Native.ensureLoaded () |> ignore

// A text with an obvious pattern, so a few steps of a tiny model already learn something.
let text = String.replicate 200 "the quick brown fox jumps over the lazy dog. "

let tokenizer = Tokenizer.byteLevel ()
let ids = tokenizer.Encode text
let split = ids.Length * 9 / 10
let train, validation = ids.[.. split - 1], ids.[split..]

let config =
    let tiny = RunConfig.preset "tiny" |> Result.defaultWith failwith

    { tiny with
        Train =
            { tiny.Train with
                Steps = 150
                LearningRate = 3e-3
                WarmupSteps = 4
                Seed = 7L
            }
    }

let session = TrainSession.Create(config, tokenizer) |> Result.defaultWith failwith

let validationLoss () =
    session.ValidationLoss validation |> Result.defaultWith failwith

let before = validationLoss ()

while not session.Finished do
    let report = session.TrainStep train |> Result.defaultWith failwith

    if report.Step % 30 = 0 then
        printfn
            "step %3d  loss %.3f  lr %.2e  %.0f tokens/s"
            report.Step
            report.Loss
            report.LearningRate
            (float report.Tokens / report.StepSeconds)

let after = validationLoss ()
printfn "validation loss %.3f → %.3f (perplexity %.2f → %.2f)" before after (exp before) (exp after)

let prompt = tokenizer.Encode "the quick brown "

let settings =
    {
        MaxNewTokens = 24
        Sampling = Sampling.greedy
        StopAtEndOfText = true
    }

let continuation =
    Generate.tokens session.Model prompt settings tokenizer.EndOfText (Rng.Create 1L) ignore
    |> Result.defaultWith failwith

printfn "greedy continuation of %A: %A" "the quick brown " (tokenizer.Decode continuation)

if not (after < before - 0.5) then
    failwith $"training did not lower the validation loss enough: {before:F3} → {after:F3}"

(session :> System.IDisposable).Dispose()
