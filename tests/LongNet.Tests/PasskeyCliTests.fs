/// `longnet passkey` end to end on a tiny trained run: a table of lengths × depths, JSON and a heatmap;
/// bad depths exit 2 and a length shorter than the prompt frame exits 1 with one line naming it.
[<Xunit.Collection("serial")>]
module LongNet.Tests.PasskeyCliTests

open System
open System.IO
open System.Text.Json.Nodes
open Xunit
open LongNet.Cli

let private capture (run: string list -> int) (args: string list) =
    let out, err = new StringWriter(), new StringWriter()
    let oldOut, oldErr = Console.Out, Console.Error
    Console.SetOut out
    Console.SetError err

    try
        let code = run args
        code, out.ToString(), err.ToString()
    finally
        Console.SetOut oldOut
        Console.SetError oldErr

let private trainTiny () =
    let dir = Path.Combine(Path.GetTempPath(), $"longnet-passkey-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore
    let corpus = Path.Combine(dir, "corpus.txt")
    File.WriteAllText(corpus, String.replicate 30 "The sky is blue. The grass is green. The pass key is 12345.\n")
    let out = Path.Combine(dir, "run")

    let code, _, stderr =
        capture
            Train.run
            [
                "--corpus"
                corpus
                "--preset"
                "tiny"
                "--out"
                out
                "--steps"
                "2"
                "--seq-len"
                "32"
            ]

    Assert.True((code = 0), stderr)
    dir, Path.Combine(out, "checkpoint.ckpt")

[<Fact>]
let ``passkey prints a grid of accuracies and writes JSON and a heatmap`` () =
    let dir, checkpoint = trainTiny ()
    let json = Path.Combine(dir, "passkey.json")
    let png = Path.Combine(dir, "passkey.png")

    let code, stdout, stderr =
        capture
            Passkey.run
            [
                "--checkpoint"
                checkpoint
                "--lengths"
                "120,160"
                "--depths"
                "0,0.5,1"
                "--trials"
                "2"
                "--json"
                json
                "--heatmap"
                png
            ]

    Assert.True((code = 0), stderr)
    Assert.Contains("depth \\ length", stdout)
    Assert.Equal(4, stdout.Trim().Split('\n').Length)
    let cells = (JsonNode.Parse(File.ReadAllText json)["cells"]).AsArray()
    Assert.Equal(6, cells.Count)

    for c in cells do
        Assert.Equal(2, c["trials"].GetValue<int>())

    Assert.True(File.Exists png || stderr.Contains "could not draw", stderr)

[<Fact>]
let ``passkey exits 2 on a depth outside 0 to 1 and 1 on a length shorter than the prompt frame`` () =
    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; "c"; "--lengths"; "100"; "--depths"; "0,1.5" ]

    Assert.Equal(2, code)
    Assert.Contains("--depths", stderr)

    let _, checkpoint = trainTiny ()

    let code, _, stderr =
        capture Passkey.run [ "--checkpoint"; checkpoint; "--lengths"; "20"; "--trials"; "1" ]

    Assert.Equal(1, code)
    Assert.Equal(1, stderr.Trim().Split('\n').Length)
    Assert.Contains("targetLength", stderr)
