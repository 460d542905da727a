/// The model commands end to end: train → resume → eval → generate on a tiny run, and bad inputs —
/// a bad command line exits 2, a missing corpus or checkpoint or a mismatched config exits 1 with one
/// line on stderr naming the cause, and a failed run overwrites nothing.
[<Xunit.Collection("serial")>]
module LongNet.Tests.ModelCliTests

open System
open System.IO
open Xunit
open LongNet.Cli
open LongNet.Tests.TestSupport

[<Fact>]
let ``train, resume, eval and generate work end to end on a tiny run`` () =
    use dir = new TempDir("cli")

    let corpus =
        writeCorpus dir "The sky is blue. The grass is green. The sun is yellow."

    let out = Path.Combine(dir.Path, "run")

    let code, stdout, stderr = capture Train.run (tinyTrainArgs corpus out 4)

    Assert.True((code = 0), stderr)
    Assert.Contains("done at step 4", stdout)
    Assert.True(File.Exists(Path.Combine(out, "checkpoint.ckpt")))
    Assert.Equal(5, File.ReadAllLines(Path.Combine(out, "train_log.csv")).Length)

    let code, stdout, stderr =
        capture Train.run [ "--corpus"; corpus; "--out"; out; "--resume"; "--steps"; "6" ]

    Assert.True((code = 0), stderr)
    Assert.Contains("resuming", stdout)
    Assert.Equal(7, File.ReadAllLines(Path.Combine(out, "train_log.csv")).Length)

    let code, _, stderr =
        capture Train.run [ "--corpus"; corpus; "--out"; out; "--resume"; "--steps"; "6" ]

    Assert.Equal(1, code)
    Assert.Contains("raise --steps to train further", stderr)

    let json = Path.Combine(dir.Path, "ppl.json")

    let code, stdout, stderr =
        capture
            Evaluate.run
            [
                "--checkpoint"
                Path.Combine(out, "checkpoint.ckpt")
                "--corpus"
                corpus
                "--lengths"
                "32,64"
                "--json"
                json
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("perplexity", stdout)
    Assert.True(File.Exists json)
    Assert.True(File.Exists(Path.ChangeExtension(json, ".png")))

    let code, stdout, stderr =
        capture
            Evaluate.run
            [
                "--checkpoint"
                Path.Combine(out, "checkpoint.ckpt")
                "--corpus"
                corpus
                "--context"
                "16,64"
                "--targets"
                "8"
                "--windows"
                "2"
                "--by-position"
                "--window"
                "64"
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("context", stdout)
    Assert.Contains("positions", stdout)

    let code, stdout, stderr =
        capture
            Generate.run
            [
                "--checkpoint"
                Path.Combine(out, "checkpoint.ckpt")
                "--prompt"
                "The sky"
                "--max-new-tokens"
                "12"
                "--greedy"
            ]

    Assert.True((code = 0), stderr)
    Assert.True(Text.Encoding.UTF8.GetByteCount stdout <= 12, $"printed more than the continuation: '{stdout}'")

[<Fact>]
let ``library parameter names are shown as the command's options`` () =
    Assert.Equal("--max-new-tokens must be ≥ 1", Errors.asOptions "`maxNewTokens` must be ≥ 1")
    Assert.Equal("raise --steps or --top-k", Errors.asOptions "raise `steps` or `topK`")
    Assert.Equal("no marks here", Errors.asOptions "no marks here")

[<Fact>]
let ``a bad command line exits 2 with one line naming the option`` () =
    let code, _, stderr =
        capture Train.run [ "--corpus"; "x"; "--preset"; "tiny"; "--out"; "y"; "--stepz"; "3" ]

    Assert.Equal(2, code)
    assertOneErrorLine stderr
    Assert.Contains("--stepz", stderr)

    let code, _, stderr =
        capture
            Generate.run
            [
                "--checkpoint"
                "c"
                "--prompt"
                "p"
                "--max-new-tokens"
                "5"
                "--greedy"
                "--top-k"
                "3"
            ]

    Assert.Equal(2, code)
    Assert.Contains("--greedy", stderr)

    let code, _, stderr =
        capture Evaluate.run [ "--checkpoint"; "c"; "--corpus"; "x"; "--lengths"; "12,abc" ]

    Assert.Equal(2, code)
    Assert.Contains("--lengths", stderr)

[<Fact>]
let ``a missing corpus or checkpoint exits 1 with one line saying what to do`` () =
    use dir = new TempDir("cli")

    let code, _, stderr =
        capture
            Train.run
            [
                "--corpus"
                Path.Combine(dir.Path, "none.txt")
                "--preset"
                "tiny"
                "--out"
                Path.Combine(dir.Path, "run")
            ]

    Assert.Equal(1, code)
    assertOneErrorLine stderr
    Assert.Contains("does not exist", stderr)
    Assert.False(Directory.Exists(Path.Combine(dir.Path, "run")), "a failed run created its folder")

    let code, _, stderr =
        capture
            Generate.run
            [
                "--checkpoint"
                Path.Combine(dir.Path, "none.ckpt")
                "--prompt"
                "p"
                "--max-new-tokens"
                "5"
            ]

    Assert.Equal(1, code)
    assertOneErrorLine stderr
    Assert.Contains("train a model first", stderr)

    let empty = Path.Combine(dir.Path, "empty.txt")
    File.WriteAllText(empty, "")

    let code, _, stderr =
        capture Train.run [ "--corpus"; empty; "--preset"; "tiny"; "--out"; Path.Combine(dir.Path, "r") ]

    Assert.Equal(1, code)
    assertOneErrorLine stderr
    Assert.Contains("empty", stderr)

[<Fact>]
let ``an existing run is never overwritten and a mismatched resume is refused`` () =
    use dir = new TempDir("cli")
    let corpus = writeCorpus dir "The sky is blue. The grass is green."
    let out = Path.Combine(dir.Path, "run")

    let code, _, stderr = capture Train.run (tinyTrainArgs corpus out 2)

    Assert.True((code = 0), stderr)
    let checkpoint = Path.Combine(out, "checkpoint.ckpt")
    let before = File.ReadAllBytes checkpoint

    let code, _, stderr =
        capture Train.run [ "--corpus"; corpus; "--preset"; "tiny"; "--out"; out; "--steps"; "2" ]

    Assert.Equal(1, code)
    Assert.Contains("--resume", stderr)

    let code, _, stderr =
        capture
            Train.run
            [
                "--corpus"
                corpus
                "--preset"
                "demo"
                "--out"
                out
                "--resume"
                "--steps"
                "4"
            ]

    Assert.Equal(1, code)
    assertOneErrorLine stderr
    Assert.Contains("model.embedDim", stderr)
    Assert.Equal<byte[]>(before, File.ReadAllBytes checkpoint)


[<Fact>]
let ``a prompt longer than the model allows exits 1 saying what to shorten`` () =
    use dir = new TempDir("cli")
    let corpus = writeCorpus dir "The sky is blue. The grass is green."
    let config = Path.Combine(dir.Path, "config.json")
    File.WriteAllText(config, """{ "preset": "tiny", "model": { "maxPositions": 100 }, "train": { "seqLen": 32 } }""")
    let out = Path.Combine(dir.Path, "run")

    let code, _, stderr =
        capture Train.run [ "--corpus"; corpus; "--config"; config; "--out"; out; "--steps"; "1" ]

    Assert.True((code = 0), stderr)

    let code, _, stderr =
        capture
            Generate.run
            [
                "--checkpoint"
                Path.Combine(out, "checkpoint.ckpt")
                "--prompt"
                String('x', 95)
                "--max-new-tokens"
                "10"
            ]

    Assert.Equal(1, code)
    assertOneErrorLine stderr
    Assert.Contains("shorten the prompt", stderr)

[<Fact>]
let ``demo --make-base writes a base checkpoint that demo --base trains on from, and the report says so`` () =
    use dir = new TempDir("cli")
    let random = Random 7

    let words =
        [|
            "Gets"
            "or"
            "sets"
            "the"
            "value"
            "of"
            "this"
            "instance"
            "stream"
            "reads"
            "bytes"
            "."
        |]

    // about 150 K tokens: a tenth held out is more than the 8,193 tokens a training-length window needs
    let text =
        String.Join(" ", Array.init 150_000 (fun _ -> words.[random.Next words.Length]))

    let corpus = Path.Combine(dir.Path, "corpus.txt")
    File.WriteAllText(corpus, text)
    let basePath = Path.Combine(dir.Path, "base.ckpt")

    let code, _, stderr =
        capture
            ModelDemo.run
            [
                "--make-base"
                basePath
                "--steps"
                "2"
                "--corpus"
                corpus
                "--run-dir"
                Path.Combine(dir.Path, "base-run")
            ]

    Assert.True((code = 0), stderr)
    Assert.True(File.Exists basePath)
    let out = Path.Combine(dir.Path, "demo")

    let code, _, stderr =
        capture
            ModelDemo.run
            [
                "--base"
                basePath
                "--corpus"
                corpus
                "--out"
                out
                "--minutes"
                "0.05"
                "--long"
                "0"
                "--windows"
                "1"
            ]

    Assert.True((code = 0), stderr)
    let report = File.ReadAllText(Path.Combine(out, "report.json"))
    Assert.Contains("base.ckpt", report) // the note naming where the model started
    Assert.Contains("\"context\"", report)
    Assert.Contains("\"position_loss\"", report)
